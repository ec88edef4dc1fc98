#!/usr/bin/env bash
# How busy the coordinator's single store writer is during a warmed-up load generator run, from
# the coordinator's own /metrics (the commit-duration histogram's sum and count, and the batch
# sizes): commits per second, task records per commit, mean commit time and the share of the
# time the writer spent inside the store's commit. Commits never overlap, so that share is a lower
# bound of the writer's utilisation (merging batches and releasing frames come on top).
#   bench/scripts/writer-busy.sh [loadgen run flags...]      e.g. --window 400 --prefetch 400
# TASKS= measured tasks (300000), SECONDS_= length of the sample (2 s, from 0.5 s into the measured
# run). Needs a Release build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
log=$(mktemp /tmp/tw-writer-busy.XXXXXX)
run=
trap 'if [ -n "$run" ]; then kill "$run" 2>/dev/null || true; fi; rm -f "$log"' EXIT
dotnet artifacts/bin/Tatzelwurm.LoadGen/release/tatzelwurm-loadgen.dll run --fsyncs false --tasks "${TASKS:-300000}" \
  --coordinator-arg=--http --coordinator-arg=127.0.0.1:0 "$@" > "$log" 2>&1 &
run=$!
until grep -q "server pid" "$log" 2>/dev/null; do sleep 0.2; kill -0 $run 2>/dev/null || { cat "$log"; exit 1; }; done
server=$(sed -n 's/.*server pid \([0-9]*\).*/\1/p' "$log")
data=$(tr '\0' '\n' < "/proc/$server/cmdline" | grep -A1 -x -- '--data' | tail -1)
url=$(cat "$data/http")
sample() {
  curl -fsS "$url/metrics" | awk '
    /^tatzelwurm_store_commit_duration_seconds_sum/ { s = $NF }
    /^tatzelwurm_store_commit_duration_seconds_count/ { n = $NF }
    /^tatzelwurm_store_commit_batch_size_sum/ { b = $NF }
    END { print s, n, b }'
}
sleep 0.5
read -r s0 n0 b0 < <(sample)
t0=$(date +%s.%N)
sleep "${SECONDS_:-2}"
read -r s1 n1 b1 < <(sample)
t1=$(date +%s.%N)
wait $run || true
run=
grep -o '[0-9]* tasks/s in [0-9.]* s' "$log" | head -1 || true
awk -v s0="$s0" -v s1="$s1" -v n0="$n0" -v n1="$n1" -v b0="$b0" -v b1="$b1" -v t0="$t0" -v t1="$t1" 'BEGIN {
  n = n1 - n0; dt = t1 - t0
  if (n <= 0) { print "no commits in the sample (did the run end first?)"; exit 1 }
  printf "store writer over %.1f s: %.0f commits/s, %.0f task records per commit, %.3f ms per commit, committing %.0f%% of the time\n",
    dt, n / dt, (b1 - b0) / n, 1000 * (s1 - s0) / n, 100 * (s1 - s0) / dt
}'
