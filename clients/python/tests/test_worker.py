"""Worker runner against a real coordinator: handlers, heartbeats, control, drain, reclaim."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator

import msgpack
import pytest

import tatzelwurm
from tatzelwurm import protocol as p
from tatzelwurm.worker import TaskContext, TaskExit, Worker

from conftest import LEASE_MS, Coordinator, eventually


@pytest.fixture
async def worker_factory(coordinator: Coordinator) -> AsyncIterator[Any]:
    made: list[Worker] = []

    async def make(handlers: dict[str, Any], **kw: Any) -> Worker:
        w = Worker(handlers, address=coordinator.address, token=coordinator.token, **kw)
        await w.start()
        made.append(w)
        return w

    yield make
    for w in made:
        await w.stop(graceful=False)


async def state_of(client: tatzelwurm.Client, task_id: int) -> p.TaskState:
    return p.TaskState((await client.show(task_id)).state)


async def test_async_and_blocking_handlers(client: tatzelwurm.Client, worker_factory: Any, unique: str) -> None:
    threads: dict[str, str] = {}

    async def add(task: TaskContext) -> int:
        threads["async"] = threading.current_thread().name
        a, b = task.data()
        await asyncio.sleep(0.01)
        return a + b

    def mul(task: TaskContext) -> bytes:
        threads["blocking"] = threading.current_thread().name
        a, b = task.data()
        time.sleep(0.05)
        return str(a * b).encode()

    def fails(task: TaskContext) -> None:
        raise ValueError("boom")

    async def exits(task: TaskContext) -> None:
        raise TaskExit(3, error="three")

    await worker_factory({f"add-{unique}": add, f"mul-{unique}": mul, f"fail-{unique}": fails,
                          f"exit-{unique}": exits}, slots=4)
    t_add = await client.add([2, 3], type=f"add-{unique}")
    t_mul = await client.add([4, 5], type=f"mul-{unique}")
    t_fail = await client.add(b"", type=f"fail-{unique}")
    t_exit = await client.add(b"", type=f"exit-{unique}")
    o = await client.wait(t_add)
    assert o.exit_code == 0 and msgpack.unpackb(o.result) == 5
    o = await client.wait(t_mul)
    assert o.exit_code == 0 and o.result == b"20"
    o = await client.wait(t_fail)
    assert o.exit_code == 1 and o.error == "ValueError: boom"
    o = await client.wait(t_exit)
    assert o.exit_code == 3 and o.error == "three"
    assert threads["async"] == "MainThread" and threads["blocking"].startswith("tatzelwurm-task")


async def test_outcome_over_max_frame_fails_the_task_and_the_worker_goes_on(tmp_path: Path, unique: str) -> None:
    # Refused unsent, such an outcome used to be dropped and its task to stay running for ever.
    coord = Coordinator(tmp_path / "data", extra_args=["--max-frame", "16384"])
    coord.start()
    try:
        async def big_result(task: TaskContext) -> bytes:
            return b"r" * 20_000

        async def big_error(task: TaskContext) -> None:
            raise TaskExit(3, error="e" * 20_000)

        def raises(task: TaskContext) -> None:
            raise ValueError("x" * 20_000)

        async def small(task: TaskContext) -> bytes:
            return b"ok"

        worker = Worker({"result": big_result, "error": big_error, "raise": raises, "small": small}, slots=1,
                        address=coord.address, token=coord.token)
        await worker.start()
        disconnects: list[BaseException] = []
        worker.client.on_disconnect(disconnects.append)
        try:
            async with await tatzelwurm.connect(coord.address, coord.token) as c:
                limit = "the coordinator's max_frame of 16,384 bytes"
                o = await asyncio.wait_for(c.wait(await c.add(type="result")), 10)
                assert (o.exit_code, o.result, o.error) == (1, None, f"result of 20,000 bytes exceeds {limit}")
                o = await asyncio.wait_for(c.wait(await c.add(type="error")), 10)
                assert (o.exit_code, o.error) == (3, f"error text of 20,000 bytes exceeds {limit}; "
                                                     "the error text began: " + "e" * 1000)
                o = await asyncio.wait_for(c.wait(await c.add(type="raise")), 10)
                assert (o.exit_code, o.error) == (1, f"error text of 20,012 bytes exceeds {limit}; "
                                                     "the error text began: ValueError: " + "x" * 988)
                o = await asyncio.wait_for(c.wait(await c.add(type="small")), 10)
                assert (o.exit_code, o.result) == (0, b"ok")
            assert disconnects == []
        finally:
            await worker.stop(graceful=False)
    finally:
        coord.stop()


async def test_slots_limit_concurrency(client: tatzelwurm.Client, worker_factory: Any, unique: str) -> None:
    running = 0
    peak = 0

    async def job(task: TaskContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    await worker_factory({f"job-{unique}": job}, slots=2)
    ids = await client.add_many([tatzelwurm.TaskSpec(b"", f"job-{unique}") for _ in range(8)])
    for tid in ids:
        assert (await client.wait(tid)).exit_code == 0
    assert peak == 2


async def test_heartbeats_continue_during_blocking_work(client: tatzelwurm.Client, worker_factory: Any,
                                                        unique: str) -> None:
    lease = LEASE_MS / 1000

    def long_blocking(task: TaskContext) -> str:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:  # hold the GIL-bound thread busy for a while ...
            sum(range(1000))
        time.sleep(2.5 * lease)  # ... then block well past the lease
        return "survived"

    w = await worker_factory({f"long-{unique}": long_blocking}, slots=1)
    tid = await client.add(b"", type=f"long-{unique}")
    await eventually(lambda: _is(client, tid, p.TaskState.RUN))
    states = set()
    deadline = time.monotonic() + 2 * lease
    while time.monotonic() < deadline:
        for info in await client.workers():
            if info.worker_id == w.worker_id:
                states.add(info.state)
        await asyncio.sleep(0.1)
    assert states == {"connected"}
    outcome = await client.wait(tid)
    assert outcome.exit_code == 0 and msgpack.unpackb(outcome.result) == "survived"
    info = await client.show(tid)
    assert info.attempts == 0  # the coordinator counts runs lost with their worker: none


async def _is(client: tatzelwurm.Client, tid: int, state: p.TaskState) -> bool:
    return await state_of(client, tid) == state


async def test_kill_running_coroutine(client: tatzelwurm.Client, worker_factory: Any, unique: str) -> None:
    cancelled = asyncio.Event()

    async def forever(task: TaskContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await worker_factory({f"forever-{unique}": forever})
    tid = await client.add(b"", type=f"forever-{unique}")
    await eventually(lambda: _is(client, tid, p.TaskState.RUN))
    t0 = time.monotonic()
    await client.kill(tid)
    outcome = await asyncio.wait_for(client.wait(tid), 10)
    assert outcome.exit_code == -1 and cancelled.is_set()
    assert time.monotonic() - t0 < 5


async def test_kill_running_blocking_function(client: tatzelwurm.Client, worker_factory: Any, unique: str) -> None:
    saw_kill = threading.Event()

    def polling(task: TaskContext) -> None:
        while True:
            if task.killed:
                saw_kill.set()
            task.check()  # raises TaskKilled after the kill
            time.sleep(0.02)

    await worker_factory({f"poll-{unique}": polling})
    tid = await client.add(b"", type=f"poll-{unique}")
    await eventually(lambda: _is(client, tid, p.TaskState.RUN))
    await client.kill(tid)
    outcome = await asyncio.wait_for(client.wait(tid), 10)
    assert outcome.exit_code == -1 and saw_kill.is_set()


async def test_pause_and_play_a_running_task(client: tatzelwurm.Client, worker_factory: Any, unique: str) -> None:
    progress: list[int] = []
    paused_seen = threading.Event()

    def steps(task: TaskContext) -> int:
        for i in range(40):
            if task.paused:
                paused_seen.set()
            task.wait_if_paused()
            task.check()
            progress.append(i)
            time.sleep(0.02)
        return len(progress)

    async def co_steps(task: TaskContext) -> str:
        for _ in range(40):
            await task.checkpoint()
            await asyncio.sleep(0.02)
        return "co done"

    await worker_factory({f"steps-{unique}": steps, f"co-{unique}": co_steps}, slots=2)
    tid = await client.add(b"", type=f"steps-{unique}")
    cid = await client.add(b"", type=f"co-{unique}")
    await eventually(lambda: _is(client, tid, p.TaskState.RUN))
    await eventually(lambda: _is(client, cid, p.TaskState.RUN))
    await client.pause(tid, cid)
    await eventually(lambda: _is(client, tid, p.TaskState.PAUSE))
    await eventually(lambda: _is(client, cid, p.TaskState.PAUSE))
    assert await eventually(lambda: paused_seen.is_set())
    frozen = len(progress)
    await asyncio.sleep(0.3)
    assert len(progress) <= frozen + 1  # the function honours the pause
    await client.play(tid, cid)
    assert (await client.wait(tid)).exit_code == 0
    assert msgpack.unpackb((await client.wait(cid)).result) == "co done"
    assert len(progress) == 40


async def test_drain_and_stop(client: tatzelwurm.Client, coordinator: Coordinator, unique: str) -> None:
    release = asyncio.Event()

    async def job(task: TaskContext) -> str:
        await release.wait()
        return "finished before stopping"

    w = Worker({f"drain-{unique}": job}, address=coordinator.address, token=coordinator.token)
    run = asyncio.ensure_future(w.run())
    tid = await client.add(b"", type=f"drain-{unique}")
    await eventually(lambda: _is(client, tid, p.TaskState.RUN))
    await client.drain_worker(w.worker_id, stop=True)
    later = await client.add(b"", type=f"drain-{unique}")
    await asyncio.sleep(0.3)
    assert not run.done()
    assert await state_of(client, later) == p.TaskState.READY  # no new tasks while draining
    release.set()
    await asyncio.wait_for(run, 10)  # run() returns once the running task is reported
    outcome = await client.wait(tid)
    assert outcome.exit_code == 0
    assert await state_of(client, later) == p.TaskState.READY
    await client.kill(later)


async def test_reclaim_after_connection_drop_and_resend_of_reports(client: tatzelwurm.Client, worker_factory: Any,
                                                                    unique: str) -> None:
    """The connection drops; while the worker is cut off, its task finishes; after reconnecting it
    re-registers with the task as held (reclaim, nothing re-run) and re-sends the final report."""
    release = threading.Event()
    runs: list[int] = []

    def job(task: TaskContext) -> str:
        runs.append(task.attempt)
        release.wait(30)
        return "kept"

    w = await worker_factory({f"reclaim-{unique}": job})
    tid = await client.add(b"", type=f"reclaim-{unique}", policy=p.DeliveryPolicy.AT_LEAST_ONCE)
    await eventually(lambda: _is(client, tid, p.TaskState.RUN))

    cut_off = True
    original = w.client._resolve

    def resolve() -> Any:
        if cut_off:
            raise OSError("simulated network outage")
        return original()

    w.client._resolve = resolve
    w.client.connection.abort(tatzelwurm.ConnectionLost("simulated drop"))  # type: ignore[union-attr]
    await asyncio.sleep(0.1)
    release.set()  # finishes while disconnected: the report cannot be acknowledged
    await eventually(lambda: w.client.unacknowledged_reports() == [tid])
    assert await state_of(client, tid) == p.TaskState.RUN
    cut_off = False
    outcome = await asyncio.wait_for(client.wait(tid), 15)
    assert outcome.exit_code == 0 and msgpack.unpackb(outcome.result) == "kept"
    assert runs == [1]
    info = await client.show(tid)
    assert info.attempts == 0  # no run was lost: reclaimed, not re-queued


async def test_reclaim_after_coordinator_restart(private_coordinator: Coordinator, unique: str) -> None:
    coord = private_coordinator
    release = threading.Event()
    runs: list[int] = []

    def job(task: TaskContext) -> str:
        runs.append(task.attempt)
        release.wait(60)
        return "survived the restart"

    w = Worker({f"restart-{unique}": job}, data_dir=str(coord.data))
    await w.start()
    try:
        async with await tatzelwurm.connect(data_dir=coord.data) as c:
            tid = await c.add(b"", type=f"restart-{unique}", policy=p.DeliveryPolicy.AT_LEAST_ONCE)
            await eventually(lambda: _is(c, tid, p.TaskState.RUN))
        coord.restart(hard=True)  # kill -9, then start on a new port (same data dir)
        async with await tatzelwurm.connect(data_dir=coord.data) as c:
            await c.show(tid)  # the default store is durable: the task survived the kill -9
            # the worker follows the coordinator to its new port via <data>/address and reclaims
            await eventually(lambda: _worker_connected(c, w.worker_id), timeout=20)
            assert await state_of(c, tid) == p.TaskState.RUN
            release.set()
            outcome = await asyncio.wait_for(c.wait(tid), 20)
            assert outcome.exit_code == 0 and msgpack.unpackb(outcome.result) == "survived the restart"
            assert runs == [1] and (await c.show(tid)).attempts == 0
    finally:
        release.set()
        await w.stop(graceful=False)


async def test_worker_follows_a_restarted_coordinator_to_its_new_port(private_coordinator: Coordinator,
                                                                      unique: str) -> None:
    """Whatever the store: after kill -9 and a restart on a new port, the worker finds the new
    address in <data>/address, re-registers with its held task, and stops the held tasks the
    coordinator answers with ``drop`` (the memory store forgets them)."""
    coord = private_coordinator
    token_killed = threading.Event()

    def job(task: TaskContext) -> None:
        while not task.killed:
            time.sleep(0.02)
        token_killed.set()

    w = Worker({f"follow-{unique}": job}, data_dir=str(coord.data))
    await w.start()
    try:
        async with await tatzelwurm.connect(data_dir=coord.data) as c:
            tid = await c.add(b"", type=f"follow-{unique}")
            await eventually(lambda: _is(c, tid, p.TaskState.RUN))
        old = coord.address
        coord.restart(hard=True)
        assert coord.address != old
        async with await tatzelwurm.connect(data_dir=coord.data) as c:
            await eventually(lambda: _worker_connected(c, w.worker_id), timeout=20)
            try:
                info = await c.show(tid)
            except tatzelwurm.UnknownTask:
                info = None
            if info is None:  # forgotten by the coordinator: the worker must drop it silently
                await eventually(lambda: token_killed.is_set())
                assert w.running == {} and w.held_tasks() == []
            else:
                assert info.state == p.TaskState.RUN and tid in w.running
                await c.kill(tid)
                assert (await asyncio.wait_for(c.wait(tid), 10)).exit_code == -1
    finally:
        await w.stop(graceful=False)


async def _worker_connected(c: tatzelwurm.Client, worker_id: str) -> bool:
    return any(i.worker_id == worker_id and i.state == "connected" for i in await c.workers())


async def test_abandon_when_a_blocking_function_ignores_the_kill(tmp_path: Path, unique: str) -> None:
    coord = Coordinator(tmp_path / "data", extra_args=["--kill-timeout", "500ms"])
    coord.start()
    stubborn_done = threading.Event()

    def stubborn(task: TaskContext) -> str:
        time.sleep(3)  # never looks at its token
        stubborn_done.set()
        return "too late"

    w = Worker({f"stubborn-{unique}": stubborn}, address=coord.address, token=coord.token)
    await w.start()
    try:
        async with await tatzelwurm.connect(coord.address, coord.token) as c:
            tid = await c.add(b"", type=f"stubborn-{unique}")
            await eventually(lambda: _is(c, tid, p.TaskState.RUN))
            await c.kill(tid)
            outcome = await asyncio.wait_for(c.wait(tid), 10)
            assert outcome.exit_code == -1
            assert not stubborn_done.is_set()  # abandoned, not waited for
            assert w.running == {}
    finally:
        await w.stop(graceful=False)
        coord.stop()


async def test_silent_coordinator_is_detected_and_the_worker_reconnects(private_coordinator: Coordinator,
                                                                        unique: str) -> None:
    """SIGSTOP the coordinator: the worker notices the missing heartbeat acks within the lease,
    drops the connection and, once the coordinator runs again, reconnects and reclaims."""
    import signal

    coord = private_coordinator
    release = threading.Event()

    def job(task: TaskContext) -> str:
        release.wait(60)
        return "kept through the freeze"

    w = Worker({f"freeze-{unique}": job}, data_dir=str(coord.data))
    await w.start()
    lost: list[BaseException] = []
    w.client.on_disconnect(lost.append)
    try:
        async with await tatzelwurm.connect(data_dir=coord.data) as c:
            tid = await c.add(b"", type=f"freeze-{unique}", policy=p.DeliveryPolicy.AT_LEAST_ONCE)
            await eventually(lambda: _is(c, tid, p.TaskState.RUN))
        assert coord.proc is not None
        coord.proc.send_signal(signal.SIGSTOP)
        try:
            await eventually(lambda: lost, timeout=3 * LEASE_MS / 1000 + 2)
        finally:
            coord.proc.send_signal(signal.SIGCONT)
        assert "heartbeat" in str(lost[0])
        release.set()
        async with await tatzelwurm.connect(data_dir=coord.data) as c:
            outcome = await asyncio.wait_for(c.wait(tid), 30)
            assert outcome.exit_code == 0 and msgpack.unpackb(outcome.result) == "kept through the freeze"
    finally:
        release.set()
        await w.stop(graceful=False)
