#!/usr/bin/python3
"""Median of the 3 repetitions per variant in matrix.jsonl."""
import json, statistics, sys
rows = [json.loads(l) for f in (sys.argv[1:] or ["matrix.jsonl"]) for l in open(f)]
groups = {}
for r in rows:
    key = (r["layout"], r["nogrow"], r["cache"], r["autockpt"], r["page_count_before"] > 10000, r["coalesced"] > 0, r["drain"], r.get("page_size", 4096), r.get("skip", 0))
    groups.setdefault(key, []).append(r)
cols = ["wall_s", "cpu_s", "wchar_MiB", "write_bytes_MiB", "rchar_MiB", "syscw", "syscr", "page_growth", "commits"]
print("| queued | layout | variant | n | " + " | ".join(cols) + " |")
print("|---" * (4 + len(cols)) + "|")
for key, rs in groups.items():
    layout, nogrow, cache, ck, big, coal, drain, ps, skip = key
    var = []
    if coal: var.append("merged add+dispatch (drains)")
    elif drain: var.append("drains, not merged")
    if nogrow: var.append("nogrow")
    if ps != 4096: var.append(f"page_size {ps}")
    if skip: var.append(f"+{skip} done rows before")
    if cache != -2000: var.append(f"cache {cache}")
    if ck != 1000: var.append(f"autockpt {ck}")
    med = [statistics.median(r[c] for r in rs) for c in cols]
    print(f"| {'1,000,000' if big else '1,000'} | {layout} | {', '.join(var) or 'base'} | {len(rs)} | " + " | ".join(f"{m:g}" for m in med) + " |")
