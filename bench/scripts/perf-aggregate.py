#!/usr/bin/env python3
"""Aggregates `perf script -F comm,pid,tid,ip,sym,dso` output (with call chains) for two pids: samples
by DSO, by kind (for kernel samples the system call or fault that entered the kernel), by thread name
and by leaf symbol. Usage: perf-aggregate.py COORDINATOR_PID LOADGEN_PID PERF_SCRIPT_TXT [TOP]"""
import sys, re, collections

P, L = sys.argv[1], sys.argv[2]
TOP = int(sys.argv[4]) if len(sys.argv) > 4 else 30
# Innermost match wins, so a page fault inside a system call counts as the fault.
KERNEL_ENTRIES = [
    ('exc_page_fault', 'page fault'), ('sys_pwrite64', 'pwrite'), ('sys_pread64', 'pread'),
    ('sys_fsync', 'fsync'), ('sys_fdatasync', 'fsync'), ('sys_sendto', 'send'), ('sys_recvfrom', 'recv'),
    ('sys_sched_yield', 'sched_yield'), ('sys_futex', 'futex'), ('sys_epoll', 'epoll'),
    ('sys_munmap', 'munmap'), ('sys_madvise', 'madvise'), ('sys_mprotect', 'mprotect'),
]
by = {P: collections.Counter(), L: collections.Counter()}
dso = {P: collections.Counter(), L: collections.Counter()}
kind = {P: collections.Counter(), L: collections.Counter()}
thr = {P: collections.Counter(), L: collections.Counter()}
tot = collections.Counter()


def short_dso(path):
    name = path.split('/')[-1]
    return 'JIT code' if name.startswith('perf-') else name


def kind_of(frames):
    leaf_dso = frames[0][1]
    if 'kernel' not in leaf_dso:
        return short_dso(leaf_dso)
    for sym, _ in frames:
        for needle, label in KERNEL_ENTRIES:
            if needle in sym:
                return 'kernel: ' + label
    return 'kernel: other'


def add(sample):
    comm, pid, frames = sample
    tot[pid] += 1
    if pid not in by or not frames:
        return
    sym, d = frames[0]
    sym = re.sub(r'\[(Optimized|Instrumented|Tier|QuickJitted)[^\]]*\]', '', sym).strip()
    sym = re.sub(r'^(instance )?\S+ \[[^\]]+\] ', '', sym)
    by[pid][sym[:120]] += 1
    dso[pid][short_dso(d)] += 1
    kind[pid][kind_of(frames)] += 1
    thr[pid][comm] += 1


FRAME = re.compile(r'^\s*[0-9a-f]+\s+(.*?)\s*\(([^()]*)\)\s*$')
sample = None
for line in open(sys.argv[3], errors='replace'):
    if not line.strip():
        if sample:
            add(sample)
        sample = None
        continue
    if not line[0].isspace() or sample is None:
        if sample:
            add(sample)
        # A header, alone when a call chain follows, or with the one frame perf could resolve.
        m = re.match(r'^\s*(.*?)\s+(\d+)/(\d+)(?:\s+(.*))?$', line.rstrip('\n'))
        sample = (m.group(1), m.group(2), []) if m else None
        if m and m.group(4) and (f := FRAME.match(m.group(4))):
            sample[2].append((f.group(1), f.group(2)))
        continue
    m = FRAME.match(line)
    if m:
        sample[2].append((m.group(1), m.group(2)))
if sample:
    add(sample)

alls = sum(tot.values()) or 1
for p, name in ((P, 'coordinator'), (L, 'loadgen')):
    n = sum(by[p].values()) or 1
    print(f"== {name} pid {p}: {n} samples = {100 * n / alls:.1f}% of all machine samples")
    print("  by dso:", ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in dso[p].most_common(7)))
    print("  by kind:", ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in kind[p].most_common(12)))
    print("  by thread:", ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in thr[p].most_common(6)))
    for k, v in by[p].most_common(TOP):
        print(f"  {100 * v / n:5.1f}%  {k}")
print("machine: samples by process (top):", [(k, v) for k, v in tot.most_common(8)])
