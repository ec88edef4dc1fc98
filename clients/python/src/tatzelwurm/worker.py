"""Worker runner: run task handlers for the coordinator.

::

    worker = Worker(slots=4)

    @worker.handler("sleep")                 # a coroutine runs on the event loop
    async def sleep(task: TaskContext) -> bytes:
        await task.checkpoint()              # honours pause (waits) and kill (raises)
        return b"done"

    @worker.handler("crunch")                # a plain function runs in a thread pool
    def crunch(task: TaskContext) -> int:
        for i in range(100):
            task.check()                     # raises TaskKilled after a kill
            task.wait_if_paused()            # blocks while the task is paused
        return 42

    asyncio.run(worker.run())

Heartbeats run on the event loop independently of the handlers (blocking handlers never run on
the loop). A lost connection or a restarted coordinator is survived: the client reconnects with
backoff, re-registers with the same ``worker_id`` and the tasks it still holds (reclaim), stops
the tasks the coordinator tells it to drop, and re-sends the reports that were not acknowledged.
With a coordinator that supports it (every current one) the worker takes ``AssignTasks`` and sends
its reports as ``TaskUpdates``: everything reported since the last frame goes out together, so a
busy worker costs far fewer frames than one ``TaskUpdate`` and one ``Ok`` per report.

Control actions: pause/play set the task's :class:`CancelToken` state and are reported at once;
kill cancels a coroutine and signals a blocking function, then reports exit code -1; abandon
reports -1 at once and forgets the task; drop forgets it silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from . import protocol as p
from ._outcome import LevelCancelled, error_text, resolve_layers
from .client import Client, ClientClosed

__all__ = ["Worker", "TaskContext", "CancelToken", "TaskKilled", "TaskExit", "default_worker_id"]

log = logging.getLogger("tatzelwurm.worker")


class TaskKilled(Exception):
    """Raised by :meth:`CancelToken.check` once the task was killed."""


class TaskExit(Exception):
    """Raise from a handler to finish with a specific exit code (and optional result/error)."""

    def __init__(self, exit_code: int, result: Any = None, error: str | None = None) -> None:
        super().__init__(error or f"exit code {exit_code}")
        self.exit_code = exit_code
        self.result = result
        self.error = error


class CancelToken:
    """Pause/kill state of one task, safe to poll from any thread.

    Blocking handlers call :meth:`check` (raises :class:`TaskKilled`) and
    :meth:`wait_if_paused`; coroutine handlers ``await`` :meth:`checkpoint`. A killed coroutine is
    also cancelled at its current ``await``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._killed = False
        self._paused = False
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def killed(self) -> bool:
        return self._killed

    cancelled = killed

    @property
    def paused(self) -> bool:
        return self._paused

    def check(self) -> None:
        if self._killed:
            raise TaskKilled()

    def wait_if_paused(self, timeout: float | None = None) -> bool:
        """Block while paused; returns True when running. Raises :class:`TaskKilled` if killed."""
        with self._cond:
            self._cond.wait_for(lambda: not self._paused or self._killed, timeout)
        self.check()
        return not self._paused

    async def checkpoint(self) -> None:
        """Yield to the loop; wait while paused; raise :class:`TaskKilled` if killed."""
        self.check()
        while self._paused and not self._killed:
            fut = asyncio.get_running_loop().create_future()
            with self._cond:
                self._async_waiters.append((asyncio.get_running_loop(), fut))
            await fut
        self.check()
        await asyncio.sleep(0)

    def _changed(self, **state: bool) -> None:
        with self._cond:
            for key, value in state.items():
                setattr(self, "_" + key, value)
            self._cond.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, fut in waiters:
            loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))

    def pause(self) -> None:
        self._changed(paused=True)

    def resume(self) -> None:
        self._changed(paused=False)

    def kill(self) -> None:
        self._changed(killed=True)


@dataclass
class TaskContext:
    """What a handler gets: the task and its :class:`CancelToken`."""

    task_id: int
    type: str
    payload: bytes
    attempt: int
    no_reply: bool
    token: CancelToken
    worker: Worker

    def data(self) -> Any:
        """The payload decoded as MessagePack."""
        return msgpack.unpackb(self.payload, raw=False, strict_map_key=False)

    @property
    def killed(self) -> bool:
        return self.token.killed

    @property
    def paused(self) -> bool:
        return self.token.paused

    def check(self) -> None:
        self.token.check()

    def wait_if_paused(self, timeout: float | None = None) -> bool:
        return self.token.wait_if_paused(timeout)

    async def checkpoint(self) -> None:
        await self.token.checkpoint()


@dataclass
class _Handler:
    fn: Callable[[TaskContext], Any]
    blocking: bool


@dataclass
class _Running:
    ctx: TaskContext
    handler: _Handler
    job: asyncio.Task[None] | None = None
    abandoned: bool = False
    dropped: bool = False
    finished: bool = False
    reports: list[asyncio.Future[None]] = field(default_factory=list)


