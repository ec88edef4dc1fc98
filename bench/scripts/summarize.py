#!/usr/bin/env python3
"""Prints markdown tables from tatzelwurm-loadgen JSON results (for docs/benchmarks.md).

    python3 bench/scripts/summarize.py bench/results/vs-rabbitmq-*.json bench/results/scale-*.json
"""
import json
import sys


def fmt(x, digits=3):
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return "–"
    if isinstance(x, float) and x != x:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits}g}" if abs(x) < 10 else f"{x:.1f}"


def jit(r):
    """CPU of the coordinator's tiered-compilation thread in the measured run ('–' for RabbitMQ)."""
    if r['target'] != 'tatzelwurm':
        return '–'
    return f"{(r.get('serverCpuByThread') or {}).get('.NET Tiered Com', 0):.2f}"


def compare(doc, path):
    print(f"\n#### {path}: medians of {doc['runs']} alternating runs (ratio = tatzelwurm ÷ RabbitMQ)\n")
    stores = sorted({r['store'] for r in doc['results'] if r['target'] == 'tatzelwurm'})
    print(f"tatzelwurm store: {', '.join(stores)}; load average at the end: {doc['machine'].get('loadavg', '?')}\n")
    for label, probe in zip(("before", "after"), doc.get('fsyncProbe') or []):
        print(f"disk {label} the runs: 4 KiB append + fdatasync p50 {probe['p50Ms']:.3f} ms, p99 {probe['p99Ms']:.3f} ms ({probe['writes']} writes)")
    print()
    print("| workload | figure | tatzelwurm | RabbitMQ | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for c in doc['comparison']:
        print(f"| {c['workload']} | {c['figure']} | {fmt(c['tatzelwurm'])} | {fmt(c['rabbitMq'])} | {fmt(c['ratio'])} |")
    print("\nper run (tasks/s; round trip p50/p99 ms):\n")
    print("| # | target | workload | tasks/s | p50 | p99 | server CPU s | of it JIT s | fsyncs |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, r in enumerate(doc['results']):
        key = 'round trip' if 'round trip' in r['latency'] else 'add→ack'
        lat = r['latency'][key]
        print(f"| {i + 1} | {r['target']} | {r['workload']} | {r['tasksPerSecond']:,.0f} | {fmt(lat['p50'])} | {fmt(lat['p99'])} | {r['serverCpuSeconds']:.2f} | {jit(r)} | {r.get('serverFsyncs', 'n/a')} |")


def run(doc, path):
    for r in doc['results']:
        print(f"\n#### {path}: {r['target']} {r['workload']} ({r['store']})\n")
        print(f"{r['tasksPerSecond']:,.0f} tasks/s, {r['seconds']:.3f} s, server CPU {r['serverCpuSeconds']:.2f} s, "
              f"peak RSS {r['serverPeakRssBytes'] / 2**20:.1f} MiB, fsyncs {r.get('serverFsyncs', 'n/a')}\n")
        print("| phase | n | mean | p50 | p90 | p99 | max |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for phase, p in r['latency'].items():
            print(f"| {phase} | {p['count']} | {fmt(p['mean'])} | {fmt(p['p50'])} | {fmt(p['p90'])} | {fmt(p['p99'])} | {fmt(p['max'])} |")
        if r.get('serverCpuByThread'):
            print("\nserver CPU by thread: " + ", ".join(f"{k} {v} s" for k, v in r['serverCpuByThread'].items()))


def scale(doc, path):
    s = doc['scale']
    print(f"\n#### {path}: {s['queued']:,} queued ({s['store']})\n")
    print(f"- fill: {s['fillSeconds']:.1f} s ({s['queued'] / s['fillSeconds']:,.0f} tasks/s), coordinator CPU {s['cpuSecondsToFill']:.1f} s")
    print(f"- RSS after fill: {s['rssAfterFillBytes'] / 2**20:,.0f} MiB (peak during fill {s['peakRssDuringFillBytes'] / 2**20:,.0f} MiB)")
    rec = s.get('recoverySeconds')
    print(f"- restart after SIGKILL: answering after {rec:.3f} s, {s['recoveredTasks']:,} tasks recovered, RSS {s['rssAfterRecoveryBytes'] / 2**20:,.0f} MiB" if rec is not None else "- restart: n/a")
    b, base = s['backlogRun'], s['baselineRun']
    print(f"- throughput with {s['queued']:,} queued: {b['tasksPerSecond']:,.0f} tasks/s; with {base['workload'].split('-')[-1]} queued: "
          f"{base['tasksPerSecond']:,.0f} tasks/s; ratio {s['throughputRatio']:.2f} "
          f"(coordinator JIT in the measured runs {jit(b)} and {jit(base)} s)")
    # Files of 08:32-08:34 on 2026-11-28 called the finished ratio assignmentRatio.
    finished = s.get('finishedRatio', s.get('assignmentRatio') if 'keptBacklogRun' not in s else None)
    if finished is not None:
        print(f"- all tasks the workers finished in the same windows: {b['completions']:,} and {base['completions']:,}, "
              f"{b['completionsPerSecond']:,.0f} vs {base['completionsPerSecond']:,.0f} per second; ratio {finished:.2f}")
    if 'keptBacklogRun' in s:
        kb, kbase = s['keptBacklogRun'], s['keptBaselineRun']
        print(f"- assignment throughput, queue kept at {s['queued']:,} / {base['workload'].split('-')[-1]} (first {kb['tasks']:,} completions): "
              f"{kb['completionsPerSecond']:,.0f} vs {kbase['completionsPerSecond']:,.0f} tasks/s; ratio {s.get('keptRatio', s.get('assignmentRatio')):.2f} "
              f"(server CPU {kb['serverCpuSeconds']:.2f} vs {kbase['serverCpuSeconds']:.2f} s; JIT {jit(kb)} and {jit(kbase)} s)")


def idle(doc, path):
    s = doc['idle']
    print(f"\n#### {path}: {s['workers']:,} idle workers ({s['store']})\n")
    print(f"- coordinator CPU {s['cpuSeconds']:.2f} s over {s['seconds']} s = {s['cpuPercentOfOneCore']:.2f}% of one core; "
          f"{s['contextSwitches']:,} context switches; RSS peak {s['peakRssBytes'] / 2**20:.0f} MiB")
    if s.get('cpuByThread'):
        print("- CPU by thread: " + ", ".join(f"{k} {v} s" for k, v in s['cpuByThread'].items()))


for path in sys.argv[1:]:
    doc = json.load(open(path))
    if 'comparison' in doc:
        compare(doc, path)
    elif 'scale' in doc:
        scale(doc, path)
    elif 'idle' in doc:
        idle(doc, path)
    else:
        run(doc, path)
