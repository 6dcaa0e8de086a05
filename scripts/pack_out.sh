#!/usr/bin/env bash
# The device tool brings back at most 8 files from $OUT (its README, "Limits"): when a round
# wrote more, every file goes into one $OUT/round.tar.gz (unpack here with `tar xzf`), so a
# profile is never left behind. Sourced by gpu_round.sh, gpu_sanitize.sh and gpu_rows_probe.sh
# as an EXIT trap.
# Several scripts of one call each pack what they find: a later pack goes into round-2.tar.gz,
# round-3.tar.gz, ..., never over an earlier one, and lines.txt (where a call tees its output,
# docs/GPU.md) stays unpacked so the lines after a pack are not written into a deleted file.
pack_out() {
  local n tarball=round.tar.gz i=2
  n=$(find "$OUT" -maxdepth 1 -type f ! -name 'round*.tar.gz' ! -name lines.txt | wc -l)
  if [ "$n" -gt 6 ]; then
    while [ -e "$OUT/$tarball" ]; do tarball=round-$i.tar.gz; i=$((i + 1)); done
    (cd "$OUT" && find . -maxdepth 1 -type f ! -name 'round*.tar.gz' ! -name lines.txt -printf '%P\n' | sort > /tmp/pack_list \
      && tar czf "$tarball" -T /tmp/pack_list && xargs rm -f < /tmp/pack_list)
    echo "packed $n files into \$OUT/$tarball"
  fi
}
trap pack_out EXIT
# Seconds a step may run: its own limit, cut to what is left until ROUND_DEADLINE (epoch
# seconds; several scripts in one call share it: `export ROUND_DEADLINE=$(($(date +%s) + 540));`
# first) or else of ROUND_BUDGET from this script's start (default 540 s, under the device
# tool's 600 s a call), less 20 s, at least 1. A call killed at the device's limit comes back
# without its files (the trap above cannot run), so every `timeout` of a round asks `tmo` and
# the round ends, packed, before the limit.
tmo() {
  local left
  if [ -n "${ROUND_DEADLINE:-}" ]; then
    left=$((ROUND_DEADLINE - $(date +%s) - 20))
  else
    left=$((${ROUND_BUDGET:-540} - SECONDS - 20))
  fi
  [ "$left" -lt 1 ] && left=1
  if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}
