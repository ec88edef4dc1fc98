#!/usr/bin/env bash
# CPU profiles (perf, as perf-profile.sh) of the two kept-depth runs of scale-queued: the queue kept
# at 1,000,000 on the coordinator restarted after kill -9, and at 1,000 on a fresh one. Each profile
# starts 1.5 s into its run and lasts SECONDS_ (5); KEPT= completions per kept run (600000, long
# enough for both profiles). Needs perf (Debian: linux-perf) and a Release build. Prints the split
# of each run's coordinator samples by DSO, kind and thread, and its top symbols.
#   bench/scripts/perf-scale-kept.sh [scale-queued flags...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
log=$(mktemp /tmp/tw-perf-scale.XXXXXX)
run=
trap 'if [ -n "$run" ]; then kill "$run" 2>/dev/null || true; fi; rm -f "$log" /tmp/tw-perf-scale.data /tmp/tw-perf-scale.txt' EXIT
DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 \
  dotnet artifacts/bin/Tatzelwurm.LoadGen/release/tatzelwurm-loadgen.dll scale-queued --fsyncs false \
  --kept-tasks "${KEPT:-600000}" "$@" > "$log" 2>&1 &
run=$!

# The runs print "server pid" in this order: throughput with the backlog, kept at 1,000,000 (2nd),
# throughput with 1,000 queued, kept at 1,000 (4th).
profile() {
  until [ "$(grep -c 'server pid' "$log")" -ge "$1" ]; do
    sleep 0.2
    kill -0 $run 2>/dev/null || { cat "$log"; exit 1; }
  done
  sleep 1.5
  perf record -q -a -g -F 999 -o /tmp/tw-perf-scale.data -- sleep "${SECONDS_:-5}" >/dev/null 2>&1
  read -r server loadgen < <(grep 'server pid' "$log" | sed -n "$1p" | sed -n 's/.*server pid \([0-9]*\), load generator pid \([0-9]*\).*/\1 \2/p')
  perf script -i /tmp/tw-perf-scale.data -F comm,pid,tid,ip,sym,dso 2>/dev/null > /tmp/tw-perf-scale.txt
  echo "== $2"
  python3 bench/scripts/perf-aggregate.py "$server" "$loadgen" /tmp/tw-perf-scale.txt "${TOP:-20}" | sed '/^== loadgen/,$d'
  rm -f /tmp/perf-"$server".map
}
profile 2 "queue kept at 1,000,000 (restarted coordinator)"
profile 4 "queue kept at 1,000 (fresh coordinator)"
wait $run
run=
rm -f /tmp/perf-"${loadgen:-none}".map
grep -E "÷|tasks/s in" "$log" | sed 's/\x1b\[[0-9;]*m//g'
