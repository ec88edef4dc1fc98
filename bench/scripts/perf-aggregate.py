#!/usr/bin/env python3
"""Aggregates `perf script -F pid,tid,comm,ip,sym,dso -G` output for two pids: samples by DSO, by thread
name and by leaf symbol. Usage: perf-aggregate.py COORDINATOR_PID LOADGEN_PID PERF_SCRIPT_TXT [TOP]"""
import sys,re,collections
P,L=sys.argv[1],sys.argv[2]
by={P:collections.Counter(),L:collections.Counter()}
dso={P:collections.Counter(),L:collections.Counter()}
thr={P:collections.Counter(),L:collections.Counter()}
tot=collections.Counter()
for line in open(sys.argv[3]):
    m=re.search(r'^\s*(.*?)\s(\d+)/(\d+)\s+([0-9a-f]+)\s+(.*)\(([^()]*)\)\s*$',line)
    if not m: continue
    comm,pid,tid,ip,sym,d=m.groups()
    tot[pid]+=1
    if pid in by:
        sym=re.sub(r'\[(Optimized|Instrumented|Tier|QuickJitted)[^\]]*\]','',sym).strip()
        sym=re.sub(r'^(instance )?\S+ \[[^\]]+\] ','',sym)
        by[pid][(sym[:120])]+=1; dso[pid][d.split('/')[-1]]+=1; thr[pid][comm]+=1
alls=sum(tot.values())
for p,name in ((P,'coordinator'),(L,'loadgen')):
    n=sum(by[p].values()) or 1
    print(f"== {name} pid {p}: {n} samples = {100*n/alls:.1f}% of all machine samples")
    print("  by dso:", ", ".join(f"{k} {100*v/n:.1f}%" for k,v in dso[p].most_common(7)))
    print("  by thread:", ", ".join(f"{k} {100*v/n:.1f}%" for k,v in thr[p].most_common(6)))
    for k,v in by[p].most_common(int(sys.argv[4]) if len(sys.argv)>4 else 30): print(f"  {100*v/n:5.1f}%  {k}")
print("machine: samples by process (top):", [(k,v) for k,v in tot.most_common(8)])
