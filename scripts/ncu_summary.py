#!/usr/bin/env python3
"""Summarises an Nsight Compute raw CSV of `zamba2c logits --tokens A,B --decode-from 1`: the
kernels after the prompt's (names with `_d<node>`) are one decode step. Prints launches, time
and DRAM bytes per kernel family and the step totals, then per kernel (one generated kernel
serves every launch of one shape) the average time and bandwidth of its launches.

    python3 scripts/ncu_summary.py ncu_decode.csv
"""
import csv
import re
import sys
from collections import defaultdict


def main(path):
    rows = list(csv.reader(open(path)))
    head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    cols = rows[head]
    ki, ti = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum")
    ri, wi = cols.index("dram__bytes_read.sum"), cols.index("dram__bytes_write.sum")
    data = []
    for r in rows[head + 1:]:
        if len(r) <= max(ki, ti, ri, wi):
            continue
        try:
            t, rd, wr = (float(r[i].replace(",", "")) for i in (ti, ri, wi))
        except ValueError:
            continue  # the units row
        data.append((r[ki], t, rd, wr))
    unit = rows[head + 1][ti] if len(rows) > head + 1 else "ns"
    scale = {"ns": 1e-6, "us": 1e-3, "usecond": 1e-3, "nsecond": 1e-6, "ms": 1.0, "msecond": 1.0}.get(unit, 1e-6)
    dec = [d for d in data if re.search(r"_d\d+", d[0])]
    fam = defaultdict(lambda: [0, 0.0, 0.0])
    for name, t, rd, wr in dec:
        f = re.sub(r"^z2c_", "", re.sub(r"_d\d+(_\d+)*$", "", name))
        fam[f][0] += 1
        fam[f][1] += t * scale
        fam[f][2] += rd + wr
    tot_t = sum(v[1] for v in fam.values())
    tot_b = sum(v[2] for v in fam.values())
    print(f"decode step: {len(dec)} kernels, {tot_t:.3f} ms kernel time, {tot_b/1e9:.3f} GB DRAM, {tot_b/1e9/max(tot_t,1e-9):.2f} TB/s average")
    print(f"{'family':<20} {'launches':>8} {'ms':>8} {'share':>6} {'GB':>8} {'TB/s':>6}")
    for f, (n, t, b) in sorted(fam.items(), key=lambda kv: -kv[1][1]):
        print(f"{f:<20} {n:>8} {t:>8.3f} {100*t/max(tot_t,1e-9):>5.1f}% {b/1e9:>8.3f} {b/1e9/max(t,1e-9):>6.2f}")
    per = defaultdict(lambda: [0, 0.0, 0.0])
    for name, t, rd, wr in dec:
        per[name][0] += 1
        per[name][1] += t * scale
        per[name][2] += rd + wr
    print(f"\n{'kernel':<34} {'launches':>8} {'us each':>8} {'MB each':>8} {'TB/s':>6} {'share':>6}")
    for k, (n, t, b) in sorted(per.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"{k:<34} {n:>8} {1e3*t/n:>8.2f} {b/1e6/n:>8.2f} {b/1e9/max(t,1e-9):>6.2f} {100*t/max(tot_t,1e-9):>5.1f}%")


if __name__ == "__main__":
    main(sys.argv[1])
