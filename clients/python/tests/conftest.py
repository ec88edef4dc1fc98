"""Fixtures: a real coordinator process on 127.0.0.1:0 with its own data directory.

The coordinator is ``dotnet <repo>/artifacts/bin/Tatzelwurm/debug/tatzelwurm.dll`` (built by
``dotnet build Tatzelwurm.sln``; the fixture never builds). ``TATZELWURM_TEST_COORDINATOR=fake``
selects tests/fake_coordinator.py instead (a development aid only).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import tatzelwurm  # noqa: E402

HERE = Path(__file__).resolve().parent


def repo_root() -> Path:
    for parent in HERE.parents:
        if (parent / "Tatzelwurm.sln").is_file():
            return parent
    raise RuntimeError("Tatzelwurm.sln not found")


# Short heartbeats/leases keep liveness tests fast.
HEARTBEAT_MS = int(os.environ.get("TATZELWURM_TEST_HEARTBEAT_MS", "300"))
LEASE_MS = int(os.environ.get("TATZELWURM_TEST_LEASE_MS", "1500"))
GRACE_MS = int(os.environ.get("TATZELWURM_TEST_GRACE_MS", "5000"))


def coordinator_command(data: Path, extra_args: list[str] | None = None) -> list[str]:
    timing = ["--heartbeat", f"{HEARTBEAT_MS}ms", "--lease", f"{LEASE_MS}ms", "--grace", f"{GRACE_MS}ms",
              "--log-level", os.environ.get("TATZELWURM_TEST_LOG_LEVEL", "information")]
    if os.environ.get("TATZELWURM_TEST_STORE"):
        timing += ["--store", os.environ["TATZELWURM_TEST_STORE"]]
    timing += extra_args or []
    if os.environ.get("TATZELWURM_TEST_COORDINATOR") == "fake":
        return [sys.executable, str(HERE / "fake_coordinator.py"), "--listen", "127.0.0.1:0", "--data", str(data),
                *timing]
    root = repo_root()
    candidates = [root / "artifacts" / "bin" / "Tatzelwurm" / cfg / "tatzelwurm.dll" for cfg in ("debug", "release")]
    dll = next((c for c in candidates if c.is_file()), None)
    if dll is None:
        pytest.fail(f"coordinator not built: {candidates[0]} is missing. Run `dotnet build {root / 'Tatzelwurm.sln'}` "
                    "first (the Python tests never build it).", pytrace=False)
    dotnet = shutil.which("dotnet") or "dotnet"
    extra = os.environ.get("TATZELWURM_TEST_COORDINATOR_ARGS", "").split()
    return [dotnet, str(dll), "--listen", "127.0.0.1:0", "--data", str(data), *timing, *extra]


class Coordinator:
    """A coordinator process; ``restart()`` keeps its data directory (and so its tasks and token)."""

    def __init__(self, data: Path, extra_args: list[str] | None = None) -> None:
        self.data = data
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data.parent / f"{data.name}.log"
        self.address = ""
        self.token = ""

    def start(self, timeout: float = 30.0) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "address").unlink(missing_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(coordinator_command(self.data, self.extra_args), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        address_file = self.data / "address"
        # Start-up: poll for the address file the coordinator writes once it accepts connections.
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"coordinator exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            if address_file.is_file() and address_file.read_text().strip():
                self.address = address_file.read_text().strip()
                self.token = (self.data / "token").read_text().strip()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"coordinator did not write {address_file} within {timeout}s; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """kill -9: no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, hard: bool = True) -> None:
        self.kill() if hard else self.stop()
        self.start()

    @property
    def env(self) -> dict[str, str]:
        return {"TATZELWURM_SERVER": self.address, "TATZELWURM_TOKEN": self.token}


@pytest.fixture(scope="session")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """One coordinator shared by the session; tests isolate themselves by unique names."""
    coord = Coordinator(tmp_path_factory.mktemp("coord") / "data")
    coord.start()
    yield coord
    coord.stop()


@pytest.fixture
def private_coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator of the test's own (for restarts)."""
    coord = Coordinator(tmp_path / "data")
    coord.start()
    yield coord
    coord.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def client(coordinator: Coordinator) -> AsyncIterator[tatzelwurm.Client]:
    c = await tatzelwurm.connect(coordinator.address, coordinator.token)
    yield c
    await c.close()


async def eventually(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Wait (bounded) until predicate() — maybe a coroutine function — is truthy; return its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
