#!/bin/sh
# run-depth.sh -- run libFuzzer targets one after another at the lowest
# priority, one process at a time (the machine is shared).
#
#   fuzz/run-depth.sh BUILD_DIR TARGET:RUNS:SECONDS ...
#
# Each piece runs BUILD_DIR/fuzz/fuzz_TARGET on the work corpus
# fuzz/corpus-work/TARGET (git-ignored) seeded from fuzz/corpus/TARGET,
# stops at RUNS executions or SECONDS seconds, whichever comes first, and
# logs to fuzz/corpus-work/logs/TARGET-<time>.log; crashes land in
# fuzz/corpus-work/artifacts/.  Executions of a piece:
#   grep number_of_executed_units fuzz/corpus-work/logs/TARGET-*.log
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$1
shift
work=$here/corpus-work
mkdir -p "$work/logs" "$work/artifacts"
for piece in "$@"; do
  t=${piece%%:*}
  rest=${piece#*:}
  runs=${rest%%:*}
  secs=${rest#*:}
  mkdir -p "$work/$t"
  log=$work/logs/$t-$(date -u +%Y%m%dT%H%M%S).log
  echo "$(date -u +%FT%TZ) $t runs=$runs max_total_time=$secs log=$log"
  nice -n 19 "$build/fuzz/fuzz_$t" -runs="$runs" -max_total_time="$secs" \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/$t-" \
    "$work/$t" "$here/corpus/$t" >"$log" 2>&1
  echo "$(date -u +%FT%TZ) $t exit $? $(grep -E 'number_of_executed_units' "$log")"
done
