#!/usr/bin/env bash
# Scale scenarios of issue 7 §4 against a fresh coordinator each (127.0.0.1 only):
#   bench/run-scale.sh queued    1,000,000 queued tasks: RSS, restart (SIGKILL) recovery time,
#                                throughput with that backlog vs with 1,000 queued, and assignment
#                                throughput with the queue kept at each depth
#   bench/run-scale.sh workers   1,000 idle workers heartbeating: coordinator CPU over 60 s
#   bench/run-scale.sh idle      idle coordinator: CPU over 60 s
#   bench/run-scale.sh all       all three
# STORE= (empty: the coordinator's default store), QUEUED=1000000, WORKERS=1000, SECONDS_=60;
# further arguments go to the load generator (e.g. --coordinator PATH).
# Results: bench/results/scale-*.json
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
what=${1:-all}
shift || true
STORE=${STORE:-}
QUEUED=${QUEUED:-1000000}
WORKERS=${WORKERS:-1000}
SECONDS_=${SECONDS_:-60}
store_flag=()
[ -n "$STORE" ] && store_flag=(--store "$STORE")
if [ "${NO_BUILD:-}" != 1 ]; then
  echo "== building (Release)"
  dotnet build Tatzelwurm.sln -c Release --nologo -v q -clp:ErrorsOnly
fi
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
loadgen=(dotnet artifacts/bin/Tatzelwurm.LoadGen/release/tatzelwurm-loadgen.dll)
case "$what" in
  queued|all) "${loadgen[@]}" scale-queued --queued "$QUEUED" "${store_flag[@]}" --json "bench/results/scale-queued-$stamp.json" "$@" ;;&
  workers|all) "${loadgen[@]}" scale-workers --workers "$WORKERS" --seconds "$SECONDS_" "${store_flag[@]}" --json "bench/results/scale-workers-$stamp.json" "$@" ;;&
  idle|all) "${loadgen[@]}" scale-idle --seconds "$SECONDS_" "${store_flag[@]}" --json "bench/results/scale-idle-$stamp.json" "$@" ;;
  queued|workers) ;;
  *) echo "usage: $0 queued|workers|idle|all"; exit 2 ;;
esac
