#!/bin/sh
# second batch: locality control (1,000 queued, drains, not merged) and the narrowhist layout; 3 reps
here=$(cd "$(dirname "$0")" && pwd); mkdir -p "${W:=/tmp/sqlite-backlog}"; cd "$W"
C="--fastrun --batch 50"
for rep in 1 2 3; do
  "$here"/one.sh k1.db matrix.jsonl $C --drain                                          # 1,000 queued, drains, NOT merged
  "$here"/one.sh m1_narrowhist.db matrix.jsonl $C --layout narrowhist                  # fix: narrow mutable row incl. packed history
  "$here"/one.sh k1_narrowhist.db matrix.jsonl $C --coalesce --drain --layout narrowhist
done
