"""asyncio client: connection, reconnection, actioner operations, RPC and broadcast.

One :class:`Client` is one logical session with the coordinator. It owns at most one TCP
connection at a time (:class:`Connection`) and, when ``reconnect=True`` (the default), replaces a
lost connection with backoff, re-resolving the address each time (a restarted coordinator on port
0 writes a new ``<data>/address``). After reconnecting it restores, in this order, the worker
registration (with the tasks it holds, so it reclaims them), the unacknowledged task reports,
its RPC identifiers, its broadcast subscriptions and its task watch; outstanding ``WaitTask``
requests are re-sent. Only then are new requests let through.

All methods must be called on the loop the client was connected on.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import heapq
import inspect
import itertools
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Protocol, Sequence, TypeVar

import msgpack

from . import protocol as p
from ._outcome import CANCELLED_TEXT, LevelCancelled, error_text, resolve_layers
from .config import Endpoint, resolve_endpoint
from .protocol import (
    ConnectionLost,
    ControlResult,
    DeliveryPolicy,
    Filter,
    FilterKind,
    TaskAction,
    TaskInfo,
    TaskOutcome,
    TaskState,
    TatzelwurmError,
)

__all__ = [
    "Client",
    "Connection",
    "ClientClosed",
    "RemoteError",
    "connect",
    "TaskSink",
    "Endpoint",
]

log = logging.getLogger("tatzelwurm.client")

_R = TypeVar("_R", bound=p.Reply)

PushHandler = Callable[["Connection", p.Message], None]


class ClientClosed(ConnectionLost):
    """The client was closed; no further requests are possible."""


class RemoteError(TatzelwurmError):
    """A task terminated with a non-zero exit code, or an RPC handler failed: carries the text."""

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


@dataclass
class _Pending:
    future: asyncio.Future[p.Reply]
    on_layer: Callable[[p.Reply], None] | None


class Connection:
    """One TCP connection after a successful handshake (docs/protocol.md §1–§3).

    Replies are matched to requests by ``request_id``; layer notices (``TaskLayer``,
    ``RpcLayer``) go to the request's ``on_layer`` callback; everything else is a push and goes to
    ``on_push``, called synchronously from the read loop, so pushes are seen in wire order.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, welcome: p.Welcome,
                 endpoint: Endpoint, on_push: PushHandler) -> None:
        self.welcome = welcome
        self.endpoint = endpoint
        # Set by the worker registration: the coordinator takes TaskUpdates on this connection.
        self.worker_batches = False
        self._reader = reader
        self._writer = writer
        self._on_push = on_push
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()
        self.last_rx = self._loop.time()
        self._closed: asyncio.Future[BaseException] = self._loop.create_future()
        self._fatal: TatzelwurmError | None = None
        # Frames we receive may be as large as the coordinator allows for itself; be generous.
        self._max_rx = max(welcome.max_frame, p.DEFAULT_MAX_FRAME) * 4
        self._read_task = self._loop.create_task(self._read_loop(), name=f"tatzelwurm-read-{endpoint}")

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, endpoint: Endpoint, role: str, client_name: str, on_push: PushHandler,
                   timeout: float = 10.0) -> Connection:
        """Connect, send ``Hello`` and wait for ``Welcome``; a refusal raises its typed error."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(endpoint.host, endpoint.port), timeout)
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(p.encode_frame(p.Hello(p.PROTOCOL_VERSION, role, endpoint.token, client_name)))
            first = await asyncio.wait_for(_read_frame(reader, p.DEFAULT_MAX_FRAME), timeout)
        except BaseException:
            writer.close()
            raise
        if isinstance(first, p.Error):
            writer.close()
            raise first.exception()
        if not isinstance(first, p.Welcome):
            writer.close()
            raise p.ProtocolError(f"expected Welcome, got {type(first).__name__}", code=p.ErrorCode.HANDSHAKE_REQUIRED)
        return cls(reader, writer, first, endpoint, on_push)

    # -- state -------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> BaseException:
        """Wait until the connection is gone; returns the reason."""
        return await asyncio.shield(self._closed)

    def abort(self, reason: BaseException | None = None, *, flush: bool = False) -> None:
        """Close now; every outstanding request fails with :class:`ConnectionLost`. Unsent bytes are
        dropped unless ``flush``: a peer that stopped reading would otherwise hold the socket open."""
        if self._closed.done():
            return
        reason = reason or ConnectionLost("connection closed")
        self._closed.set_result(reason)
        if flush:
            self._writer.close()
        else:
            self._writer.transport.abort()
        if asyncio.current_task() is not self._read_task:
            self._read_task.cancel()
        lost = reason if isinstance(reason, ConnectionLost) else ConnectionLost(f"connection lost: {reason}")
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(lost)

    async def close(self) -> None:
        self.abort(ConnectionLost("connection closed by the client"), flush=True)
        try:
            await self._writer.wait_closed()
        except (OSError, asyncio.CancelledError):
            pass

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: p.Message) -> None:
        """Write one frame (no reply expected, or the caller tracks it). A message beyond the
        coordinator's ``max_frame`` raises :class:`~tatzelwurm.protocol.FrameTooLarge` and is not sent:
        the coordinator would close the connection, failing every request in flight."""
        if self._closed.done():
            raise ConnectionLost("not connected")
        frame = p.encode_frame(message)
        if len(frame) - p.HEADER_SIZE > self.welcome.max_frame:
            raise p.FrameTooLarge(f"{type(message).__name__} of {len(frame) - p.HEADER_SIZE:,} bytes exceeds the "
                                  f"coordinator's max_frame of {self.welcome.max_frame:,} bytes")
        self._writer.write(frame)

    def request(self, message: p.Request, on_layer: Callable[[Any], None] | None = None) -> asyncio.Future[p.Reply]:
        """Send ``message`` with a fresh request id; the future resolves to the final reply or
        fails with the typed error (or :class:`ConnectionLost`)."""
        if self._closed.done():
            raise ConnectionLost("not connected")
        while True:
            rid = next(self._ids) & 0xFFFFFFFF
            if rid and rid not in self._pending:
                break
            if rid == 0:
                self._ids = itertools.count(1)
        message = dataclasses.replace(message, request_id=rid)  # type: ignore[type-var]
        fut: asyncio.Future[p.Reply] = self._loop.create_future()
        self.send(message)
        self._pending[rid] = _Pending(fut, on_layer)
        fut.add_done_callback(lambda f, rid=rid: self._pending.pop(rid, None) if f.cancelled() else None)
        return fut

    async def drain(self) -> None:
        """Wait until the socket takes what was written, or the connection is gone (ConnectionLost)."""
        drained = asyncio.ensure_future(self._writer.drain())
        # A connection aborted with a full buffer may never finish draining: its end decides too.
        await asyncio.wait((drained, self._closed), return_when=asyncio.FIRST_COMPLETED)
        if not drained.done():
            drained.cancel()
            raise ConnectionLost("not connected")
        exc = drained.exception()
        if isinstance(exc, (ConnectionError, OSError)):
            self.abort(ConnectionLost(f"connection lost: {exc}"))
            raise ConnectionLost(f"connection lost: {exc}") from None
        if exc is not None:
            raise exc

    # -- receiving ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason: BaseException
        try:
            while True:
                message = await _read_frame(self._reader, self._max_rx)
                self.last_rx = self._loop.time()
                self._dispatch(message)
        except asyncio.CancelledError:
            reason = ConnectionLost("connection closed")
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            reason = self._fatal or ConnectionLost(f"connection closed by the coordinator ({type(exc).__name__})")
        except p.ProtocolError as exc:
            log.error("protocol error from %s: %s", self.endpoint, exc)
            reason = exc
        except Exception as exc:  # a bug in a push handler must not go unnoticed
            log.exception("tatzelwurm read loop failed")
            reason = exc
        self.abort(reason)

    def _dispatch(self, message: p.Message) -> None:
        if isinstance(message, p.Reply):
            if isinstance(message, p.Error) and message.request_id == 0:
                # Connection-level error: the coordinator closes after sending it (§4).
                self._fatal = message.exception()
                log.warning("coordinator closes the connection: %s", self._fatal)
                return
            entry = self._pending.get(message.request_id)
            if entry is None:
                log.debug("reply for unknown request %s: %r", message.request_id, message)
                return
            if isinstance(message, p.LAYER_TYPES):
                if entry.on_layer is not None:
                    entry.on_layer(message)
                return
            del self._pending[message.request_id]
            if entry.future.done():
                return
            if isinstance(message, p.Error):
                entry.future.set_exception(message.exception())
            else:
                entry.future.set_result(message)
        else:
            self._on_push(self, message)


async def _read_frame(reader: asyncio.StreamReader, max_frame: int) -> p.Message:
    header = await reader.readexactly(p.HEADER_SIZE)
    length = int.from_bytes(header, "big")
    if length == 0:
        raise p.ProtocolError("zero-length frame", code=p.ErrorCode.BAD_FRAME)
    if length > max_frame:
        raise p.ProtocolError(f"frame of {length} bytes exceeds {max_frame}", code=p.ErrorCode.FRAME_TOO_LARGE)
    return p.decode_body(await reader.readexactly(length))


class TaskSink(Protocol):
    """What a worker-side owner (the worker runner, the communicator) gives the client."""

    def on_assign(self, message: p.AssignTask) -> None: ...

    def on_control(self, message: p.ControlTask) -> None: ...

    def on_drain(self, message: p.DrainNotice) -> None: ...

    def on_dropped(self, task_ids: list[int]) -> None: ...

    def held_tasks(self) -> list[p.HeldTask]: ...


@dataclass
class _WorkerRegistration:
    worker_id: str
    name: str
    types: list[str]
    slots: int
    sink: TaskSink


@dataclass
class _Subscription:
    handler: Callable[[p.BroadcastDelivery], Any]
    sender: Filter | None
    subject: Filter | None


# Room for a TaskUpdates body around its reports: the encoder's envelope with the widest request id,
# plus the 4 bytes by which the list header can grow (fixarray to array32).
_TASK_UPDATES_ENVELOPE = len(p.encode_body(p.TaskUpdates(0xFFFFFFFF, []))) + 4

# A report the coordinator could not persist (StoreUnavailable: nothing happened) is sent again after
# this pause, as the C# Worker does; the coordinator refuses every change until its store recovers.
STORE_RETRY_SECONDS = 0.5


class _Report:
    """One report until the coordinator has acknowledged (or refused) it."""

    __slots__ = ("seq", "report", "future", "size", "sent_on", "resent", "shrunk", "forgotten", "retrying")

    def __init__(self, seq: int, report: p.TaskReport, future: asyncio.Future[None], size: int) -> None:
        self.seq = seq
        self.report = report
        self.future = future
        self.size = size  # encoded bytes, for packing TaskUpdates within max_frame
        # The connection it was last written to: only a reply from there settles it.
        self.sent_on: Connection | None = None
        # Written to a connection that was lost before the reply: it may have been applied there.
        self.resent = False
        # Replaced by a failure because the outcome did not fit the coordinator's max_frame.
        self.shrunk = False
        # Dropped by forget() or close(): not sent, and a reply no longer settles it. A caller that
        # cancels the future (a timeout) does not forget the report.
        self.forgotten = False
        # Waiting to be sent again after a StoreUnavailable.
        self.retrying = False


class _Reporter:
    """Delivers task reports reliably: per task in order, each re-sent until it is acknowledged
    (§6 Workers: "a worker must keep reporting until it has it"), across reconnects.

    One sender writes every report in the order they were made, without waiting for earlier
    acknowledgements: the coordinator applies one connection's frames in order, so a task's
    ``finished`` right behind its ``accepted`` is still applied after it (and the two usually share
    a store commit). When the worker registration said the coordinator takes ``TaskUpdates``,
    whatever was reported since the sender last ran goes out as one of those (split at
    ``MAX_REPORTS_PER_TASK_UPDATES`` reports and at the coordinator's ``max_frame``); an older
    coordinator gets one ``TaskUpdate`` per report. A report's refusal, whole-frame or per item, is
    treated the same either way."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._seq = itertools.count()
        self._unacknowledged: dict[int, list[_Report]] = {}
        self._outgoing: collections.deque[_Report] = collections.deque()
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        # Event-loop time before which nothing is written: set by a StoreUnavailable.
        self._retry_at = 0.0

    def report(self, report: p.TaskReport) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._client.closed:
            fut.set_exception(ClientClosed("client closed"))
            return fut
        try:
            size = len(_encode_report(report))
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. an exit code beyond 64 bits
            fut.set_exception(p.InvalidRequest(f"report for task {report.task_id} cannot be encoded: {exc}"))
            return fut
        entry = _Report(next(self._seq), report, fut, size)
        self._unacknowledged.setdefault(report.task_id, []).append(entry)
        self._outgoing.append(entry)
        self._wake.set()
        if self._sender is None or self._sender.done():
            self._sender = self._client._spawn(self._send_loop(), "tatzelwurm-reports")
            self._sender.add_done_callback(_log_task_error)  # a bug there would stall every report
        return fut

    def unacknowledged(self) -> list[int]:
        return list(self._unacknowledged)

    def forget(self, task_id: int) -> None:
        for entry in self._unacknowledged.pop(task_id, ()):
            entry.forgotten = True  # skipped by the sender if still queued
            if not entry.future.done():
                entry.future.cancel()

    def close(self) -> None:
        for task_id in list(self._unacknowledged):
            self.forget(task_id)
        self._outgoing.clear()
        if self._sender is not None:
            self._sender.cancel()

    async def _send_loop(self) -> None:
        written_to: Connection | None = None
        while True:
            await self._wake.wait()
            self._wake.clear()
            pause = self._retry_at - asyncio.get_running_loop().time()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                conn = await self._client._wait_ready(timeout=None)
            except ClientClosed:
                return
            if conn is not written_to:
                if written_to is not None:
                    self._requeue_unacknowledged()
                written_to = conn
            self._write(conn)
            try:
                # Reports made while the socket buffer drains go out together in the next round.
                await conn.drain()
            except ConnectionLost:
                self._wake.set()

    def _requeue_unacknowledged(self) -> None:
        """After a reconnect (and re-registration): every report not acknowledged goes out again,
        in the order they were made, before anything reported later."""
        entries = [entry for entries in self._unacknowledged.values() for entry in entries]
        for entry in entries:
            if entry.sent_on is not None:
                entry.sent_on = None
                entry.resent = True
        entries.sort(key=lambda entry: entry.seq)
        self._outgoing = collections.deque(entries)

    def _write(self, conn: Connection) -> None:
        while True:
            batch = self._take_batch(conn.welcome.max_frame) if conn.worker_batches else self._take_one()
            if not batch:
                return
            message: p.Request
            if conn.worker_batches:
                message = p.TaskUpdates(0, [entry.report for entry in batch])
            else:
                r = batch[0].report
                message = p.TaskUpdate(0, r.task_id, r.kind, r.exit_code, r.result, r.error)
            try:
                reply = conn.request(message)
            except ConnectionLost:
                self._wake.set()  # sent again on the next connection, with the rest
                return
            except TatzelwurmError as exc:  # FrameTooLarge: a lone report over max_frame
                entry = batch[0]
                self._outgoing.extendleft(reversed(batch[1:]))  # none: batches are packed within max_frame
                if isinstance(exc, p.FrameTooLarge) and entry.report.kind == p.TaskUpdateKind.FINISHED \
                        and not entry.shrunk:
                    # Refused unsent, the outcome would leave the task running for ever: it becomes
                    # a failure that fits and says why; a completed outcome fails with 1 (as a raising
                    # handler does), a failed or killed one keeps its code.
                    entry.report, entry.shrunk = _shrink_finished(entry.report, conn.welcome.max_frame), True
                    entry.size = len(_encode_report(entry.report))
                    log.warning("task %s: reported failed: %s", entry.report.task_id, entry.report.error)
                    self._outgoing.appendleft(entry)
                    continue
                self._settle(entry, exc)
                continue
            for entry in batch:
                entry.sent_on = conn
                entry.retrying = False
            reply.add_done_callback(functools.partial(self._replied, conn, batch, p.REPLY_TYPES[type(message)]))

    def _take_one(self) -> list[_Report]:
        while self._outgoing:
            entry = self._outgoing.popleft()
            if not entry.forgotten:
                return [entry]
        return []

    def _take_batch(self, max_frame: int) -> list[_Report]:
        batch: list[_Report] = []
        size = _TASK_UPDATES_ENVELOPE
        while self._outgoing and len(batch) < p.MAX_REPORTS_PER_TASK_UPDATES:
            entry = self._outgoing[0]
            if entry.forgotten:
                self._outgoing.popleft()
                continue
            if batch and size + entry.size > max_frame:
                break
            self._outgoing.popleft()
            batch.append(entry)
            size += entry.size
        return batch

    def _replied(self, conn: Connection, batch: list[_Report], expected: type[p.Reply],
                 reply: asyncio.Future[p.Reply]) -> None:
        exc = reply.exception()
        if isinstance(exc, ConnectionLost):
            self._wake.set()  # sent again once reconnected (or forgotten when the client closes)
            return
        failures: dict[int, TatzelwurmError] = {}
        if exc is None:
            message = reply.result()
            if not isinstance(message, expected):
                exc = p.ProtocolError(f"expected {expected.__name__}, got {type(message).__name__}")
            elif isinstance(message, p.TaskUpdatesResult):
                failures = {failure.index: failure.error() for failure in message.failed}
        not_persisted: list[_Report] = []
        for index, entry in enumerate(batch):
            # Written again meanwhile, or forgotten: this reply no longer decides it.
            if entry.sent_on is conn and not entry.forgotten:
                error = exc or failures.get(index)
                if isinstance(error, p.StoreUnavailable) or (
                        isinstance(error, p.IllegalTransition) and self._behind_a_retry(entry)):
                    # Not applied; one refused only because an earlier report of its task waits for
                    # its retry (the store recovered in between) goes again after that one.
                    entry.sent_on = None
                    entry.retrying = True
                    not_persisted.append(entry)
                    reason = error
                else:
                    self._settle(entry, error)
        if not_persisted:
            log.warning("coordinator could not persist %d report(s), sending them again in %.1f s: %s",
                        len(not_persisted), STORE_RETRY_SECONDS, reason)
            # Back in the order they were made, ahead of any later report of their tasks (both
            # sequences are in order already).
            self._outgoing = collections.deque(heapq.merge(self._outgoing, not_persisted, key=lambda e: e.seq))
            self._retry_at = asyncio.get_running_loop().time() + STORE_RETRY_SECONDS
            self._wake.set()

    def _behind_a_retry(self, entry: _Report) -> bool:
        return any(other.retrying and other.seq < entry.seq
                   for other in self._unacknowledged.get(entry.report.task_id, ()))

    def _settle(self, entry: _Report, exc: BaseException | None) -> None:
        task_id = entry.report.task_id
        entries = self._unacknowledged.get(task_id)
        if entries is not None and entry in entries:
            entries.remove(entry)
            if not entries:
                del self._unacknowledged[task_id]
        kind = getattr(entry.report.kind, "name", entry.report.kind)
        if entry.future.done():  # the caller stopped waiting (cancelled); the report still counted
            return
        if exc is None:
            entry.future.set_result(None)
        elif isinstance(exc, (p.IllegalTransition, p.UnknownTask)) and entry.resent:
            # Applied before the connection dropped (the acknowledgement was lost): done.
            log.debug("re-sent %s for task %s already applied: %s", kind, task_id, exc)
            entry.future.set_result(None)
        else:
            log.warning("coordinator refused %s for task %s: %s", kind, task_id, exc)
            entry.future.set_exception(exc)


def _encode_report(report: p.TaskReport) -> bytes:
    return msgpack.packb(report.to_wire(), use_bin_type=True)


# More of the original error text would only bloat the failure that replaces it.
_MAX_QUOTED = 1000
_BEGAN = "; the error text began: "


def _too_large_text(what: str, data: bytes | None, error: str | None, max_frame: int,
                    build: Callable[[str], p.Message]) -> str:
    """The error text that replaces a result (``data``) or error text too large for the coordinator's
    ``max_frame``: the sizes and the limit, then the start of ``error`` as far as the message that
    ``build(text)`` makes still fits (measured with the real encoder)."""
    error_bytes = len(error.encode()) if error else 0
    if data is not None and error:
        sizes = f"{what} of {len(data):,} bytes and error text of {error_bytes:,} bytes exceed"
    elif data is not None:
        sizes = f"{what} of {len(data):,} bytes exceeds"
    else:
        sizes = f"error text of {error_bytes:,} bytes exceeds"
    text = f"{sizes} the coordinator's max_frame of {max_frame:,} bytes"
    if not error:
        return text
    # A longer string may need a wider MessagePack header: up to 4 more bytes (str8 to str32).
    room = max_frame - len(p.encode_body(build(text + _BEGAN))) - 4
    quoted = error[:_MAX_QUOTED].encode()[:max(room, 0)].decode("utf-8", "ignore")
    return text + _BEGAN + quoted if quoted else text


def _shrink_finished(report: p.TaskReport, max_frame: int) -> p.TaskReport:
    def build(error: str) -> p.TaskReport:
        return dataclasses.replace(report, exit_code=report.exit_code or 1, result=None, error=error)

    # Measured as the larger of its two frames: alone in a TaskUpdates with the widest request id.
    text = _too_large_text("result", report.result, report.error, max_frame,
                           lambda error: p.TaskUpdates(0xFFFFFFFF, [build(error)]))
    return build(text)


def _default_client_name() -> str:
    return f"tatzelwurm-python/{__import__('tatzelwurm').__version__} {socket.gethostname()}:{os.getpid()}"


class Client:
    """An asyncio session with the coordinator. Create it with :func:`connect`.

    Actioner operations: :meth:`add`, :meth:`add_many`, :meth:`play`, :meth:`pause`, :meth:`kill`,
    :meth:`list`, :meth:`iter_tasks`, :meth:`show`, :meth:`wait`, :meth:`result`,
    :meth:`watch`, :meth:`workers`, :meth:`drain_worker`, :meth:`set_tag_limit`,
    :meth:`tag_limits`. RPC: :meth:`register_rpc`, :meth:`unregister_rpc`, :meth:`call`.
    Broadcast: :meth:`subscribe`, :meth:`unsubscribe`, :meth:`broadcast`. Coordinator errors are
    raised as the :class:`~tatzelwurm.protocol.TatzelwurmError` subclass of their code.
    """

    def __init__(self, address: str | None = None, token: str | None = None,
                 data_dir: str | os.PathLike[str] | None = None, *, role: str = "actioner", name: str | None = None, reconnect: bool = True,
                 connect_timeout: float = 10.0, reconnect_timeout: float | None = 60.0,
                 max_backoff: float = 5.0) -> None:
        self._resolve = lambda: resolve_endpoint(address, token, data_dir)
        self.role = role
        self.name = name or _default_client_name()
        self.reconnect = reconnect
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.max_backoff = max_backoff
        self._conn: Connection | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._closed_reason: BaseException | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: _WorkerRegistration | None = None
        self._reporter = _Reporter(self)
        self._rpc: dict[tuple[str, str], Callable[[p.RpcDelivery], Any]] = {}
        self._subs: dict[tuple[str, str], _Subscription] = {}
        self._watch: tuple[str | None, str | None] | None = None
        self._watch_queues: list[asyncio.Queue[p.TaskEvent | None]] = []
        self._on_reconnect: list[Callable[[], Any]] = []
        self._on_disconnect: list[Callable[[BaseException], Any]] = []
        self._hb_seq = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._closed_event = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Client:
        """Open the first connection (errors propagate) and start supervising it."""
        self._loop = asyncio.get_running_loop()
        conn = await self._open()
        self._install(conn)
        return self

    async def __aenter__(self) -> Client:
        if self._loop is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and self._conn is not None and not self._conn.is_closed

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def welcome(self) -> p.Welcome | None:
        return self._conn.welcome if self._conn is not None else None

    @property
    def connection(self) -> Connection | None:
        return self._conn

    def on_reconnect(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` (on the loop) after every successful reconnect and restore."""
        self._on_reconnect.append(callback)

    def on_disconnect(self, callback: Callable[[BaseException], Any]) -> None:
        self._on_disconnect.append(callback)

    async def close(self) -> None:
        """Close the session: no reconnects, every outstanding request fails with ClientClosed."""
        if self._closing:
            if self._supervisor is not None and self._supervisor is not asyncio.current_task():
                await asyncio.gather(self._supervisor, return_exceptions=True)
            return
        self._closing = True
        self._ready.clear()
        self._reporter.close()
        for q in self._watch_queues:
            q.put_nowait(None)
        conn = self._conn
        if conn is not None:
            await conn.close()
        if self._supervisor is not None and self._supervisor is not asyncio.current_task():
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        self._ready.set()  # wake waiters; they see _closing and raise ClientClosed
        self._closed_event.set()

    async def wait_closed(self) -> None:
        """Wait until the client is closed (by :meth:`close`, or because it gave up reconnecting)."""
        await self._closed_event.wait()

    async def _open(self) -> Connection:
        endpoint = self._resolve()
        conn = await Connection.open(endpoint, self.role, self.name, self._on_push, self.connect_timeout)
        if self.role == "worker":
            # Heartbeats flow from the first moment, also while the session is being restored.
            self._spawn(self._heartbeat(conn), "tatzelwurm-heartbeat")
        return conn

    def _install(self, conn: Connection) -> None:
        self._conn = conn
        self._ready.set()
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="tatzelwurm-supervisor")

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _supervise(self) -> None:
        try:
            while not self._closing:
                conn = self._conn
                assert conn is not None
                reason = await conn.wait_closed()
                if self._closing:
                    return
                self._ready.clear()
                log.warning("lost connection to the coordinator at %s: %s", conn.endpoint, reason)
                for cb in list(self._on_disconnect):
                    _call_safely(cb, reason)
                if not self.reconnect or isinstance(reason, (p.AuthFailed, p.UnsupportedVersion)):
                    self._closed_reason = reason
                    break
                conn = await self._reconnect()
                if conn is None:
                    break
                self._install(conn)
                log.info("reconnected to the coordinator at %s", conn.endpoint)
                for cb in list(self._on_reconnect):
                    _call_safely(cb)
        except asyncio.CancelledError:
            pass
        finally:
            if not self._closing:
                # Gave up: behave as closed so that waiters fail instead of hanging.
                self._closing = True
                self._reporter.close()
                for q in self._watch_queues:
                    q.put_nowait(None)
                self._ready.set()
                self._closed_event.set()

    async def _reconnect(self) -> Connection | None:
        delay = 0.05
        while not self._closing:
            try:
                conn = await self._open()
            except (p.AuthFailed, p.UnsupportedVersion) as exc:
                log.error("coordinator refused the session: %s", exc)
                self._closed_reason = exc
                return None
            except (OSError, asyncio.TimeoutError, TatzelwurmError) as exc:
                log.debug("reconnect failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            try:
                await self._restore(conn)
            except (ConnectionLost, OSError, asyncio.TimeoutError) as exc:
                log.debug("connection lost while restoring the session (%s); retrying", exc)
                conn.abort()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            except BaseException:
                conn.abort()
                raise
            if self._closing:
                conn.abort()
                return None
            return conn
        return None

    async def _restore(self, conn: Connection) -> None:
        """Re-establish the session's state on a new connection (see the module docstring)."""
        if self._worker is not None:
            await self._register_on(conn, self._worker)
        for (ns, ident) in list(self._rpc):
            await self._retry_duplicate(conn, lambda: p.RpcRegister(0, ns, ident))
        for (ns, sub), rec in list(self._subs.items()):
            await self._retry_duplicate(conn, lambda: p.Subscribe(0, ns, sub, rec.sender, rec.subject))
        if self._watch is not None:
            await conn.request(p.WatchTasks(0, *self._watch))

    async def _retry_duplicate(self, conn: Connection, make: Callable[[], p.Request]) -> None:
        # After a quick reconnect the coordinator may not yet have dropped the old connection's
        # registrations; give it a moment rather than losing the registration.
        for attempt in range(50):
            try:
                await conn.request(make())
                return
            except p.DuplicateIdentifier:
                await asyncio.sleep(0.1)
        log.error("could not restore %r after reconnect: still registered elsewhere", make())

    async def _heartbeat(self, conn: Connection) -> None:
        """Heartbeat every ``heartbeat_ms`` regardless of what runs (§3); treat a coordinator that
        has been silent for ``lease_ms`` as gone."""
        interval = max(conn.welcome.heartbeat_ms, 10) / 1000
        silence = max(conn.welcome.lease_ms / 1000, 2 * interval)
        loop = asyncio.get_running_loop()
        try:
            while not conn.is_closed:
                self._hb_seq += 1
                conn.send(p.Heartbeat(self._hb_seq))
                await asyncio.sleep(interval)
                if loop.time() - conn.last_rx > silence:
                    log.warning("coordinator silent for %.1fs; dropping the connection", loop.time() - conn.last_rx)
                    conn.abort(ConnectionLost("coordinator stopped answering heartbeats"))
        except ConnectionLost:
            pass

    async def _wait_ready(self, timeout: float | None | bool = True) -> Connection:
        if timeout is True:
            timeout = self.reconnect_timeout
        while True:
            if self._closing:
                raise ClientClosed(f"client closed{': ' + str(self._closed_reason) if self._closed_reason else ''}")
            conn = self._conn
            if self._ready.is_set() and conn is not None and not conn.is_closed:
                return conn
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except asyncio.TimeoutError:
                raise ConnectionLost(f"not connected to the coordinator for {timeout}s") from None
            if self._conn is conn and conn is not None and conn.is_closed:
                await asyncio.sleep(0.01)  # the supervisor has not noticed the loss yet

    # -- generic requests ----------------------------------------------------------------------

    async def request(self, message: p.Request, on_layer: Callable[[Any], None] | None = None, *,
                      resend: bool = False) -> p.Reply:
        """Send a request and wait for its final reply. With ``resend=True`` a request that was
        in flight when the connection dropped is sent again after reconnecting (for idempotent
        requests such as ``WaitTask``); otherwise :class:`ConnectionLost` is raised."""
        while True:
            conn = await self._wait_ready()
            fut = conn.request(message, on_layer)
            try:
                return await fut
            except ClientClosed:
                raise
            except ConnectionLost:
                if self._closing:
                    raise ClientClosed("client closed") from None
                if not resend:
                    raise
            finally:
                if not fut.done():
                    fut.cancel()

    async def _typed(self, message: p.Request, reply_type: type[_R], **kw: Any) -> _R:
        reply = await self.request(message, **kw)
        if not isinstance(reply, reply_type):
            raise p.ProtocolError(f"expected {reply_type.__name__}, got {type(reply).__name__}")
        return reply

    def send_request(self, message: p.Request, on_layer: Callable[[Any], None] | None = None) -> asyncio.Future[p.Reply]:
        """Send now on the current connection and return the reply future (no waiting for
        reconnects; raises :class:`ConnectionLost` if not connected)."""
        if self._closing:
            raise ClientClosed("client closed")
        conn = self._conn
        if conn is None or conn.is_closed or not self._ready.is_set():
            raise ConnectionLost("not connected")
        return conn.request(message, on_layer)

    # -- pushes ----------------------------------------------------------------------------------

    def _on_push(self, conn: Connection, message: p.Message) -> None:
        if isinstance(message, p.HeartbeatAck):
            return
        if isinstance(message, p.RpcDelivery):
            handler = self._rpc.get((message.namespace, message.identifier))
            if handler is None:
                self._respond_safely(conn, p.RpcResponse(message.call_id, p.RpcResponseKind.ERROR, None,
                                                         f"no RPC subscriber {message.identifier!r} here"))
                return
            _call_safely(handler, message)
        elif isinstance(message, p.BroadcastDelivery):
            for sub in message.subscriptions:
                rec = self._subs.get((message.namespace, sub))
                if rec is not None:
                    _call_safely(rec.handler, message)
        elif isinstance(message, p.TaskEvent):
            for q in self._watch_queues:
                q.put_nowait(message)
        elif isinstance(message, p.AssignTasks):
            for assign in message.tasks:  # in order, each exactly like its own AssignTask
                self._to_worker(assign)
        elif isinstance(message, (p.AssignTask, p.ControlTask, p.DrainNotice)):
            self._to_worker(message)
        else:
            log.debug("ignoring unexpected %r", message)

    def _to_worker(self, message: p.AssignTask | p.ControlTask | p.DrainNotice) -> None:
        sink = self._worker.sink if self._worker is not None else None
        if sink is None:
            log.warning("got %s but no worker is registered on this client", type(message).__name__)
            if isinstance(message, p.AssignTask):
                self.report(message.task_id, p.TaskUpdateKind.REJECTED)
            return
        if isinstance(message, p.AssignTask):
            sink.on_assign(message)
        elif isinstance(message, p.ControlTask):
            sink.on_control(message)
        else:
            sink.on_drain(message)

    def _respond_safely(self, conn: Connection | None, response: p.RpcResponse) -> None:
        conn = conn or self._conn
        if conn is None or conn.is_closed:
            log.debug("dropping RPC response for call %s: not connected", response.call_id)
            return
        try:
            try:
                conn.send(response)
            except p.FrameTooLarge:
                # Unsent, the caller would wait until this connection closes: it gets the reason instead.
                max_frame = conn.welcome.max_frame
                text = _too_large_text("RPC result", response.payload, response.error, max_frame,
                                       lambda error: dataclasses.replace(response, payload=None, error=error))
                log.warning("RPC call %s: answered with an error: %s", response.call_id, text)
                conn.send(p.RpcResponse(response.call_id, p.RpcResponseKind.ERROR, None, text))
        except TatzelwurmError as exc:
            log.warning("could not send RPC response for call %s: %s", response.call_id, exc)

    # -- worker side -------------------------------------------------------------------------

    async def register_worker(self, worker_id: str, name: str, types: Sequence[str], slots: int,
                              sink: TaskSink) -> list[int]:
        """Declare (or re-declare) this session as a worker; returns the task ids to drop.

        ``sink.held_tasks()`` is sent as ``held``; ``sink.on_dropped`` is called with the tasks the
        coordinator did not let us keep, here and after every reconnect."""
        if self.role != "worker":
            raise TatzelwurmError("register_worker needs a client connected with role='worker'")
        reg = _WorkerRegistration(worker_id, name, list(types), slots, sink)
        self._worker = reg
        conn = await self._wait_ready()
        return await self._register_on(conn, reg)

    async def _register_on(self, conn: Connection, reg: _WorkerRegistration) -> list[int]:
        held = reg.sink.held_tasks()
        reply = await conn.request(p.RegisterWorker(0, reg.worker_id, reg.name, reg.types, reg.slots, held,
                                                    batches=True))
        assert isinstance(reply, p.WorkerRegistered)
        # A coordinator that predates batches answers without the field, read as False.
        conn.worker_batches = reply.batches
        if reply.drop:
            for task_id in reply.drop:
                self._reporter.forget(task_id)
            reg.sink.on_dropped(list(reply.drop))
        return list(reply.drop)

    def report(self, task_id: int, kind: p.TaskUpdateKind, exit_code: int = 0, result: bytes | None = None,
               error: str | None = None) -> asyncio.Future[None]:
        """Queue a report (``TaskUpdate``, or an item of a ``TaskUpdates``); the future resolves when
        the coordinator acknowledged it. Reports of one task are sent in order and re-sent after
        reconnects until acknowledged; cancelling the future only stops waiting, the report still goes."""
        return self._reporter.report(p.TaskReport(task_id, kind, exit_code, result, error))

    def unacknowledged_reports(self) -> list[int]:
        return self._reporter.unacknowledged()

    def forget_reports(self, task_id: int) -> None:
        self._reporter.forget(task_id)

    # -- actioner operations -------------------------------------------------------------------

    async def add(self, payload: Any = b"", type: str = "default", *, priority: int = 0,  # noqa: A002
                  tags: Iterable[str] = (), policy: DeliveryPolicy | int = DeliveryPolicy.DEFAULT,
                  ready: bool = True, no_reply: bool = False) -> int:
        """Add one task; returns its id once it is durable. ``payload`` is bytes (sent as is) or
        any MessagePack-serialisable value (packed)."""
        spec = p.TaskSpec(_payload_bytes(payload), type, priority, list(tags), policy, ready, no_reply)
        return (await self.add_many([spec]))[0]

    async def add_many(self, specs: Sequence[p.TaskSpec]) -> list[int]:
        reply = await self._typed(p.AddTasks(0, list(specs)), p.TasksAdded)
        return list(reply.ids)

    async def control(self, action: TaskAction | int, task_ids: Iterable[int] = (), *, all: bool = False,  # noqa: A002
                      check: bool = True) -> ControlResult:
        """Apply play/pause/kill to tasks. With ``check`` (default) the first refused task raises
        its typed error (with the full result as ``.control_result``)."""
        reply = await self._typed(p.ControlTasks(0, action, list(task_ids), all), p.ControlResult)
        if check and reply.failed:
            exc = reply.failed[0].error()
            exc.control_result = reply  # type: ignore[attr-defined]
            raise exc
        return reply

    async def play(self, *task_ids: int, all: bool = False, check: bool = True) -> ControlResult:  # noqa: A002
        return await self.control(TaskAction.PLAY, task_ids, all=all, check=check)

    async def pause(self, *task_ids: int, all: bool = False, check: bool = True) -> ControlResult:  # noqa: A002
        return await self.control(TaskAction.PAUSE, task_ids, all=all, check=check)

    async def kill(self, *task_ids: int, check: bool = True) -> ControlResult:
        return await self.control(TaskAction.KILL, task_ids, check=check)

    async def list(self, state: TaskState | int | str | None = None, type: str | None = None,  # noqa: A002
                   tag: str | None = None, worker: str | None = None, after_id: int = 0,
                   limit: int = 1000) -> p.TaskList:
        if isinstance(state, str):
            state = TaskState[state.upper()]
        return await self._typed(p.ListTasks(0, None if state is None else int(state), type, tag, worker,
                                             after_id, limit), p.TaskList)

    async def iter_tasks(self, state: TaskState | int | str | None = None, type: str | None = None,  # noqa: A002
                         tag: str | None = None, worker: str | None = None,
                         page: int = 1000) -> AsyncIterator[TaskInfo]:
        after = 0
        while True:
            reply = await self.list(state, type, tag, worker, after, page)
            for info in reply.tasks:
                yield info
            if len(reply.tasks) < page:
                return
            after = reply.tasks[-1].id

    async def show(self, task_id: int) -> TaskInfo:
        return (await self._typed(p.ShowTask(0, task_id), p.TaskDetail)).task

    async def wait(self, task_id: int, on_layer: Callable[[int], Any] | None = None) -> TaskOutcome:
        """Wait for the task's outcome (across reconnects). ``on_layer(depth)`` is called for every
        ``TaskLayer`` notice ("one more layer of result to follow")."""
        layer_cb = (lambda m: on_layer(m.depth)) if on_layer is not None else None
        return await self._typed(p.WaitTask(0, task_id), TaskOutcome, on_layer=layer_cb, resend=True)

    def result(self, task_id: int, decode: Callable[[bytes], Any] | None = None) -> asyncio.Future[Any]:
        """A future for the task's result with one nested future per layer (like the kiwipy
        communicator's): a plain result resolves the future to the decoded value; a result that
        came through ``n`` pending layers resolves it to a future, which resolves to a future ...
        ``n`` deep. Exit code -1 cancels that level; other non-zero codes raise :class:`RemoteError`."""
        loop = asyncio.get_running_loop()
        decode = decode or _decode_payload
        chain = LayerChain(loop.create_future)

        async def run() -> None:
            try:
                outcome = await self.wait(task_id, on_layer=chain.layer)
            except BaseException as exc:  # noqa: BLE001 - forwarded to the future
                chain.fail(exc if not isinstance(exc, asyncio.CancelledError) else ClientClosed("closed"))
                return
            chain.finish_task(outcome, decode, RemoteError)

        self._spawn(run(), f"tatzelwurm-result-{task_id}")
        return chain.root  # type: ignore[return-value]

    async def watch(self, type: str | None = None, tag: str | None = None) -> AsyncIterator[p.TaskEvent]:  # noqa: A002
        """Stream task state changes (``WatchTasks``). One watch per client."""
        queue: asyncio.Queue[p.TaskEvent | None] = asyncio.Queue()
        self._watch_queues.append(queue)
        try:
            await self._typed(p.WatchTasks(0, type, tag), p.Ok)
            self._watch = (type, tag)
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._watch_queues.remove(queue)
            if not self._watch_queues:
                self._watch = None

    async def workers(self) -> list[p.WorkerInfo]:
        return list((await self._typed(p.ListWorkers(0), p.WorkerList)).workers)

    async def worker_command(self, worker: str, action: p.WorkerAction | int) -> None:
        await self._typed(p.WorkerCommand(0, worker, action), p.Ok)

    async def drain_worker(self, worker: str, stop: bool = False) -> None:
        await self.worker_command(worker, p.WorkerAction.STOP if stop else p.WorkerAction.DRAIN)

    async def undrain_worker(self, worker: str) -> None:
        await self.worker_command(worker, p.WorkerAction.UNDRAIN)

    async def set_tag_limit(self, tag: str, limit: int | None) -> None:
        await self._typed(p.SetTagLimit(0, tag, limit), p.Ok)

    async def tag_limits(self) -> list[p.TagLimitInfo]:
        return list((await self._typed(p.ListTagLimits(0), p.TagLimitList)).limits)

    async def barrier(self) -> None:
        """A cheap round trip: every reply to a request sent before it has been processed."""
        await self._typed(p.ListTagLimits(0), p.TagLimitList)

    # -- RPC -----------------------------------------------------------------------------------

    async def register_rpc(self, namespace: str, identifier: str,
                           handler: Callable[[bytes], Any] | None = None, *,
                           raw_handler: Callable[[p.RpcDelivery], Any] | None = None) -> None:
        """Hold an RPC identifier. ``handler(payload) -> bytes`` may return bytes, a coroutine, or a
        future (one pending layer each); raising gives an error reply with the exception text.
        ``raw_handler(delivery)`` instead leaves the responses to the caller (:meth:`rpc_respond`).
        When this returns, the identifier is routable."""
        key = (namespace, identifier)
        if key in self._rpc:
            raise p.DuplicateIdentifier(f"RPC identifier {identifier!r} already registered here")
        if raw_handler is None:
            if handler is None:
                raise TypeError("register_rpc needs handler or raw_handler")
            raw_handler = self._rpc_adapter(handler)
        self._rpc[key] = raw_handler
        try:
            await self._typed(p.RpcRegister(0, namespace, identifier), p.Ok)
        except BaseException:
            self._rpc.pop(key, None)
            raise

    async def unregister_rpc(self, namespace: str, identifier: str) -> None:
        key = (namespace, identifier)
        if key not in self._rpc:
            raise p.UnknownIdentifier(f"RPC identifier {identifier!r} not registered here")
        try:
            await self._typed(p.RpcUnregister(0, namespace, identifier), p.Ok)
        finally:
            self._rpc.pop(key, None)

    def forget_rpc(self, namespace: str, identifier: str) -> bool:
        return self._rpc.pop((namespace, identifier), None) is not None

    def rpc_respond(self, call_id: int, kind: p.RpcResponseKind, payload: bytes | None = None,
                    error: str | None = None) -> None:
        self._respond_safely(None, p.RpcResponse(call_id, kind, payload, error))

    def _rpc_adapter(self, handler: Callable[[bytes], Any]) -> Callable[[p.RpcDelivery], None]:
        def deliver(delivery: p.RpcDelivery) -> None:
            self._spawn(self._serve_rpc(delivery, handler), f"tatzelwurm-rpc-{delivery.call_id}")
        return deliver

    async def _serve_rpc(self, delivery: p.RpcDelivery, handler: Callable[[bytes], Any]) -> None:
        def pending() -> None:
            self.rpc_respond(delivery.call_id, p.RpcResponseKind.PENDING)
        try:
            value = await resolve_layers(handler(delivery.payload), pending)
        except LevelCancelled:
            self.rpc_respond(delivery.call_id, p.RpcResponseKind.ERROR, None, CANCELLED_TEXT)
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            self.rpc_respond(delivery.call_id, p.RpcResponseKind.ERROR, None, error_text(exc))
        else:
            self.rpc_respond(delivery.call_id, p.RpcResponseKind.VALUE, _payload_bytes(value))

    async def call(self, namespace: str, identifier: str, payload: Any = b"",
                   on_layer: Callable[[int], Any] | None = None) -> p.RpcResult:
        """Call an RPC identifier; returns the raw :class:`RpcResult` (``ok``, ``payload``,
        ``error``, ``layers``). Raises :class:`Unroutable` / :class:`DeliveryFailed`."""
        layer_cb = (lambda m: on_layer(m.depth)) if on_layer is not None else None
        return await self._typed(p.RpcCall(0, namespace, identifier, _payload_bytes(payload)), p.RpcResult,
                                 on_layer=layer_cb)

    async def call_value(self, namespace: str, identifier: str, payload: Any = b"") -> bytes | None:
        """Call and return the reply payload; an error reply raises :class:`RemoteError`."""
        result = await self.call(namespace, identifier, payload)
        if not result.ok:
            if result.error is None or result.error == CANCELLED_TEXT:
                raise asyncio.CancelledError("the recipient cancelled the call")
            raise RemoteError(result.error)
        return result.payload

    # -- broadcast -----------------------------------------------------------------------------

    async def subscribe(self, namespace: str, subscription: str, handler: Callable[[p.BroadcastDelivery], Any], *,
                        sender: Filter | str | None = None, subject: Filter | str | None = None) -> None:
        """Subscribe to broadcasts in ``namespace``. Filters run on the coordinator: a ``str`` is a
        glob (``*`` wildcard, matched at the start), :class:`Filter` gives glob or regex.
        ``handler(delivery)`` is called on the loop, in the order broadcasts arrive."""
        key = (namespace, subscription)
        if key in self._subs:
            raise p.DuplicateIdentifier(f"subscription {subscription!r} already registered here")
        sf = Filter(FilterKind.GLOB, sender) if isinstance(sender, str) else sender
        jf = Filter(FilterKind.GLOB, subject) if isinstance(subject, str) else subject
        self._subs[key] = _Subscription(handler, sf, jf)
        try:
            await self._typed(p.Subscribe(0, namespace, subscription, sf, jf), p.Ok)
        except BaseException:
            self._subs.pop(key, None)
            raise

    async def unsubscribe(self, namespace: str, subscription: str) -> None:
        key = (namespace, subscription)
        if key not in self._subs:
            raise p.UnknownIdentifier(f"subscription {subscription!r} not registered here")
        try:
            await self._typed(p.Unsubscribe(0, namespace, subscription), p.Ok)
        finally:
            self._subs.pop(key, None)

    def forget_subscription(self, namespace: str, subscription: str) -> bool:
        return self._subs.pop((namespace, subscription), None) is not None

    async def broadcast(self, namespace: str, body: Any = b"", sender: str | None = None,
                        subject: str | None = None, correlation_id: str | None = None) -> None:
        """Broadcast; returns once the coordinator accepted it."""
        await self._typed(p.Broadcast(0, namespace, _payload_bytes(body), sender, subject, correlation_id), p.Ok)


class LayerChain:
    """Builds the sender side of a layered outcome: ``root`` resolves to a new future at each
    layer notice and the last level gets the value (KIWIPY_CONTRACT §5). Works with asyncio or
    concurrent futures; must be driven from one thread (the client's loop)."""

    def __init__(self, new_future: Callable[[], Any]) -> None:
        self._new = new_future
        self.root = new_future()
        self.levels = [self.root]

    def layer(self, depth: int) -> None:
        while len(self.levels) <= depth:
            nxt = self._new()
            cur = self.levels[-1]
            if not cur.done():
                cur.set_result(nxt)
            self.levels.append(nxt)

    @property
    def current(self) -> Any:
        return self.levels[-1]

    def fail(self, exc: BaseException) -> None:
        fut = self.levels[-1]
        if not fut.done():
            fut.set_exception(exc)

    def cancel(self) -> None:
        fut = self.levels[-1]
        if not fut.done():
            fut.cancel()

    def resolve(self, layers: int, value: Any) -> None:
        self.layer(layers)
        fut = self.levels[layers]
        if not fut.done():
            fut.set_result(value)

    def finish_task(self, outcome: TaskOutcome, decode: Callable[[bytes], Any],
                    remote_error: Callable[[str], BaseException]) -> None:
        self.layer(outcome.layers)
        fut = self.levels[outcome.layers]
        if fut.done():
            return
        if outcome.exit_code == 0:
            try:
                value = decode(outcome.result) if outcome.result is not None else None
            except Exception as exc:  # noqa: BLE001
                fut.set_exception(exc)
                return
            fut.set_result(value)
        elif outcome.exit_code == -1:
            fut.cancel()
        else:
            fut.set_exception(remote_error(outcome.error or f"task {outcome.task_id} failed with exit code "
                                           f"{outcome.exit_code}"))


def _payload_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _decode_payload(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - not MessagePack: hand back the bytes
        return data


def _call_safely(fn: Callable[..., Any], *args: Any) -> None:
    try:
        result = fn(*args)
        if inspect.iscoroutine(result):
            task = asyncio.get_running_loop().create_task(result)
            task.add_done_callback(_log_task_error)
    except Exception:  # noqa: BLE001 - a callback must not break the read loop
        log.exception("tatzelwurm callback %r failed", fn)


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("tatzelwurm callback task failed", exc_info=task.exception())


async def connect(address: str | None = None, token: str | None = None,
                  data_dir: str | os.PathLike[str] | None = None, role: str = "actioner", *,
                  name: str | None = None, reconnect: bool = True, connect_timeout: float = 10.0,
                  reconnect_timeout: float | None = 60.0) -> Client:
    """Connect to the coordinator and return a started :class:`Client`.

    ``address``/``token`` default to ``TATZELWURM_SERVER``/``TATZELWURM_TOKEN`` and then to the
    coordinator's data directory (``data_dir``, ``TATZELWURM_DATA``, or the per-user default):
    see :mod:`tatzelwurm.config`. ``role`` is ``"actioner"`` or ``"worker"``."""
    client = Client(address, token, data_dir, role=role, name=name, reconnect=reconnect,
                    connect_timeout=connect_timeout, reconnect_timeout=reconnect_timeout)
    return await client.start()
