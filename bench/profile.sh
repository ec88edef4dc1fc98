#!/usr/bin/env bash
# CPU profile of the coordinator (and the load generator) under the throughput workload, with
# dotnet-trace (EventPipe sampling, installed with `dotnet tool install -g dotnet-trace`).
#   bench/profile.sh [loadgen run flags...]      e.g. --tasks 100000 --store sqlite
# Writes bench/results/profile-*.{coordinator,loadgen}.nettrace and prints the top frames
# (exclusive and inclusive) of each.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$PATH:$HOME/.dotnet/tools"
command -v dotnet-trace >/dev/null || dotnet tool install -g dotnet-trace >/dev/null
SECONDS_=${SECONDS_:-8}
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
dotnet artifacts/bin/Tatzelwurm.LoadGen/release/tatzelwurm-loadgen.dll run --target tatzelwurm --workload throughput --tasks 150000 --fsyncs false "$@" > "bench/results/profile-$stamp.log" 2>&1 &
loadgen=$!
coordinator=
for _ in $(seq 1 300); do
  coordinator=$(pgrep -f "tatzelwurm.dll --listen 127.0.0.1:0 --data /tmp/tw-loadgen-$loadgen-" || true)
  [ -n "$coordinator" ] && break
  sleep 0.1
done
[ -n "$coordinator" ] || { echo "coordinator did not start"; cat "bench/results/profile-$stamp.log"; exit 1; }
sleep 3   # workers connect, submitting starts
dotnet-trace collect -p "$coordinator" --profile dotnet-sampled-thread-time --duration "00:00:00:$(printf %02d "$SECONDS_")" -o "bench/results/profile-$stamp.coordinator.nettrace" >/dev/null &
dotnet-trace collect -p "$loadgen" --profile dotnet-sampled-thread-time --duration "00:00:00:$(printf %02d "$SECONDS_")" -o "bench/results/profile-$stamp.loadgen.nettrace" >/dev/null &
wait %2 %3 || true
wait "$loadgen" || true
tail -12 "bench/results/profile-$stamp.log"
for who in coordinator loadgen; do
  echo "== $who: exclusive"
  dotnet-trace report "bench/results/profile-$stamp.$who.nettrace" topN -n 30 2>/dev/null || true
  echo "== $who: inclusive"
  dotnet-trace report "bench/results/profile-$stamp.$who.nettrace" topN -n 40 --inclusive 2>/dev/null || true
done
