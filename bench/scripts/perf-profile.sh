#!/usr/bin/env bash
# CPU profile (perf, machine-wide sampling, JIT symbols from perf maps) of the coordinator and the
# load generator during a warmed-up throughput run:
#   bench/scripts/perf-profile.sh [loadgen run flags...]     e.g. --store sqlite
# Needs perf (Debian: linux-perf). Prints the split by DSO (JIT code, coreclr, clrjit, kernel), by
# kind (kernel samples by the system call or page fault that entered the kernel), by thread and the
# top leaf symbols of each process.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
SECONDS_=${SECONDS_:-6}  # WORKLOAD= (throughput), TASKS= measured tasks after the warm-up (150000), TOP= symbols listed (25)
log=$(mktemp /tmp/tw-perf-run.XXXXXX)
DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 \
  dotnet artifacts/bin/Tatzelwurm.LoadGen/release/tatzelwurm-loadgen.dll run --target tatzelwurm --workload "${WORKLOAD:-throughput}" \
  --tasks "${TASKS:-150000}" --fsyncs false "$@" > "$log" 2>&1 &
run=$!
until grep -q "server pid" "$log" 2>/dev/null; do sleep 0.2; kill -0 $run 2>/dev/null || { cat "$log"; exit 1; }; done
sleep 2
perf record -q -a -g -F 999 -o /tmp/tw-perf.data -- sleep "$SECONDS_" >/dev/null 2>&1
wait $run || true
read -r server loadgen < <(sed -n 's/.*server pid \([0-9]*\), load generator pid \([0-9]*\).*/\1 \2/p' "$log")
tail -3 "$log"
perf script -i /tmp/tw-perf.data -F comm,pid,tid,ip,sym,dso 2>/dev/null > /tmp/tw-perf.txt
python3 bench/scripts/perf-aggregate.py "$server" "$loadgen" /tmp/tw-perf.txt "${TOP:-25}"
rm -f "$log" /tmp/tw-perf.data /tmp/tw-perf.txt /tmp/perf-"$server".map /tmp/perf-"$loadgen".map
