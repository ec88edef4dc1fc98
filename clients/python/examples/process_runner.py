#!/usr/bin/python3
"""A small plumpy-style process runner on tatzelwurm's kiwipy-compatible communicator.

It mimics how plumpy (AiiDA's process engine) uses a kiwipy communicator, without plumpy:

* **Processes** run as coroutines on the runner's own asyncio loop (plumpy's "process loop"),
  which is *not* the communicator's thread. Each has a UUID ``pid``, a state (``created``,
  ``running``, ``waiting``, ``finished``, ``excepted``, ``killed``) and a ``paused`` flag, and
  broadcasts every state change with ``subject='state_changed.<old>.<new>'`` and ``sender=pid``.
* The **runner** (plumpy's ``ProcessLauncher``) is a task subscriber: a ``launch`` task creates a
  process, registers an RPC subscriber under ``str(pid)`` and answers with a future that resolves
  to the pid (``nowait``) or to the process outputs. Other task kinds raise ``TaskRejected``.
* Each process's **RPC subscriber** (plumpy's ``Process.message_receive``) schedules the intent
  (pause / play / kill) on the process loop and returns a future, so the controller sees two
  future layers for them; ``status`` returns a dict (one layer).
* The **controller** (plumpy's ``RemoteProcessThreadController``) launches processes with
  ``task_send`` and controls them with ``rpc_send``.

Usage (the coordinator is found through TATZELWURM_SERVER/TATZELWURM_TOKEN or its data dir)::

    process_runner.py run                  # serve launch tasks until Ctrl-C
    process_runner.py launch --steps 20    # launch one process, print its pid and outputs
    process_runner.py demo                 # runner + controller in one program: launch,
                                           # pause, play, kill, print the broadcasts; exit 0 if
                                           # everything behaved
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

try:
    import tatzelwurm  # noqa: F401
except ImportError:  # running from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tatzelwurm import communicator as twc
from tatzelwurm.compat import CancelledError, Future, TaskRejected

log = logging.getLogger("process_runner")

TERMINAL = {"finished", "excepted", "killed"}


class ProcessKilled(Exception):
    pass


class Process:
    """A process: ``steps`` steps of ``step_seconds`` each; ``fail_at`` makes step N raise."""

    def __init__(self, runner: ProcessRunner, pid: uuid.UUID, steps: int, step_seconds: float,
                 fail_at: int | None = None) -> None:
        self.runner = runner
        self.pid = pid
        self.steps = steps
        self.step_seconds = step_seconds
        self.fail_at = fail_at
        self.state = "created"
        self.paused = False
        self.step = 0
        self._resume = asyncio.Event()
        self._resume.set()
        self._task: asyncio.Task[Any] | None = None
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    # state and broadcasts -------------------------------------------------------------------

    def _transition(self, new: str) -> None:
        old, self.state = self.state, new
        # Like plumpy: body None, sender the pid (a UUID), subject state_changed.<old>.<new>.
        self.runner.communicator.broadcast_send(None, self.pid, f"state_changed.{old}.{new}", None)

    def status(self) -> dict[str, Any]:
        return {"pid": self.pid, "state": self.state, "paused": self.paused, "step": self.step,
                "steps": self.steps}

    # running --------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            self._transition("running")
            while self.step < self.steps:
                await self._resume.wait()
                if self.fail_at is not None and self.step == self.fail_at:
                    raise RuntimeError(f"process {self.pid} failed at step {self.step}")
                self._transition("waiting")
                await asyncio.sleep(self.step_seconds)
                await self._resume.wait()
                self._transition("running")
                self.step += 1
            self._transition("finished")
            self.future.set_result({"default": self.step})
        except asyncio.CancelledError:
            self._transition("killed")
            self.future.cancel()
        except Exception as exc:  # noqa: BLE001
            self._transition("excepted")
            self.future.set_exception(exc)
        finally:
            self.runner.process_done(self)

    # intents (called on the process loop) --------------------------------------------------

    async def pause(self) -> bool:
        if self.state in TERMINAL:
            return False
        self.paused = True
        self._resume.clear()
        return True

    async def play(self) -> bool:
        if self.state in TERMINAL:
            return False
        self.paused = False
        self._resume.set()
        return True

    async def kill(self) -> bool:
        if self.state in TERMINAL or self._task is None:
            return False
        self._task.cancel()
        try:
            await asyncio.shield(self.future)
        except BaseException:  # noqa: BLE001 - we only wait for it to end
            pass
        return True


class ProcessRunner:
    """Runs processes on its own loop thread; the communicator's subscribers only post work to it."""

    def __init__(self, communicator: twc.TatzelwurmCommunicator) -> None:
        self.communicator = communicator
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="process loop", daemon=True)
        self.thread.start()
        self.processes: dict[uuid.UUID, Process] = {}
        self.task_subscriber_id = communicator.add_task_subscriber(self._on_task)

    def close(self) -> None:
        try:
            self.communicator.remove_task_subscriber(self.task_subscriber_id)
        except Exception:  # noqa: BLE001 - the communicator may be closed already
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _schedule(self, coro: Any) -> concurrent.futures.Future[Any]:
        """Like plumpy's LoopCommunicator: run on the process loop, hand back a kiwipy Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    # the task subscriber (communicator thread) ---------------------------------------------

    def _on_task(self, comm: Any, task: Any) -> Any:
        if not isinstance(task, dict) or task.get("task") != "launch":
            raise TaskRejected(f"unknown task {task!r}")
        return self._schedule(self._launch(task))

    async def _launch(self, task: dict[str, Any]) -> Any:
        pid = task.get("pid") or uuid.uuid4()
        proc = Process(self, pid, int(task.get("steps", 3)), float(task.get("step_seconds", 0.05)),
                       task.get("fail_at"))
        self.processes[pid] = proc
        # Registering blocks this (process) loop thread briefly, as plumpy does; the
        # communicator's own thread keeps running.
        await asyncio.get_running_loop().run_in_executor(
            None, self.communicator.add_rpc_subscriber, self._rpc_subscriber(proc), str(pid))
        proc.start()
        if task.get("nowait"):
            return pid
        return await proc.future

    def _rpc_subscriber(self, proc: Process) -> Any:
        def message_receive(comm: Any, msg: Any) -> Any:
            intent = msg.get("intent") if isinstance(msg, dict) else None
            if intent == "status":
                # Read on the process loop, waited for here: one future layer fewer than intents.
                return self._schedule(_call(proc.status)).result(5)
            if intent in ("pause", "play", "kill"):
                return self._schedule(getattr(proc, intent)())  # a future: two layers at the caller
            raise ValueError(f"unknown intent {intent!r}")
        return message_receive

    def process_done(self, proc: Process) -> None:
        def unregister() -> None:
            try:
                self.communicator.remove_rpc_subscriber(str(proc.pid))
            except Exception:  # noqa: BLE001
                log.debug("could not remove the RPC subscriber of %s", proc.pid, exc_info=True)
        threading.Thread(target=unregister, daemon=True).start()


async def _call(fn: Any) -> Any:
    return fn()


class ProcessController:
    """The remote side: launch processes as tasks and control them over RPC."""

    def __init__(self, communicator: twc.TatzelwurmCommunicator) -> None:
        self.communicator = communicator

    def launch(self, steps: int = 3, step_seconds: float = 0.05, *, nowait: bool = False,
               fail_at: int | None = None, pid: uuid.UUID | None = None) -> Future:
        """Outer future → (pending layer) future of the pid (nowait) or of the outputs."""
        return self.communicator.task_send({"task": "launch", "steps": steps, "step_seconds": step_seconds,
                                            "nowait": nowait, "fail_at": fail_at, "pid": pid or uuid.uuid4()})

    def _intent(self, pid: uuid.UUID, intent: str) -> Any:
        # plumpy's RemoteProcessController awaits the result of pause/play/kill twice.
        return self.communicator.rpc_send(pid, {"intent": intent}).result(10).result(10)

    def pause(self, pid: uuid.UUID) -> bool:
        return bool(self._intent(pid, "pause"))

    def play(self, pid: uuid.UUID) -> bool:
        return bool(self._intent(pid, "play"))

    def kill(self, pid: uuid.UUID) -> bool:
        return bool(self._intent(pid, "kill"))

    def status(self, pid: uuid.UUID) -> dict[str, Any]:
        result = self.communicator.rpc_send(pid, {"intent": "status"}).result(10)  # one layer: a dict
        assert isinstance(result, dict)
        return result


class StateLog:
    """Collects state_changed broadcasts per process (filtered with a BroadcastFilter-like glob)."""

    def __init__(self, communicator: twc.TatzelwurmCommunicator) -> None:
        from tatzelwurm.compat import BroadcastFilter

        self.events: dict[uuid.UUID, list[str]] = {}
        self._lock = threading.Lock()
        communicator.add_broadcast_subscriber(BroadcastFilter(self._on_broadcast, subject="state_changed.*"))

    def _on_broadcast(self, comm: Any, body: Any, sender: Any, subject: Any, correlation_id: Any) -> None:
        with self._lock:
            self.events.setdefault(sender, []).append(subject.split(".", 1)[1])

    def of(self, pid: uuid.UUID) -> list[str]:
        with self._lock:
            return list(self.events.get(pid, []))

    def wait_for(self, pid: uuid.UUID, transition: str, timeout: float = 10) -> None:
        """Wait for ``old.new`` (exact) or ``new`` (any transition into it)."""
        deadline = time.monotonic() + timeout
        while not any(t == transition or t.endswith("." + transition) for t in self.of(pid)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pid} never did {transition}; saw {self.of(pid)}")
            time.sleep(0.01)


def demo(comm_args: dict[str, Any]) -> int:
    """Runner and controller on separate communicators; returns 0 if everything behaved."""
    runner_comm = twc.connect(**comm_args)
    controller_comm = twc.connect(**comm_args)
    runner = ProcessRunner(runner_comm)
    controller = ProcessController(controller_comm)
    states = StateLog(controller_comm)
    ok = True

    def check(what: str, cond: bool) -> None:
        nonlocal ok
        ok = ok and cond
        print(f"{'ok ' if cond else 'FAIL'} {what}")

    try:
        # 1. a process that runs to the end
        done = controller.launch(steps=3)
        outputs = done.result(10).result(10)
        check(f"finished with outputs {outputs}", outputs == {"default": 3})

        # 2. a long process: pause, check it stops progressing, play, let it finish
        pid = uuid.uuid4()
        long_run = controller.launch(steps=30, step_seconds=0.02, pid=pid).result(10)
        states.wait_for(pid, "created.running")
        check("pause acknowledged", controller.pause(pid))
        status = controller.status(pid)
        check(f"status says paused at step {status['step']}", status["paused"] is True and status["pid"] == pid)
        time.sleep(0.3)
        check("no progress while paused", controller.status(pid)["step"] <= status["step"] + 1)
        check("play acknowledged", controller.play(pid))
        check("resumed process finished", long_run.result(20) == {"default": 30})
        states.wait_for(pid, "running.finished")

        # 3. kill a running process: its launch future is cancelled
        victim = uuid.uuid4()
        killed = controller.launch(steps=1000, step_seconds=0.02, pid=victim).result(10)
        states.wait_for(victim, "created.running")
        check("kill acknowledged", controller.kill(victim))
        try:
            killed.result(10)
            check("killed process is cancelled", False)
        except CancelledError:
            check("killed process is cancelled", True)
        states.wait_for(victim, "killed")
        check("state_changed ends in killed", states.of(victim)[-1].endswith(".killed"))

        # 4. an excepting process: RemoteException with the text
        try:
            controller.launch(steps=3, fail_at=1).result(10).result(10)
            check("failing process raises", False)
        except Exception as exc:  # noqa: BLE001
            check(f"failing process raises {type(exc).__name__}: {exc}", "failed at step 1" in str(exc))

        # 5. nowait launch gives the pid at once; broadcasts tell the story
        pid3 = uuid.uuid4()
        got = controller.launch(steps=2, nowait=True, pid=pid3).result(10).result(10)
        check("nowait launch returns the pid (a UUID)", got == pid3 and isinstance(got, uuid.UUID))
        states.wait_for(pid3, "running.finished")
        print(f"state changes of {pid3}: {' → '.join(states.of(pid3))}")
        return 0 if ok else 1
    finally:
        runner.close()
        runner_comm.close()
        controller_comm.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "launch", "demo"])
    ap.add_argument("--server", help="coordinator host:port (default: TATZELWURM_SERVER or the data dir)")
    ap.add_argument("--token")
    ap.add_argument("--data", help="the coordinator's data directory")
    ap.add_argument("--exchange", default="process-runner", help="message_exchange (RPC/broadcast namespace)")
    ap.add_argument("--queue", default="process-runner.tasks", help="task_queue (task type)")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    comm_args: dict[str, Any] = {"address": args.server, "token": args.token, "data_dir": args.data,
                                 "message_exchange": args.exchange, "task_queue": args.queue}
    if args.command == "demo":
        return demo(comm_args)
    comm = twc.connect(**comm_args)
    try:
        if args.command == "run":
            runner = ProcessRunner(comm)
            print("process runner ready; Ctrl-C to stop", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                runner.close()
            return 0
        pid = uuid.uuid4()
        print(f"launching {pid}", flush=True)
        print(ProcessController(comm).launch(steps=args.steps, pid=pid).result(30).result(600))
        return 0
    finally:
        comm.close()


if __name__ == "__main__":
    sys.exit(main())
