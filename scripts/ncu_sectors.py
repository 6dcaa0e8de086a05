#!/usr/bin/env python3
"""Where a kernel's L2 sectors and warp stalls sit, per SASS instruction, from Nsight Compute's
source page (docs/PERFORMANCE.md, twenty-first session: this view found mamba_step_pipe's state
stores split into four 32-bit stores, 3.9 M of its 5.0 M excessive sectors).

Input: the CSV of `ncu --import REPORT --page source --csv --print-source sass` for a report
collected with `--section SourceCounters` (one block per profiled kernel launch: a "Kernel
Name" line, a header, one row per SASS instruction). For each launch: its total and excessive
L2 sectors, the instructions with the most excessive sectors (sectors, ideal, access bits,
times executed) and the instructions where the most warp-stall samples fell (with the long
scoreboard, barrier and MIO shares).

    python3 scripts/ncu_sectors.py source.csv [--top 8]
"""
import argparse
import csv
import sys

SECTORS = "L2 Theoretical Sectors Global"
EXCESSIVE = "L2 Theoretical Sectors Global Excessive"
IDEAL = "L2 Theoretical Sectors Global Ideal"
STALLS = "Warp Stall Sampling (All Samples)"


def number(row, ix, key):
    """The cell `key` of `row` as a number (0 where the column is missing or not a number)."""
    i = ix.get(key)
    if i is None or i >= len(row):
        return 0.0
    try:
        return float(row[i].replace(",", ""))
    except ValueError:
        return 0.0


def launches(rows):
    """(kernel name, header index, instruction rows) for each launch block of the CSV."""
    out = []
    i = 0
    while i < len(rows):
        r = rows[i]
        if r and r[0] == "Kernel Name":
            name = r[1] if len(r) > 1 else "?"
            header = rows[i + 1] if i + 1 < len(rows) else []
            ix = {h: k for k, h in enumerate(header)}
            j = i + 2
            body = []
            while j < len(rows) and not (rows[j] and rows[j][0] == "Kernel Name"):
                if len(rows[j]) > 1:
                    body.append(rows[j])
                j += 1
            out.append((name, ix, body))
            i = j
        else:
            i += 1
    return out


def report(name, ix, body, top):
    tot = sum(number(r, ix, SECTORS) for r in body)
    exc = sum(number(r, ix, EXCESSIVE) for r in body)
    stall = sum(number(r, ix, STALLS) for r in body)
    share = f"{100 * exc / tot:.0f}%" if tot else "-"
    print(f"{name}: {len(body)} instructions, L2 sectors {tot:,.0f}, excessive {exc:,.0f} ({share}), "
          f"stall samples {stall:,.0f}")
    src = ix.get("Source", 1)
    print("  most excessive sectors (index, instruction, sectors, excessive, ideal, access bits, executed):")
    for r in sorted(body, key=lambda r: -number(r, ix, EXCESSIVE))[:top]:
        if number(r, ix, EXCESSIVE) <= 0:
            break
        access = r[ix["Access Size"]] if "Access Size" in ix else "?"
        print(f"    {body.index(r):5d}  {r[src].strip()[:70]:70s} {number(r, ix, SECTORS):12,.0f} "
              f"{number(r, ix, EXCESSIVE):12,.0f} {number(r, ix, IDEAL):12,.0f} {access:>4s} "
              f"{number(r, ix, 'Instructions Executed'):10,.0f}")
    print("  most stall samples (index, instruction, samples, long scoreboard, barrier, mio):")
    for r in sorted(body, key=lambda r: -number(r, ix, STALLS))[:top]:
        if number(r, ix, STALLS) <= 0:
            break
        print(f"    {body.index(r):5d}  {r[src].strip()[:70]:70s} {number(r, ix, STALLS):8,.0f} "
              f"{number(r, ix, 'stall_long_sb'):8,.0f} {number(r, ix, 'stall_barrier'):8,.0f} "
              f"{number(r, ix, 'stall_mio'):8,.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    ap.add_argument("--top", type=int, default=8, help="instructions listed per launch")
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        rows = list(csv.reader(f))
    blocks = launches(rows)
    if not blocks:
        sys.exit(f"{a.csv}: no 'Kernel Name' block (collect with --section SourceCounters)")
    for name, ix, body in blocks:
        report(name, ix, body, a.top)


if __name__ == "__main__":
    main()
