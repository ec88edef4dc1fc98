#!/bin/sh
# usage: one.sh SRC.db OUT.jsonl [repro.py run options...]
# copies the filled (TRUNCATE-checkpointed) db to a scratch file and runs the processing phase on it
src=$1; out=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd); mkdir -p "${W:=/tmp/sqlite-backlog}"; cd "$W" && rm -f w.db w.db-wal w.db-shm && cp "$src" w.db && sync w.db && /usr/bin/python3 "$here"/repro.py run w.db --json "$out" "$@"