def default_worker_id() -> str:
    """A stable-for-this-process worker identity: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Worker:
    """Registers task types and slots with the coordinator and runs the tasks it assigns."""

    def __init__(self, handlers: dict[str, Callable[[TaskContext], Any]] | None = None, *, slots: int = 4,
                 worker_id: str | None = None, name: str | None = None, address: str | None = None,
                 token: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                 client: Client | None = None, max_threads: int | None = None) -> None:
        self.slots = slots
        self.worker_id = worker_id or default_worker_id()
        self.name = name or socket.gethostname()
        self._connect_args = (address, token, data_dir)
        self._client = client
        self._handlers: dict[str, _Handler] = {}
        for type_, fn in (handlers or {}).items():
            self.add_handler(type_, fn)
        self._running: dict[int, _Running] = {}
        # Tasks we must declare as held on re-registration: running ones and finished ones whose
        # final report is not acknowledged yet. Value: paused.
        self._held: dict[int, bool] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_threads or slots + 4,
                                                           thread_name_prefix="tatzelwurm-task")
        self._draining = False
        self._stop_when_idle = False
        self._stopped: asyncio.Event | None = None
        self._shut_down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.completed = 0

    # -- configuration ---------------------------------------------------------------------

    def handler(self, type_: str, *, blocking: bool | None = None) -> Callable[[Callable[[TaskContext], Any]],
                                                                          Callable[[TaskContext], Any]]:
        """Decorator: run ``fn(task)`` for tasks of ``type_``. Coroutine functions run on the loop,
        other functions in the thread pool (override with ``blocking``)."""
        def register(fn: Callable[[TaskContext], Any]) -> Callable[[TaskContext], Any]:
            self.add_handler(type_, fn, blocking=blocking)
            return fn
        return register

    def add_handler(self, type_: str, fn: Callable[[TaskContext], Any], *, blocking: bool | None = None) -> None:
        if blocking is None:
            blocking = not inspect.iscoroutinefunction(fn)
        self._handlers[type_] = _Handler(fn, blocking)

    @property
    def types(self) -> list[str]:
        return list(self._handlers)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("worker not started")
        return self._client

    @property
    def running(self) -> dict[int, TaskContext]:
        return {tid: rt.ctx for tid, rt in self._running.items()}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (unless a client was given) and register; tasks start arriving."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if self._client is None:
            address, token, data_dir = self._connect_args
            self._client = Client(address, token, data_dir, role="worker", name=f"tatzelwurm-python worker {self.name}",
                                  reconnect_timeout=None)
            await self._client.start()
        self._client.on_disconnect(lambda reason: log.warning("worker %s disconnected: %s", self.worker_id, reason))
        await self._client.register_worker(self.worker_id, self.name, self.types, self.slots, self)

    async def run(self) -> None:
        """Start (if needed) and run until stopped (:meth:`stop`, a stop ``DrainNotice``, or a
        client that gave up reconnecting)."""
        if self._stopped is None:
            await self.start()
        assert self._stopped is not None
        client_gone = asyncio.ensure_future(self.client.wait_closed())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait([client_gone, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            client_gone.cancel()
            stopped.cancel()
        await self._shutdown(graceful=False)

    async def stop(self, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop taking tasks. Graceful: ask the coordinator to drain us, let running tasks finish
        and their reports be acknowledged, then close. Otherwise cancel everything now (the
        coordinator applies the tasks' delivery policy once our lease expires)."""
        if graceful and self._client is not None and not self._client.closed:
            self._draining = True
            self._stop_when_idle = True
            try:
                await self._client.drain_worker(self.worker_id)
            except p.TatzelwurmError as exc:
                log.warning("could not drain worker %s: %s", self.worker_id, exc)
            try:
                await asyncio.wait_for(self._wait_idle(), timeout)
            except asyncio.TimeoutError:
                log.warning("worker %s: tasks still running after %ss; stopping anyway", self.worker_id, timeout)
        await self._shutdown(graceful=False)

    async def _wait_idle(self) -> None:
        while self._running or self._held:
            await asyncio.sleep(0.02)

    async def _shutdown(self, graceful: bool) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        if graceful:
            await self._wait_idle()
        for rt in list(self._running.values()):
            rt.dropped = True
            rt.ctx.token.kill()
            if rt.job is not None:
                rt.job.cancel()
        self._running.clear()
        if self._client is not None:
            await self._client.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._stopped is not None:
            self._stopped.set()

    # -- TaskSink (called by the client on the loop) -----------------------------------------

    def held_tasks(self) -> list[p.HeldTask]:
        return [p.HeldTask(task_id, paused) for task_id, paused in self._held.items()]

    def on_assign(self, message: p.AssignTask) -> None:
        handler = self._handlers.get(message.type)
        if handler is None or self._draining or len(self._running) >= self.slots or message.task_id in self._running:
            log.info("rejecting task %s (%s)", message.task_id,
                     "no handler" if handler is None else "draining" if self._draining else "busy")
            self.client.report(message.task_id, p.TaskUpdateKind.REJECTED)
            return
        ctx = TaskContext(message.task_id, message.type, message.payload, message.attempt, message.no_reply,
                          CancelToken(), self)
        rt = _Running(ctx, handler)
        self._running[message.task_id] = rt
        self._held[message.task_id] = False
        self.client.report(message.task_id, p.TaskUpdateKind.ACCEPTED)
        assert self._loop is not None
        rt.job = self._loop.create_task(self._execute(rt), name=f"tatzelwurm-task-{message.task_id}")

    def on_control(self, message: p.ControlTask) -> None:
        task_id, action = message.task_id, message.action
        rt = self._running.get(task_id)
        log.info("control %s for task %s", getattr(action, "name", action), task_id)
        if action == p.ControlAction.DROP:
            self._drop(task_id)
            return
        if rt is None:
            if action in (p.ControlAction.KILL, p.ControlAction.ABANDON) and task_id not in self._held:
                # Not ours (any more): confirm so the coordinator does not wait for us.
                self.client.report(task_id, p.TaskUpdateKind.FINISHED, -1, None, "not running on this worker")
            return
        if action == p.ControlAction.PAUSE:
            rt.ctx.token.pause()
            self._held[task_id] = True
            self.client.report(task_id, p.TaskUpdateKind.PAUSED)
        elif action == p.ControlAction.PLAY:
            rt.ctx.token.resume()
            self._held[task_id] = False
            self.client.report(task_id, p.TaskUpdateKind.RESUMED)
        elif action == p.ControlAction.KILL:
            rt.ctx.token.kill()
            if not rt.handler.blocking and rt.job is not None:
                rt.job.cancel()
            # A blocking function notices the token; _execute reports -1 when it returns.
        elif action == p.ControlAction.ABANDON:
            rt.abandoned = True
            rt.ctx.token.kill()
            if rt.job is not None:
                rt.job.cancel()
            self._finish(rt, -1, None, "abandoned")

    def on_drain(self, message: p.DrainNotice) -> None:
        self._draining = True
        if message.stop:
            log.info("worker %s asked to stop: finishing %d running tasks", self.worker_id, len(self._running))
            self._stop_when_idle = True
            self._check_idle()
        else:
            log.info("worker %s is draining", self.worker_id)

    def on_dropped(self, task_ids: list[int]) -> None:
        for task_id in task_ids:
            self._drop(task_id)

    # -- running ---------------------------------------------------------------------------

    def _drop(self, task_id: int) -> None:
        rt = self._running.pop(task_id, None)
        if rt is not None:
            rt.dropped = True
            rt.ctx.token.kill()
            if rt.job is not None:
                rt.job.cancel()
        self._held.pop(task_id, None)
        self.client.forget_reports(task_id)
        self._check_idle()

    async def _execute(self, rt: _Running) -> None:
        ctx = rt.ctx
        exit_code, result, error = 0, None, None
        loop = asyncio.get_running_loop()

        def pending() -> None:
            self.client.report(ctx.task_id, p.TaskUpdateKind.PENDING)

        try:
            if rt.handler.blocking:
                value = await loop.run_in_executor(self._pool, rt.handler.fn, ctx)
            else:
                value = rt.handler.fn(ctx)
            value = await resolve_layers(value, pending)
            if ctx.token.killed:
                exit_code, error = -1, "killed"
            else:
                result = _result_bytes(value)
        except asyncio.CancelledError:
            if rt.abandoned or rt.dropped or not ctx.token.killed:
                return  # abandoned/dropped (nothing to report) or the worker is shutting down
            exit_code, error = -1, "killed"
        except (TaskKilled, LevelCancelled):
            exit_code, error = -1, "killed"
        except TaskExit as exc:
            exit_code, error = exc.exit_code, exc.error
            result = _result_bytes(exc.result) if exc.result is not None else None
        except Exception as exc:  # noqa: BLE001 - reported as a failed task
            log.info("task %s failed: %s", ctx.task_id, error_text(exc))
            exit_code, error = 1, error_text(exc)
        if rt.abandoned or rt.dropped:
            return
        self._finish(rt, exit_code, result, error)

    def _finish(self, rt: _Running, exit_code: int, result: bytes | None, error: str | None) -> None:
        if rt.finished:
            return
        rt.finished = True
        task_id = rt.ctx.task_id
        if self._running.get(task_id) is rt:
            del self._running[task_id]
        self.completed += 1
        ack = self.client.report(task_id, p.TaskUpdateKind.FINISHED, exit_code, result, error)

        def acknowledged(fut: asyncio.Future[None]) -> None:
            if task_id not in self._running:
                self._held.pop(task_id, None)
            self._check_idle()
            if not fut.cancelled() and fut.exception() is not None and not isinstance(fut.exception(), ClientClosed):
                log.warning("final report of task %s failed: %s", task_id, fut.exception())

        ack.add_done_callback(acknowledged)

    def _check_idle(self) -> None:
        if self._stop_when_idle and not self._running and not self._held and self._stopped is not None:
            self._stopped.set()


def _result_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
