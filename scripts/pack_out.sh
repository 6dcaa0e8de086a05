#!/usr/bin/env bash
# The device tool brings back at most 8 files from $OUT (its README, "Limits"): when a round
# wrote more, every file goes into one $OUT/round.tar.gz (unpack here with `tar xzf`), so a
# profile is never left behind. Sourced by gpu_round.sh and gpu_sanitize.sh as an EXIT trap.
pack_out() {
  local n
  n=$(find "$OUT" -maxdepth 1 -type f | wc -l)
  if [ "$n" -gt 8 ]; then
    (cd "$OUT" && find . -maxdepth 1 -type f ! -name round.tar.gz -printf '%P\n' | sort > /tmp/pack_list \
      && tar czf round.tar.gz -T /tmp/pack_list && xargs rm -f < /tmp/pack_list)
    echo "packed $n files into \$OUT/round.tar.gz"
  fi
}
trap pack_out EXIT
