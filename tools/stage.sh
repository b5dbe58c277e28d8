#!/usr/bin/env bash
# tools/stage.sh NAME COMMAND...: run one stage of `make test`, keeping its output for later.
#
# `make test` runs its stages two at a time (make -j2); interleaved output would be unreadable, so each stage writes
# build/stages/NAME.log, and build/stages/NAME.json records how it ended (exit status, seconds, when).
# tools/stages.py prints the logs one after another, and the durations, once every stage is over. This script itself
# always exits 0 (so make goes on with the other stages): the record carries the verdict.
set -u
name=${1:?usage: stage.sh NAME COMMAND...}
shift
dir=build/stages
mkdir -p "$dir"
rm -f "$dir/$name.json"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s.%N)
echo "stage $name: started at $started: $*"
"$@" >"$dir/$name.log" 2>&1 </dev/null
rc=$?
t1=$(date +%s.%N)
seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
printf '{"stage": "%s", "exit": %d, "seconds": %s, "started": "%s", "finished": "%s"}\n' \
  "$name" "$rc" "$seconds" "$started" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dir/$name.json"
if [ "$rc" -eq 0 ]; then verdict=passed; else verdict="FAILED (exit $rc)"; fi
echo "stage $name: $verdict in ${seconds}s"
exit 0
