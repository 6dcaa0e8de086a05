#!/usr/bin/env python3
"""Load generator for `zamba2c serve` (issue 13's table): N concurrent streaming clients, each
sending completions one after another, and the throughput, time to first token and inter-token
latency percentiles (p50, p99) at every N.

    zamba2c serve plans/z27 --device cuda --max-batch 64 --port 8000 &
    python3 scripts/load_serve.py --url http://127.0.0.1:8000 --concurrency 1,16,64 \
        --prompt-len 512 --gen-len 128 --requests 2 --out load.json

Standard library only (runs on the GPU machine as it is). Every request is a streamed
/v1/completions of `--prompt-len` random token ids (seeded) with `max_tokens = --gen-len` and
`ignore_eos`, so each generates exactly that many tokens; usage comes from the stream's final
usage chunk. TTFT is from sending the request to the first text chunk; inter-token latency is
the gap between consecutive text chunks of one stream. Every socket has a timeout, and each
level stops after its requests (bounded).
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def one_request(url, model, prompt, gen_len, timeout):
    """Streams one completion; returns (ttft_s, [gaps_s], generated_tokens)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    body = {
        "prompt": prompt,
        "max_tokens": gen_len,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model:
        body["model"] = model
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    ttft, last, gaps, generated = None, None, [], 0
    for raw in resp:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(chunk["error"]["message"])
        if chunk.get("usage"):
            generated = chunk["usage"]["completion_tokens"]
        for c in chunk.get("choices", []):
            if c.get("text"):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - t0
                else:
                    gaps.append(now - last)
                last = now
    conn.close()
    return ttft, gaps, generated


def level(args, n, vocab):
    rng = random.Random(1234 + n)
    prompts = [
        [rng.randrange(3, vocab) for _ in range(args.prompt_len)] for _ in range(n * args.requests)
    ]
    ttfts, gaps, tokens, errors = [], [], [0], []
    lock = threading.Lock()

    def client(i):
        for r in range(args.requests):
            try:
                t, g, k = one_request(
                    args.url, args.model, prompts[i * args.requests + r], args.gen_len, args.timeout
                )
            except Exception as e:  # reported, never retried
                with lock:
                    errors.append(str(e))
                return
            with lock:
                if t is not None:
                    ttfts.append(t)
                gaps.extend(g)
                tokens[0] += k

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = lambda x: None if x is None else round(x * 1e3, 2)
    return {
        "concurrency": n,
        "requests": n * args.requests,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "generated_tokens": tokens[0],
        "wall_s": round(wall, 3),
        "generated_tokens_per_s": round(tokens[0] / wall, 1) if wall > 0 else None,
        "ttft_ms_p50": ms(percentile(ttfts, 50)),
        "ttft_ms_p99": ms(percentile(ttfts, 99)),
        "itl_ms_p50": ms(percentile(gaps, 50)),
        "itl_ms_p99": ms(percentile(gaps, 99)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default=None, help="model name to send (default: none)")
    ap.add_argument("--concurrency", default="1,16,64", help="comma-separated stream counts")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=128)
    ap.add_argument("--requests", type=int, default=2, help="requests per stream at each level")
    ap.add_argument("--vocab", type=int, default=32000, help="token ids are drawn below this")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per socket operation")
    ap.add_argument("--out", default=None, help="also write the JSON results here")
    args = ap.parse_args()
    host = urllib.parse.urlparse(args.url).hostname
    levels = [int(x) for x in args.concurrency.split(",") if x]
    results = []
    for n in levels:
        r = level(args, n, args.vocab)
        results.append(r)
        print(json.dumps(r), file=sys.stderr)
    print("| streams | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['concurrency']} | {r['generated_tokens_per_s']} | {r['ttft_ms_p50']} | "
            f"{r['ttft_ms_p99']} | {r['itl_ms_p50']} | {r['itl_ms_p99']} | {r['errors']} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"url_host": host, "prompt_len": args.prompt_len, "gen_len": args.gen_len,
                       "levels": results}, f, indent=1)
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
