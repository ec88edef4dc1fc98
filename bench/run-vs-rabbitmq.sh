#!/usr/bin/env bash
# tatzelwurm vs RabbitMQ in one run (issue 7 §3): starts a private RabbitMQ on 127.0.0.1, then runs
# the throughput and round-trip workloads alternately against a fresh tatzelwurm coordinator and
# RabbitMQ, RUNS times each, and prints medians and ratios. Results: bench/results/vs-rabbitmq-*.json
#   RUNS=3 STORE= bench/run-vs-rabbitmq.sh [extra loadgen compare flags]
# STORE empty: the coordinator's default store (the durable one once it exists).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source bench/scripts/rabbitmq.sh
RUNS=${RUNS:-3}
STORE=${STORE:-}
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || echo "(no perf: fsyncs not counted)"; }

echo "== building (Release)"
dotnet build Tatzelwurm.sln -c Release --nologo -v q -clp:ErrorsOnly

rabbit_start
mkdir -p bench/results
out="bench/results/vs-rabbitmq-$(date -u +%Y%m%dT%H%M%SZ).json"
store_flag=()
[ -n "$STORE" ] && store_flag=(--store "$STORE")
dotnet artifacts/bin/Tatzelwurm.LoadGen/release/tatzelwurm-loadgen.dll compare \
  --runs "$RUNS" --rabbit-port "$RABBIT_PORT" --rabbit-pid "$RABBIT_PID" "${store_flag[@]}" --json "$out" "$@"
rabbit_stop
