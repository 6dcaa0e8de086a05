#!/usr/bin/env python3
"""Summarises a persistent decode step's trace (ZAMBA2C_PERSISTENT_TRACE, written by the
runtime; docs/KERNELS.md "Persistent decode step"): per kernel of the `decode` table, its
launches, tiles, and the µs of work (block 0 leaving the previous barrier to the last block
arriving), spread (first to last arrival) and barrier (last arrival to block 0 leaving)."""
import json
import sys
from collections import defaultdict

for path in sys.argv[1:]:
    t = json.load(open(path))
    rows = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0])
    for op in t["launches"]:
        r = rows[op["kernel"]]
        r[0] += 1
        r[1] = op["tiles"]
        r[2] += op["work_us"]
        r[3] += op["spread_us"]
        r[4] += op["barrier_us"]
    work = sum(r[2] for r in rows.values())
    spread = sum(r[3] for r in rows.values())
    barrier = sum(r[4] for r in rows.values())
    print(f"{path}: grid {t['grid']} x {t['block']}, step {t['step_us']:.1f} us, "
          f"{len(t['launches'])} launches: work {work:.1f} us (spread {spread:.1f}), barriers {barrier:.1f} us")
    print(f"{'kernel':34} {'n':>4} {'tiles':>6} {'work us':>9} {'each':>7} {'spread':>7} {'barrier':>8} {'each':>6}")
    for k, r in sorted(rows.items(), key=lambda kv: -kv[1][2]):
        print(f"{k:34} {r[0]:>4} {r[1]:>6} {r[2]:>9.1f} {r[2] / r[0]:>7.2f} {r[3]:>7.1f} {r[4]:>8.1f} {r[4] / r[0]:>6.2f}")
