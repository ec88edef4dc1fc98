"""examples/process_runner.py end to end against a real coordinator."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import Coordinator

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "process_runner.py"


def _env(coordinator: Coordinator) -> dict[str, str]:
    env = dict(os.environ)
    env.update(coordinator.env)
    return env


def test_process_runner_demo(coordinator: Coordinator) -> None:
    """Launch, pause, status, play, kill, failure and nowait through tasks, RPC and broadcasts."""
    ns = f"demo-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "demo", "--exchange", ns, "--queue", ns + ".tasks"],
                          env=_env(coordinator), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert "killed process is cancelled" in proc.stdout
    assert "running.finished" in proc.stdout


def test_runner_and_launcher_in_separate_processes(coordinator: Coordinator) -> None:
    ns = f"sep-{uuid.uuid4().hex[:8]}"
    args = ["--exchange", ns, "--queue", ns + ".tasks", "--data", str(coordinator.data)]
    env = dict(os.environ)
    env.pop("TATZELWURM_SERVER", None)
    env.pop("TATZELWURM_TOKEN", None)
    runner = subprocess.Popen([sys.executable, str(EXAMPLE), "run", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        assert runner.stdout is not None
        assert "ready" in runner.stdout.readline()
        launch = subprocess.run([sys.executable, str(EXAMPLE), "launch", "--steps", "2", *args], env=env,
                                capture_output=True, text=True, timeout=60)
        assert launch.returncode == 0, launch.stdout + launch.stderr
        assert "{'default': 2}" in launch.stdout
    finally:
        runner.terminate()
        runner.wait(10)
