#!/usr/bin/python3
"""One Python worker against a fresh coordinator: N zero-duration tasks, tasks/s and frames per task.

    bench/python-worker.py [--tasks 5000] [--slots 4] [--client-src DIR] [--coordinator DLL] [--store S]

All N tasks are added before the worker starts (not timed); the clock runs from the worker's start
until the coordinator holds all N terminated. Frames are the coordinator's own counters
(``tatzelwurm_frames_in_total`` + ``_out_total`` from ``/metrics``) over that window: the worker's
frames and its heartbeats, plus the handful the actioner needs to see the end. The CPU time is
this process's (the worker; the idle actioner adds little) over the same window. ``--client-src``
picks the ``tatzelwurm`` package to run (default: this tree's clients/python/src), so an older
client can be measured against the same coordinator build. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--slots", type=int, default=4, help="the worker's slots (Worker's default: 4)")
    ap.add_argument("--client-src", default=str(ROOT / "clients" / "python" / "src"))
    ap.add_argument("--coordinator", default=str(ROOT / "artifacts" / "bin" / "Tatzelwurm" / "release" / "tatzelwurm.dll"))
    ap.add_argument("--store", default=None, help="the coordinator's --store (default: its default, durable SQLite)")
    return ap.parse_args()


def frames(http: str) -> int:
    total = 0
    with urllib.request.urlopen(f"{http}/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(("tatzelwurm_frames_in_total", "tatzelwurm_frames_out_total")):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def start_coordinator(dll: str, data: Path, store: str | None) -> tuple[subprocess.Popen[bytes], str, str]:
    command = [shutil.which("dotnet") or "dotnet", dll, "--listen", "127.0.0.1:0", "--http", "0", "--data", str(data),
               "--log-level", "warning"]
    if store:
        command += ["--store", store]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # Start-up: poll for the files the coordinator writes once it serves.
    while not ((data / "address").is_file() and (data / "http").is_file()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"coordinator did not start (exit code {proc.poll()})")
        time.sleep(0.05)
    return proc, (data / "address").read_text().strip(), (data / "http").read_text().strip()


async def run(args: argparse.Namespace, address: str, token: str, http: str) -> dict[str, object]:
    import tatzelwurm
    from tatzelwurm import protocol as p

    async def noop(task: tatzelwurm.TaskContext) -> None:
        return None

    async with await tatzelwurm.connect(address, token) as actioner:
        ids: list[int] = []
        for start in range(0, args.tasks, 1000):
            chunk = min(1000, args.tasks - start)
            ids += await actioner.add_many([tatzelwurm.TaskSpec(b"", "noop") for _ in range(chunk)])
        frames_before = frames(http)
        t0, cpu0 = time.perf_counter(), time.process_time()
        worker = tatzelwurm.Worker({"noop": noop}, address=address, token=token, slots=args.slots)
        running = asyncio.ensure_future(worker.run())
        await actioner.wait(ids[-1])  # assigned last: no task is ready any more
        # The few still on the worker (listed submit first: one that starts meanwhile is then run).
        for state in (p.TaskState.SUBMIT, p.TaskState.RUN):
            for info in (await actioner.list(state, type="noop")).tasks:
                await actioner.wait(info.id)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        frames_after = frames(http)
        done = (await actioner.list(p.TaskState.TERMINATED, type="noop", limit=1)).matched
        if done != args.tasks:
            raise SystemExit(f"only {done} of {args.tasks} tasks terminated")
        await worker.stop(graceful=False)
        await asyncio.gather(running, return_exceptions=True)
    return {
        "tasks": args.tasks,
        "slots": args.slots,
        "client_src": args.client_src,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(args.tasks / elapsed, 1),
        "frames_per_task": round((frames_after - frames_before) / args.tasks, 3),
        "client_cpu_us_per_task": round(cpu / args.tasks * 1e6, 1),
    }


def main() -> None:
    args = parse()
    sys.path.insert(0, args.client_src)
    with tempfile.TemporaryDirectory(prefix="tatzelwurm-pyworker-") as tmp:
        data = Path(tmp) / "data"
        proc, address, http = start_coordinator(args.coordinator, data, args.store)
        try:
            token = (data / "token").read_text().strip()
            result = asyncio.run(run(args, address, token, http))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.pop("TATZELWURM_SERVER", None)
    main()
