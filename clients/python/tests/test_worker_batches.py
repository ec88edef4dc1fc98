"""The batched worker path (AssignTasks, TaskUpdates): against the real coordinator, and against a
scripted in-process coordinator for what the real one does not do on demand (an old coordinator
without batches, a lost acknowledgement, refusals of chosen reports, a small max_frame)."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import msgpack
import pytest

import tatzelwurm
from tatzelwurm import protocol as p
from tatzelwurm.client import Connection
from tatzelwurm.worker import TaskContext, Worker

from conftest import Coordinator, eventually

K = p.TaskUpdateKind


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Connection, p.Message]]:
    """Every message any client of the test writes, with its connection."""
    frames: list[tuple[Connection, p.Message]] = []
    original = Connection.send

    def record(self: Connection, message: p.Message) -> None:
        original(self, message)
        frames.append((self, message))

    monkeypatch.setattr(Connection, "send", record)
    return frames


def frames_in(http: str) -> int:
    with urllib.request.urlopen(f"{http}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("tatzelwurm_frames_in_total"):
                return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError("no tatzelwurm_frames_in_total in /metrics")


# -- against the real coordinator -----------------------------------------------------------------


async def test_many_tasks_go_through_few_task_updates(tmp_path: Path, sent: list[tuple[Connection, p.Message]],
                                                      unique: str) -> None:
    coord = Coordinator(tmp_path / "data", extra_args=["--http", "0"])
    coord.start()
    tasks = 300

    async def echo(task: TaskContext) -> bytes:
        return task.payload

    try:
        await eventually(lambda: (coord.data / "http").is_file())
        http = (coord.data / "http").read_text().strip()
        async with await tatzelwurm.connect(coord.address, coord.token) as c:
            ids = await c.add_many([tatzelwurm.TaskSpec(str(i).encode(), f"echo-{unique}") for i in range(tasks)])
            before = frames_in(http)
            w = Worker({f"echo-{unique}": echo}, address=coord.address, token=coord.token, slots=50)
            run = asyncio.ensure_future(w.run())
            last = await c.wait(ids[-1])
            worker_conn = w.client.connection
            await w.stop()
            await asyncio.wait_for(run, 10)
            after = frames_in(http)
            for i, tid in enumerate(ids):
                outcome = await c.wait(tid)
                assert outcome.exit_code == 0 and outcome.result == str(i).encode()
            assert last.exit_code == 0
        by_worker = [m for conn, m in sent if conn is worker_conn]
        updates = [m for m in by_worker if isinstance(m, p.TaskUpdates)]
        assert not any(isinstance(m, p.TaskUpdate) for m in by_worker)
        reports = [(r.task_id, r.kind) for m in updates for r in m.reports]
        assert sorted(reports) == sorted([(tid, K.ACCEPTED) for tid in ids] + [(tid, K.FINISHED) for tid in ids])
        assert len(updates) < tasks / 5  # one frame for many tasks, not one per report
        # What the coordinator received over the run (the worker's frames, heartbeats included, and
        # the actioner's one WaitTask): far fewer frames than tasks; one frame per report would be 600.
        assert after - before < tasks / 2
    finally:
        coord.stop()


async def test_refused_reports_of_a_task_updates_fail_alone(coordinator: Coordinator,
                                                            sent: list[tuple[Connection, p.Message]],
                                                            unique: str) -> None:
    release = asyncio.Event()

    async def job(task: TaskContext) -> bytes:
        await release.wait()
        return b"done"

    w = Worker({f"hold-{unique}": job}, address=coordinator.address, token=coordinator.token, slots=1)
    await w.start()
    try:
        async with await tatzelwurm.connect(coordinator.address, coordinator.token) as c:
            tid = await c.add(b"", type=f"hold-{unique}")
            await eventually(lambda: _runs(c, tid))
            assert w.client.connection is not None and w.client.connection.worker_batches
            # Made in one step, so they leave in one TaskUpdates.
            unknown = w.client.report(2**60, K.PENDING)
            illegal = w.client.report(tid, K.ACCEPTED)  # it already runs
            layer = w.client.report(tid, K.PENDING)
            with pytest.raises(p.UnknownTask):
                await unknown
            with pytest.raises(p.IllegalTransition):
                await illegal
            await layer
            frame = next(m for conn, m in sent if isinstance(m, p.TaskUpdates)
                         and any(r.task_id == 2**60 for r in m.reports))
            assert [(r.task_id, r.kind) for r in frame.reports] == [(2**60, K.PENDING), (tid, K.ACCEPTED),
                                                                     (tid, K.PENDING)]
            release.set()
            outcome = await c.wait(tid)
            assert outcome.exit_code == 0 and outcome.result == b"done" and outcome.layers == 1
    finally:
        release.set()
        await w.stop(graceful=False)


async def _runs(c: tatzelwurm.Client, tid: int) -> bool:
    return p.TaskState((await c.show(tid)).state) == p.TaskState.RUN


async def test_report_batches_stay_within_a_small_max_frame(tmp_path: Path, sent: list[tuple[Connection, p.Message]],
                                                            unique: str) -> None:
    coord = Coordinator(tmp_path / "data", extra_args=["--max-frame", "4096"])
    coord.start()

    async def big(task: TaskContext) -> bytes:
        return b"r" * 900

    try:
        async with await tatzelwurm.connect(coord.address, coord.token) as c:
            ids = await c.add_many([tatzelwurm.TaskSpec(b"", f"big-{unique}") for _ in range(40)])
            w = Worker({f"big-{unique}": big}, address=coord.address, token=coord.token, slots=40)
            await w.start()
            try:
                for tid in ids:
                    assert (await c.wait(tid)).result == b"r" * 900
            finally:
                await w.stop(graceful=False)
        updates = [m for _, m in sent if isinstance(m, p.TaskUpdates)]
        assert all(len(p.encode_body(m)) <= 4096 for m in updates)
        assert max(len(m.reports) for m in updates) > 1
    finally:
        coord.stop()


# -- against a scripted coordinator ----------------------------------------------------------------


class ScriptedCoordinator:
    """Just enough of a coordinator to script edge cases: it answers the handshake, heartbeats and
    registrations (``batches=None`` answers like a coordinator that predates them: a two-field
    ``WorkerRegistered``), records every message it receives, and answers each ``TaskUpdate`` /
    ``TaskUpdates`` through ``answer`` (default: every report applied)."""

    def __init__(self, batches: bool | None, max_frame: int = p.DEFAULT_MAX_FRAME) -> None:
        self.batches = batches
        self.max_frame = max_frame
        self.received: asyncio.Queue[p.Message] = asyncio.Queue()
        # Returns the reply, or None to drop the connection without one (a lost acknowledgement).
        self.answer: Callable[[p.Request], p.Message | None] = self.apply_all
        self.hold_registration: asyncio.Event | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.address = ""

    async def __aenter__(self) -> ScriptedCoordinator:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.address = "127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()
        if self.writer is not None:
            self.writer.close()

    @staticmethod
    def apply_all(request: p.Request) -> p.Message:
        if isinstance(request, p.TaskUpdates):
            return p.TaskUpdatesResult(request.request_id, [])
        return p.Ok(request.request_id)

    async def next(self, kind: type[p.Message]) -> Any:
        """The next received message of that type (the others before it are skipped)."""
        while True:
            message = await asyncio.wait_for(self.received.get(), 10)
            if isinstance(message, kind):
                return message

    def push(self, message: p.Message) -> None:
        assert self.writer is not None
        self.writer.write(p.encode_frame(message))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def read() -> p.Message:
            header = await reader.readexactly(p.HEADER_SIZE)
            return p.decode_body(await reader.readexactly(int.from_bytes(header, "big")))

        self.writer = writer
        try:
            assert isinstance(await read(), p.Hello)
            writer.write(p.encode_frame(p.Welcome(1, "scripted", 1000, 60000, self.max_frame)))
            while True:
                message = await read()
                self.received.put_nowait(message)
                if isinstance(message, p.Heartbeat):
                    writer.write(p.encode_frame(p.HeartbeatAck(message.sequence)))
                elif isinstance(message, p.RegisterWorker):
                    if self.hold_registration is not None:
                        await self.hold_registration.wait()
                    if self.batches is None:
                        body = msgpack.packb([p.WorkerRegistered.CODE, [message.request_id, []]])
                        writer.write(len(body).to_bytes(4, "big") + body)
                    else:
                        writer.write(p.encode_frame(p.WorkerRegistered(message.request_id, [], self.batches)))
                elif isinstance(message, (p.TaskUpdate, p.TaskUpdates)):
                    reply = self.answer(message)
                    if reply is None:
                        writer.close()
                        return
                    writer.write(p.encode_frame(reply))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


class Sink:
    """A worker-side owner that holds nothing and records the tasks it is given."""

    def __init__(self) -> None:
        self.assigned: list[int] = []
        self.then: Callable[[p.AssignTask], Any] = lambda message: None

    def on_assign(self, message: p.AssignTask) -> None:
        self.assigned.append(message.task_id)
        self.then(message)

    def on_control(self, message: p.ControlTask) -> None:
        pass

    def on_drain(self, message: p.DrainNotice) -> None:
        pass

    def on_dropped(self, task_ids: list[int]) -> None:
        pass

    def held_tasks(self) -> list[p.HeldTask]:
        return []


@pytest.fixture
async def scripted_worker() -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[ScriptedCoordinator, tatzelwurm.Client]] = []

    async def make(batches: bool | None, **kw: Any) -> tuple[ScriptedCoordinator, tatzelwurm.Client, Sink]:
        coord = ScriptedCoordinator(batches, **kw)
        await coord.__aenter__()
        client = await tatzelwurm.connect(coord.address, "token", role="worker", reconnect_timeout=None)
        made.append((coord, client))
        sink = Sink()
        await client.register_worker("w", "scripted", ["t"], 10, sink)
        register = await coord.next(p.RegisterWorker)
        assert register.batches
        return coord, client, sink

    yield make
    for coord, client in made:
        await client.close()
        await coord.__aexit__()


async def test_assign_tasks_are_taken_in_order_and_reports_share_a_frame(scripted_worker: Any) -> None:
    coord, client, sink = await scripted_worker(True)
    sink.then = lambda message: client.report(message.task_id, K.ACCEPTED)
    coord.push(p.AssignTasks([p.AssignTask(i, "t", b"", 1, False) for i in (3, 1, 2)]))
    frame = await coord.next(p.TaskUpdates)
    assert sink.assigned == [3, 1, 2]
    assert [(r.task_id, r.kind) for r in frame.reports] == [(3, K.ACCEPTED), (1, K.ACCEPTED), (2, K.ACCEPTED)]


async def test_without_batches_each_report_is_a_task_update(scripted_worker: Any) -> None:
    coord, client, sink = await scripted_worker(None)
    assert client.connection is not None and not client.connection.worker_batches
    coord.push(p.AssignTask(7, "t", b"", 1, False))
    coord.push(p.AssignTask(8, "t", b"", 1, False))
    first = client.report(7, K.ACCEPTED)
    second = client.report(7, K.FINISHED, 0, b"ok")
    third = client.report(8, K.REJECTED)
    await asyncio.gather(first, second, third)
    updates = [await coord.next(p.TaskUpdate) for _ in range(3)]
    assert [(u.task_id, u.kind, u.result) for u in updates] == [(7, K.ACCEPTED, None), (7, K.FINISHED, b"ok"),
                                                                (8, K.REJECTED, None)]
    assert sink.assigned == [7, 8]
    coord.answer = lambda request: p.Error(request.request_id, p.ErrorCode.ILLEGAL_TRANSITION, "not yours")
    with pytest.raises(p.IllegalTransition):
        await client.report(9, K.ACCEPTED)


async def test_per_item_and_whole_frame_refusals(scripted_worker: Any) -> None:
    coord, client, _ = await scripted_worker(True)
    coord.answer = lambda request: p.TaskUpdatesResult(request.request_id, [
        p.ReportFailure(1, p.ErrorCode.ILLEGAL_TRANSITION, "task 2 is terminated"),
        p.ReportFailure(2, p.ErrorCode.UNKNOWN_TASK, "no task 3"),
    ])
    applied, illegal, unknown = client.report(1, K.ACCEPTED), client.report(2, K.ACCEPTED), client.report(3, K.FINISHED)
    await applied
    with pytest.raises(p.IllegalTransition, match="task 2 is terminated"):
        await illegal
    with pytest.raises(p.UnknownTask, match="no task 3"):
        await unknown
    assert client.unacknowledged_reports() == []


async def test_reports_the_store_could_not_persist_are_sent_again_in_order(
        scripted_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tatzelwurm.client, "STORE_RETRY_SECONDS", 0.05)
    coord, client, _ = await scripted_worker(True)
    failing = True

    def answer(request: p.Request) -> p.Message:
        assert isinstance(request, p.TaskUpdates)
        if not failing:
            return ScriptedCoordinator.apply_all(request)
        if len(request.reports) == 1:
            return p.Error(request.request_id, p.ErrorCode.STORE_UNAVAILABLE, "disk full")
        # The first report applied, the store failing for the rest.
        return p.TaskUpdatesResult(request.request_id, [
            p.ReportFailure(i, p.ErrorCode.STORE_UNAVAILABLE, "disk full") for i in range(1, len(request.reports))])

    coord.answer = answer
    futures = [client.report(4, K.ACCEPTED), client.report(4, K.FINISHED, 0, b"r"), client.report(5, K.ACCEPTED)]
    frames = [[(r.task_id, r.kind) for r in (await coord.next(p.TaskUpdates)).reports] for _ in range(3)]
    assert frames == [[(4, K.ACCEPTED), (4, K.FINISHED), (5, K.ACCEPTED)],
                      [(4, K.FINISHED), (5, K.ACCEPTED)],
                      [(5, K.ACCEPTED)]]  # refused as a whole frame: kept, not failed
    assert futures[0].done() and futures[1].done() and not futures[2].done()
    failing = False
    await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert client.unacknowledged_reports() == []


async def test_unacknowledged_reports_are_resent_in_order_after_a_reconnect(scripted_worker: Any) -> None:
    coord, client, _ = await scripted_worker(True)
    coord.hold_registration = asyncio.Event()
    coord.answer = lambda request: None  # applied, but the connection drops before the reply
    accepted = client.report(5, K.ACCEPTED)
    first = await coord.next(p.TaskUpdates)
    assert [(r.task_id, r.kind) for r in first.reports] == [(5, K.ACCEPTED)]
    await coord.next(p.RegisterWorker)
    # Reported while the session is being restored: goes out after the re-sent accepted.
    finished = client.report(5, K.FINISHED, 0, b"r")
    other = client.report(6, K.ACCEPTED)
    coord.answer = lambda request: p.TaskUpdatesResult(request.request_id, [
        p.ReportFailure(0, p.ErrorCode.ILLEGAL_TRANSITION, "task 5 runs already"),
        p.ReportFailure(2, p.ErrorCode.ILLEGAL_TRANSITION, "task 6 is terminated"),
    ])
    coord.hold_registration.set()
    again = await coord.next(p.TaskUpdates)
    assert [(r.task_id, r.kind) for r in again.reports] == [(5, K.ACCEPTED), (5, K.FINISHED), (6, K.ACCEPTED)]
    await accepted  # refused as illegal after the re-send: it was applied before the drop
    await finished
    with pytest.raises(p.IllegalTransition):
        await other  # never sent before: a refusal is a refusal
    assert client.unacknowledged_reports() == []


async def test_report_frames_respect_the_count_limit_and_max_frame(scripted_worker: Any) -> None:
    max_frame = 65536
    coord, client, _ = await scripted_worker(True, max_frame=max_frame)
    pending = p.MAX_REPORTS_PER_TASK_UPDATES + 10  # small reports: the count limit closes the first frame
    futures = [client.report(i, K.PENDING) for i in range(pending)]
    futures += [client.report(i, K.FINISHED, 0, bytes(1000)) for i in range(100)]  # 100 kB: over max_frame
    await asyncio.gather(*futures)
    frames: list[p.TaskUpdates] = []
    while sum(len(f.reports) for f in frames) < len(futures):
        frames.append(await coord.next(p.TaskUpdates))
    assert len(frames[0].reports) == p.MAX_REPORTS_PER_TASK_UPDATES
    assert len(frames) >= 3 and all(len(p.encode_body(f)) <= max_frame for f in frames)
    sent = [(r.task_id, r.kind) for f in frames for r in f.reports]
    assert sent == [(i, K.PENDING) for i in range(pending)] + [(i, K.FINISHED) for i in range(100)]


async def test_a_finished_report_over_max_frame_goes_out_as_a_failure_naming_the_sizes(scripted_worker: Any) -> None:
    coord, client, _ = await scripted_worker(True, max_frame=2048)
    small = client.report(1, K.ACCEPTED)
    too_big = client.report(1, K.FINISHED, 0, bytes(4096))
    after = client.report(2, K.ACCEPTED)
    await asyncio.gather(small, too_big, after)
    reports: list[p.TaskReport] = []
    while len(reports) < 3:
        frame = await coord.next(p.TaskUpdates)
        assert len(p.encode_body(frame)) <= 2048
        reports += frame.reports
    assert [(r.task_id, r.kind) for r in reports] == [(1, K.ACCEPTED), (1, K.FINISHED), (2, K.ACCEPTED)]
    finished = reports[1]
    assert finished.exit_code == 1 and finished.result is None
    assert finished.error == "result of 4,096 bytes exceeds the coordinator's max_frame of 2,048 bytes"


async def test_a_report_whose_caller_stopped_waiting_is_still_delivered(scripted_worker: Any) -> None:
    coord, client, _ = await scripted_worker(True)
    fut = client.report(7, K.FINISHED, 0, b"r")
    fut.cancel()  # e.g. asyncio.wait_for timing out
    frame = await coord.next(p.TaskUpdates)
    assert [(r.task_id, r.kind) for r in frame.reports] == [(7, K.FINISHED)]
    await eventually(lambda: client.unacknowledged_reports() == [])


async def test_a_report_that_cannot_be_encoded_fails_alone(scripted_worker: Any) -> None:
    coord, client, _ = await scripted_worker(True)
    with pytest.raises(p.InvalidRequest, match="cannot be encoded"):
        await client.report(7, K.FINISHED, 2**70)
    await client.report(8, K.ACCEPTED)
    frame = await coord.next(p.TaskUpdates)
    assert [(r.task_id, r.kind) for r in frame.reports] == [(8, K.ACCEPTED)]


async def test_a_report_refused_behind_one_waiting_for_its_retry_goes_again_after_it(
        scripted_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tatzelwurm.client, "STORE_RETRY_SECONDS", 0.05)
    coord, client, _ = await scripted_worker(True)
    replies = 0

    def answer(request: p.Request) -> p.Message:
        nonlocal replies
        replies += 1
        if replies > 1:
            return ScriptedCoordinator.apply_all(request)
        # The store failed for the pause and had recovered for the resume, which then finds the task
        # running: refused only because the pause is not applied yet.
        return p.TaskUpdatesResult(request.request_id, [
            p.ReportFailure(0, p.ErrorCode.STORE_UNAVAILABLE, "disk full"),
            p.ReportFailure(1, p.ErrorCode.ILLEGAL_TRANSITION, "task 4 is not paused")])

    coord.answer = answer
    futures = [client.report(4, K.PAUSED), client.report(4, K.RESUMED)]
    for _ in range(2):
        frame = await coord.next(p.TaskUpdates)
        assert [(r.task_id, r.kind) for r in frame.reports] == [(4, K.PAUSED), (4, K.RESUMED)]
    await asyncio.wait_for(asyncio.gather(*futures), 10)


async def test_reports_stuck_behind_a_coordinator_that_stopped_reading_go_to_the_next_one() -> None:
    connections = 0
    handlers: list[asyncio.Task[Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]

        async def read() -> p.Message:
            header = await reader.readexactly(p.HEADER_SIZE)
            return p.decode_body(await reader.readexactly(int.from_bytes(header, "big")))

        try:
            await read()
            writer.write(p.encode_frame(p.Welcome(1, "scripted", 60000, 600000, 64 << 20)))
            if first:
                await asyncio.Event().wait()  # hung: never reads again
            while True:
                message = await read()
                if isinstance(message, p.TaskUpdate):
                    writer.write(p.encode_frame(p.Ok(message.request_id)))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    address = "127.0.0.1:%d" % server.sockets[0].getsockname()[1]
    client = await tatzelwurm.connect(address, "token", role="worker", reconnect_timeout=None)
    try:
        futures = [client.report(i, K.FINISHED, 0, bytes(4_000_000)) for i in range(10)]
        conn = client.connection
        assert conn is not None
        # The socket buffers are full: the sender waits in drain() for a peer that does not read.
        await eventually(lambda: conn._writer.transport.get_write_buffer_size() > 0)
        conn.abort(tatzelwurm.ConnectionLost("coordinator stopped answering heartbeats"))  # the watchdog's way
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert connections == 2 and client.unacknowledged_reports() == []
    finally:
        await client.close()
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
