#!/usr/bin/python3
"""Classify every frame in DB-wal (run with --autockpt 0 so the whole run stays in the WAL).

usage: walstat.py DB   -> JSON: frames, commits, frames/commit, per-btree frames and distinct pages
Page -> btree mapping from the dbstat virtual table of the final database.
"""
import json, sqlite3, struct, sys, collections

import os, shutil
src = sys.argv[1]  # the db file as it was before the run plus SRC.walcopy written by repro.py
db = os.path.join(os.path.dirname(os.path.abspath(src)), "ws.db")
for s in ("", "-wal", "-shm"):
    if os.path.exists(db + s):
        os.remove(db + s)
shutil.copyfile(src, db)
shutil.copyfile(src + ".walcopy", db + "-wal")
with open(db + "-wal", "rb") as f:
    hdr = f.read(32)
    page_size = struct.unpack(">I", hdr[8:12])[0]
    salt = hdr[16:24]
    frames = []
    while True:
        fh = f.read(24)
        if len(fh) < 24:
            break
        pgno, commit = struct.unpack(">II", fh[:8])
        if fh[8:16] != salt:
            break
        f.seek(page_size, 1)
        frames.append((pgno, commit))

c = sqlite3.connect(db)
kind = {}
for name, pageno, pagetype in c.execute("SELECT name, pageno, pagetype FROM dbstat"):
    kind[pageno] = f"{name}:{pagetype}"
kind[1] = "page1(schema/header)"

per_kind = collections.Counter()
distinct = collections.defaultdict(set)
commits, in_commit = 0, []
per_commit_kind = collections.Counter()
for pgno, commit in frames:
    k = kind.get(pgno, "other")
    per_kind[k] += 1
    distinct[k].add(pgno)
    if commit:
        commits += 1
print(json.dumps({
    "db": db, "frames": len(frames), "commits": commits,
    "frames_per_commit": round(len(frames) / max(commits, 1), 1),
    "wal_MiB": round(len(frames) * (page_size + 24) / 2**20, 1),
    "frames_by_btree": dict(per_kind.most_common()),
    "distinct_pages_by_btree": {k: len(v) for k, v in sorted(distinct.items(), key=lambda kv: -len(kv[1]))},
}, indent=1))
