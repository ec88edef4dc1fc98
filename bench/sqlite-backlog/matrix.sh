#!/bin/sh
# 3 repetitions of every variant, round-robin; results appended to matrix.jsonl (one JSON per run)
here=$(cd "$(dirname "$0")" && pwd); mkdir -p "${W:=/tmp/sqlite-backlog}"; cd "$W"
C="--fastrun --batch 50"
for rep in 1 2 3; do
  "$here"/one.sh k1.db matrix.jsonl $C --coalesce --drain          # baseline model: 1,000 queued, drains, add+dispatch merged
  "$here"/one.sh k1.db matrix.jsonl $C                             # 1,000 queued, stays 1,000 deep, no merge
  "$here"/one.sh m1.db matrix.jsonl $C                             # 1,000,000 queued
  "$here"/one.sh m1_nogrow.db matrix.jsonl $C --nogrow             # A: worker_id pre-set (rows do not grow)
  "$here"/one.sh m1.db matrix.jsonl $C --cache -65536              # B: 64 MiB page cache
  "$here"/one.sh m1.db matrix.jsonl $C --autockpt 10000            # C: checkpoint every 10,000 frames
  "$here"/one.sh m1_log.db matrix.jsonl $C --layout log            # fix: history as append-only rowid log
  "$here"/one.sh m1_narrow.db matrix.jsonl $C --layout narrow      # fix: mutable columns in a narrow table
  "$here"/one.sh m1_narrowlog.db matrix.jsonl $C --layout narrowlog
  "$here"/one.sh k1_log.db matrix.jsonl $C --coalesce --drain --layout log
  "$here"/one.sh k1_narrowlog.db matrix.jsonl $C --coalesce --drain --layout narrowlog
done
