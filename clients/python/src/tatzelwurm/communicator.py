"""A kiwipy-compatible communicator on tatzelwurm (see KIWIPY_CONTRACT.md).

:class:`TatzelwurmCommunicator` is the drop-in for kiwipy's ``RmqThreadCommunicator``: it runs
its own asyncio loop in a daemon thread (``_loop``); every public method is synchronous, blocks
only until the coordinator accepted the operation (at most ``TASK_TIMEOUT`` = 5 s, then
``kiwipy.TimeoutError``) and never waits for a subscriber; every returned future is a
``kiwipy.Future`` (``concurrent.futures.Future``); subscribers run on the communicator's thread.
:class:`AsyncTatzelwurmCommunicator` is the same on the caller's loop, with coroutine methods and
asyncio futures.

Mapping onto the protocol:

* ``task_queue`` is the tatzelwurm task **type**. ``task_send`` adds a ready task whose payload is
  ``encoder((task, no_reply))`` and (unless ``no_reply``) waits for it with ``WaitTask``. Task
  subscribers make the communicator a worker for that type with a large slot count (unlimited
  prefetch). Subscribers are tried in registration order; ``TaskRejected`` passes to the next;
  when all reject, ``TaskUpdate(rejected)`` puts the task back (the coordinator prefers another
  worker). A returned future is reported as ``pending`` (one layer per level of nesting) and then
  ``finished``. An exception finishes with exit code 1 and its text (sender:
  ``RemoteException(text)``); a cancelled future finishes with -1 (sender: cancelled future).
* ``message_exchange`` is the namespace of RPC identifiers and broadcasts. RPC identifiers are
  ``str(identifier)``. Unroutable calls raise ``UnroutableError`` from ``rpc_send`` itself.
* Broadcast bodies carry ``encoder({body, sender, subject, correlation_id})`` so that UUIDs and
  ints round-trip; ``str(sender)``, ``subject`` and ``str(correlation_id)`` also travel in the wire
  fields so that the coordinator can filter. ``BroadcastFilter`` patterns with one compiled or
  glob pattern per field are translated into coordinator-side regex filters; everything else is
  filtered by the ``BroadcastFilter`` itself on our side (it is always called, so client-side
  semantics are exactly kiwipy's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import os
import re
import threading
import uuid
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from . import compat as kiwi
from . import protocol as p
from ._outcome import CANCELLED_TEXT, LevelCancelled, is_future, resolve_layers
from .client import Client, ClientClosed, LayerChain
from .encoding import DEFAULT_DECODER, DEFAULT_ENCODER
from .protocol import ConnectionLost, Filter, FilterKind
from .worker import default_worker_id

__all__ = [
    "TatzelwurmCommunicator",
    "AsyncTatzelwurmCommunicator",
    "connect",
    "connect_async",
    "DEFAULT_MESSAGE_EXCHANGE",
    "DEFAULT_TASK_QUEUE",
]

log = logging.getLogger("tatzelwurm.communicator")

DEFAULT_MESSAGE_EXCHANGE = "kiwipy.messages"
DEFAULT_TASK_EXCHANGE = "kiwipy.tasks"
DEFAULT_TASK_QUEUE = "kiwipy.tasks"
DEFAULT_TASK_SLOTS = 10_000

_T = TypeVar("_T")
_BROADCAST_KEYS = frozenset({"body", "sender", "subject", "correlation_id"})


def _new_id() -> str:
    return uuid.uuid4().hex


def _endpoint_args(connection_params: Any) -> dict[str, Any]:
    """Translate kiwipy's ``connection_params`` (a dict with ``url`` or a string) into our
    ``address``/``token``/``data_dir``. AMQP URLs (what an AiiDA profile holds for RabbitMQ) are
    ignored: the coordinator is then found through the environment or its data directory."""
    if connection_params is None:
        return {}
    if isinstance(connection_params, str):
        params: dict[str, Any] = {"url": connection_params}
    else:
        params = dict(connection_params)
    url = params.get("url") or params.get("address")
    out: dict[str, Any] = {}
    if url and re.match(r"^amqps?://", str(url)):
        log.info("ignoring AMQP url %r: finding the tatzelwurm coordinator via TATZELWURM_* / data dir", url)
    elif url:
        out["address"] = str(url)
    for key in ("token", "data_dir"):
        if params.get(key) is not None:
            out[key] = params[key]
    return out


class _Core:
    """The communicator's logic; runs on the client's loop only. ``owner`` is the public object
    handed to subscribers; ``new_future`` makes the futures returned to senders."""

    def __init__(self, owner: Any, client: Client, namespace: str, task_type: str,
                 encoder: Callable[[Any], bytes], decoder: Callable[[bytes], Any],
                 new_future: Callable[[], Any], task_slots: int,
                 task_policy: p.DeliveryPolicy | int = p.DeliveryPolicy.DEFAULT) -> None:
        self.owner = owner
        self.task_policy = task_policy
        self.client = client
        self.namespace = namespace
        self.task_type = task_type
        self.encode = encoder
        self.decode = decoder
        self.new_future = new_future
        self.task_slots = task_slots
        self.worker_id = default_worker_id()
        self.rpc_subscribers: dict[str, Any] = {}
        self.task_subscribers: dict[Any, Any] = {}
        self.broadcast_subscribers: dict[str, Any] = {}
        self._registered_types: list[str] | None = None
        self._held: dict[int, bool] = {}
        self._task_jobs: dict[int, _IncomingTask] = {}
        self._rejections: dict[int, int] = {}
        self._decoded: tuple[p.BroadcastDelivery | None, Any] = (None, None)
        self._background: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    # -- RPC -----------------------------------------------------------------------------------

    def check_new_rpc(self, identifier: str) -> None:
        if identifier in self.rpc_subscribers:
            raise kiwi.DuplicateSubscriberIdentifier(f"RPC identifier '{identifier}'")

    async def add_rpc_subscriber(self, subscriber: Any, identifier: str) -> None:
        self.check_new_rpc(identifier)
        self.rpc_subscribers[identifier] = subscriber
        try:
            await self.client.register_rpc(self.namespace, identifier,
                                           raw_handler=functools.partial(self._on_rpc, identifier))
        except p.DuplicateIdentifier:
            self.rpc_subscribers.pop(identifier, None)
            raise kiwi.DuplicateSubscriberIdentifier(f"RPC identifier '{identifier}' is held by another client") \
                from None
        except BaseException:
            self.rpc_subscribers.pop(identifier, None)
            self.client.forget_rpc(self.namespace, identifier)
            raise

    def check_remove_rpc(self, identifier: str) -> None:
        if identifier not in self.rpc_subscribers:
            raise ValueError(f"Unknown subscriber '{identifier}'")

    async def remove_rpc_subscriber(self, identifier: str) -> None:
        self.check_remove_rpc(identifier)
        del self.rpc_subscribers[identifier]
        try:
            await self.client.unregister_rpc(self.namespace, identifier)
        except (p.UnknownIdentifier, ConnectionLost):
            pass  # gone from the coordinator either way (a new connection does not restore it)

    def _on_rpc(self, identifier: str, delivery: p.RpcDelivery) -> None:
        subscriber = self.rpc_subscribers.get(identifier)
        if subscriber is None:
            self.client.rpc_respond(delivery.call_id, p.RpcResponseKind.ERROR, None, f"Unknown subscriber '{identifier}'")
            return
        try:
            msg = self.decode(delivery.payload)
            result = subscriber(self.owner, msg)
        except Exception as exc:  # noqa: BLE001 - the caller gets RemoteException(str(exc))
            log.debug("RPC subscriber %s raised", identifier, exc_info=True)
            self.client.rpc_respond(delivery.call_id, p.RpcResponseKind.ERROR, None, str(exc))
            return
        if is_future(result) or inspect.isawaitable(result):
            self.spawn(self._finish_rpc(delivery.call_id, result))
        else:
            self._respond_value(delivery.call_id, result)

    def _respond_value(self, call_id: int, value: Any) -> None:
        try:
            payload = self.encode(value)
        except Exception as exc:  # noqa: BLE001
            self.client.rpc_respond(call_id, p.RpcResponseKind.ERROR, None, f"cannot encode the result: {exc}")
            return
        self.client.rpc_respond(call_id, p.RpcResponseKind.VALUE, payload)

    async def _finish_rpc(self, call_id: int, result: Any) -> None:
        def pending() -> None:
            self.client.rpc_respond(call_id, p.RpcResponseKind.PENDING)
        try:
            value = await resolve_layers(result, pending)
        except LevelCancelled:
            self.client.rpc_respond(call_id, p.RpcResponseKind.ERROR, None, CANCELLED_TEXT)
        except Exception as exc:  # noqa: BLE001
            self.client.rpc_respond(call_id, p.RpcResponseKind.ERROR, None, str(exc))
        else:
            self._respond_value(call_id, value)

    async def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        identifier = str(recipient_id)
        body = self.encode(msg)
        chain = LayerChain(self.new_future)
        conn = await self.client._wait_ready()
        call = conn.request(p.RpcCall(0, self.namespace, identifier, body), on_layer=lambda m: chain.layer(m.depth))
        # A call nobody can take is refused at once with Unroutable. A cheap request sent after
        # it comes back after that refusal, so the error can be raised from rpc_send itself.
        if not call.done():
            try:
                await self.client.barrier()
            except (ConnectionLost, p.TatzelwurmError):
                pass
        if call.done() and not call.cancelled() and call.exception() is not None:
            raise self._rpc_error(call.exception(), identifier)
        call.add_done_callback(lambda f: self._complete_rpc(chain, f, identifier))
        return chain.root

    def _rpc_error(self, exc: BaseException | None, identifier: str) -> BaseException:
        if isinstance(exc, p.Unroutable):
            return kiwi.UnroutableError(f"Unknown rpc recipient '{identifier}'")
        if isinstance(exc, p.DeliveryFailed):
            return kiwi.DeliveryFailed(f"RPC to '{identifier}' failed: {exc.message}")
        if isinstance(exc, ClientClosed) or (isinstance(exc, ConnectionLost) and self.client.closed):
            return kiwi.CommunicatorClosed()
        if isinstance(exc, ConnectionLost):
            return kiwi.DeliveryFailed(f"RPC to '{identifier}': connection to the coordinator lost")
        return exc if exc is not None else kiwi.DeliveryFailed("unknown failure")

    def _complete_rpc(self, chain: LayerChain, call: asyncio.Future[p.Reply], identifier: str) -> None:
        if call.cancelled():
            chain.cancel()
            return
        exc = call.exception()
        if exc is not None:
            chain.fail(self._rpc_error(exc, identifier))
            return
        result = call.result()
        assert isinstance(result, p.RpcResult)
        chain.layer(result.layers)
        level = chain.levels[result.layers]
        if level.done():
            return
        if result.ok:
            try:
                value = self.decode(result.payload) if result.payload is not None else None
            except Exception as dexc:  # noqa: BLE001
                level.set_exception(dexc)
                return
            level.set_result(value)
        elif result.error is None or result.error == CANCELLED_TEXT:
            level.cancel()
        else:
            level.set_exception(kiwi.RemoteException(result.error))

    # -- tasks: sending --------------------------------------------------------------------

    async def task_send(self, task: Any, no_reply: bool) -> Any:
        body = self.encode((task, no_reply))
        spec = p.TaskSpec(body, self.task_type, 0, [], self.task_policy, True, bool(no_reply))
        try:
            (task_id,) = await self.client.add_many([spec])
        except (p.StoreUnavailable, p.InvalidRequest, p.ShuttingDown) as exc:
            raise kiwi.TaskRejected(f"coordinator refused the task: {exc}") from exc
        if no_reply:
            return None
        chain = LayerChain(self.new_future)
        self.spawn(self._await_task(task_id, chain))
        return chain.root

    async def _await_task(self, task_id: int, chain: LayerChain) -> None:
        try:
            outcome = await self.client.wait(task_id, on_layer=chain.layer)
        except ClientClosed:
            chain.fail(kiwi.CommunicatorClosed())
        except asyncio.CancelledError:
            chain.fail(kiwi.CommunicatorClosed())
        except Exception as exc:  # noqa: BLE001
            chain.fail(kiwi.DeliveryFailed(f"waiting for task {task_id} failed: {exc}"))
        else:
            chain.finish_task(outcome, self.decode, kiwi.RemoteException)

    # -- tasks: receiving ------------------------------------------------------------------

    def check_new_task_subscriber(self, identifier: Any) -> None:
        if identifier in self.task_subscribers:
            raise kiwi.DuplicateSubscriberIdentifier(f"Task identifier '{identifier}'")

    async def add_task_subscriber(self, subscriber: Any, identifier: Any) -> None:
        self.check_new_task_subscriber(identifier)
        self.task_subscribers[identifier] = subscriber
        try:
            await self._update_registration()
        except BaseException:
            self.task_subscribers.pop(identifier, None)
            raise

    def check_remove_task_subscriber(self, identifier: Any) -> None:
        if identifier not in self.task_subscribers:
            raise ValueError(f"Unknown task subscriber '{identifier}'")

    async def remove_task_subscriber(self, identifier: Any) -> None:
        self.check_remove_task_subscriber(identifier)
        del self.task_subscribers[identifier]
        try:
            await self._update_registration()
        except ConnectionLost:
            pass

    async def _update_registration(self) -> None:
        # With subscribers: a worker for our task type with a large slot count (RabbitMQ's
        # unlimited prefetch). Without: a worker accepting no type, so tasks stay queued.
        types = [self.task_type] if self.task_subscribers else []
        if types == self._registered_types:
            return
        self._registered_types = types
        try:
            await self.client.register_worker(self.worker_id, "kiwipy-communicator", types,
                                              self.task_slots, self)
        except BaseException:
            self._registered_types = None
            raise

    # TaskSink

    def held_tasks(self) -> list[p.HeldTask]:
        return [p.HeldTask(t, paused) for t, paused in self._held.items()]

    def on_assign(self, message: p.AssignTask) -> None:
        task_id = message.task_id
        if not self.task_subscribers:
            self._reject(task_id)
            return
        try:
            decoded = self.decode(message.payload)
            task, _no_reply = decoded
        except Exception as exc:  # noqa: BLE001
            log.error("cannot decode task %s: %s", task_id, exc)
            self.client.report(task_id, p.TaskUpdateKind.ACCEPTED)
            self._report_finished(task_id, 1, None, f"cannot decode the task: {exc}")
            return
        for subscriber in list(self.task_subscribers.values()):
            try:
                result = subscriber(self.owner, task)
            except kiwi.TaskRejected:
                continue
            except (kiwi.CancelledError, asyncio.CancelledError):
                # RabbitMQ leaves such a task unacknowledged until it is redelivered; we give it back.
                log.debug("task subscriber cancelled task %s; putting it back", task_id)
                self._reject(task_id)
                return
            except Exception as exc:  # noqa: BLE001 - the sender gets RemoteException(str(exc))
                log.exception("exception while processing task %s", task_id)
                self._held[task_id] = False
                self.client.report(task_id, p.TaskUpdateKind.ACCEPTED)
                self._report_finished(task_id, 1, None, str(exc))
                return
            self._rejections.pop(task_id, None)
            self._held[task_id] = False
            self.client.report(task_id, p.TaskUpdateKind.ACCEPTED)
            if is_future(result) or inspect.isawaitable(result):
                job = _IncomingTask(task_id, result)
                self._task_jobs[task_id] = job
                job.task = self.spawn(self._finish_task(job))
            else:
                self._finish_with_value(task_id, result)
            return
        self._reject(task_id)

    def _reject(self, task_id: int) -> None:
        # Everybody here rejected it: give it back. Repeated rejections of the same task by this
        # client back off a little, so that a queue nobody here can serve does not spin.
        count = self._rejections.get(task_id, 0) + 1
        if len(self._rejections) > 10_000:  # forget old tasks (taken by other consumers meanwhile)
            self._rejections.clear()
        self._rejections[task_id] = count
        self._held.pop(task_id, None)
        delay = 0.0 if count <= 2 else min(0.01 * 2 ** (count - 2), 1.0)
        if delay:
            asyncio.get_running_loop().call_later(delay, self.client.report, task_id, p.TaskUpdateKind.REJECTED)
        else:
            self.client.report(task_id, p.TaskUpdateKind.REJECTED)

    def _finish_with_value(self, task_id: int, value: Any) -> None:
        try:
            payload = self.encode(value)
        except Exception as exc:  # noqa: BLE001
            self._report_finished(task_id, 1, None, f"cannot encode the result: {exc}")
            return
        self._report_finished(task_id, 0, payload, None)

    def _report_finished(self, task_id: int, exit_code: int, result: bytes | None, error: str | None) -> None:
        self._held[task_id] = self._held.get(task_id, False)
        job = self._task_jobs.pop(task_id, None)
        if job is not None:
            job.finished = True
        ack = self.client.report(task_id, p.TaskUpdateKind.FINISHED, exit_code, result, error)
        ack.add_done_callback(lambda _f: self._held.pop(task_id, None) if task_id not in self._task_jobs else None)

    async def _finish_task(self, job: _IncomingTask) -> None:
        def pending() -> None:
            if not job.finished:
                self.client.report(job.task_id, p.TaskUpdateKind.PENDING)
        try:
            value = await resolve_layers(job.result, pending)
        except LevelCancelled:
            if not job.finished:
                self._report_finished(job.task_id, -1, None, "cancelled")
        except Exception as exc:  # noqa: BLE001
            if not job.finished:
                self._report_finished(job.task_id, 1, None, str(exc))
        else:
            if not job.finished:
                self._finish_with_value(job.task_id, value)

    def on_control(self, message: p.ControlTask) -> None:
        task_id, action = message.task_id, message.action
        job = self._task_jobs.get(task_id)
        if action == p.ControlAction.DROP:
            self._forget(task_id)
        elif action == p.ControlAction.PAUSE:
            if task_id in self._held:
                self._held[task_id] = True
                self.client.report(task_id, p.TaskUpdateKind.PAUSED)
        elif action == p.ControlAction.PLAY:
            if task_id in self._held:
                self._held[task_id] = False
                self.client.report(task_id, p.TaskUpdateKind.RESUMED)
        elif action in (p.ControlAction.KILL, p.ControlAction.ABANDON):
            if job is not None:
                _cancel_quietly(job.result)
                if job.task is not None:
                    job.task.cancel()
            if job is not None or task_id not in self._held:
                self._report_finished(task_id, -1, None, "killed")

    def on_drain(self, message: p.DrainNotice) -> None:
        log.info("coordinator asks this communicator to %s", "stop" if message.stop else "drain")

    def on_dropped(self, task_ids: list[int]) -> None:
        for task_id in task_ids:
            self._forget(task_id)

    def _forget(self, task_id: int) -> None:
        job = self._task_jobs.pop(task_id, None)
        if job is not None:
            job.finished = True
            if job.task is not None:
                job.task.cancel()
        self._held.pop(task_id, None)
        self.client.forget_reports(task_id)

    # -- broadcast -----------------------------------------------------------------------------

    def check_new_broadcast(self, identifier: str) -> None:
        if identifier in self.broadcast_subscribers:
            raise kiwi.DuplicateSubscriberIdentifier(f"Broadcast identifier '{identifier}'")

    async def add_broadcast_subscriber(self, subscriber: Any, identifier: str) -> None:
        self.check_new_broadcast(identifier)
        self.broadcast_subscribers[identifier] = subscriber
        sender, subject = server_filters(subscriber)
        handler = functools.partial(self._on_broadcast, identifier)
        try:
            try:
                await self.client.subscribe(self.namespace, identifier, handler, sender=sender, subject=subject)
            except p.InvalidRequest:
                if sender is None and subject is None:
                    raise
                # The coordinator could not take the pattern (e.g. Python-only regex syntax):
                # filter on our side only.
                log.info("coordinator refused the broadcast filter of %s; filtering locally", identifier)
                await self.client.subscribe(self.namespace, identifier, handler)
        except p.DuplicateIdentifier:
            self.broadcast_subscribers.pop(identifier, None)
            raise kiwi.DuplicateSubscriberIdentifier(f"Broadcast identifier '{identifier}'") from None
        except BaseException:
            self.broadcast_subscribers.pop(identifier, None)
            self.client.forget_subscription(self.namespace, identifier)
            raise

    def check_remove_broadcast(self, identifier: str) -> None:
        if identifier not in self.broadcast_subscribers:
            raise ValueError(f"Broadcast subscriber '{identifier}' unknown")

    async def remove_broadcast_subscriber(self, identifier: str) -> None:
        self.check_remove_broadcast(identifier)
        del self.broadcast_subscribers[identifier]
        try:
            await self.client.unsubscribe(self.namespace, identifier)
        except (p.UnknownIdentifier, ConnectionLost):
            pass

    def _decode_broadcast(self, delivery: p.BroadcastDelivery) -> tuple[Any, Any, Any, Any]:
        if self._decoded[0] is delivery:
            return self._decoded[1]  # type: ignore[no-any-return]
        try:
            decoded = self.decode(delivery.body)
        except Exception:  # noqa: BLE001 - not one of ours: hand over the raw body
            decoded = None
            fields = (delivery.body, delivery.sender, delivery.subject, delivery.correlation_id)
        else:
            if isinstance(decoded, dict) and set(decoded) == _BROADCAST_KEYS:
                fields = (decoded["body"], decoded["sender"], decoded["subject"], decoded["correlation_id"])
            else:
                fields = (decoded, delivery.sender, delivery.subject, delivery.correlation_id)
        self._decoded = (delivery, fields)
        return fields

    def _on_broadcast(self, identifier: str, delivery: p.BroadcastDelivery) -> None:
        subscriber = self.broadcast_subscribers.get(identifier)
        if subscriber is None:
            return
        body, sender, subject, correlation_id = self._decode_broadcast(delivery)
        try:
            # Positional on purpose: plumpy's convert_to_comm reads args[1]/args[2].
            result = subscriber(self.owner, body, sender, subject, correlation_id)
            if inspect.iscoroutine(result):
                self.spawn(result)
        except Exception:  # noqa: BLE001 - log and carry on (contract §6)
            log.exception("broadcast subscriber %r raised", identifier)

    async def broadcast_send(self, body: Any, sender: Any, subject: Any, correlation_id: Any) -> bool:
        payload = self.encode({"body": body, "sender": sender, "subject": subject, "correlation_id": correlation_id})
        await self.client.broadcast(self.namespace, payload,
                                    None if sender is None else str(sender),
                                    None if subject is None else str(subject),
                                    None if correlation_id is None else str(correlation_id))
        return True

    async def close(self) -> None:
        for job in list(self._task_jobs.values()):
            if job.task is not None:
                job.task.cancel()
        await self.client.close()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


class _IncomingTask:
    __slots__ = ("task_id", "result", "task", "finished")

    def __init__(self, task_id: int, result: Any) -> None:
        self.task_id = task_id
        self.result = result
        self.task: asyncio.Task[Any] | None = None
        self.finished = False


def _cancel_quietly(fut: Any) -> None:
    if is_future(fut):
        try:
            fut.cancel()
        except RuntimeError:  # an asyncio future of another loop
            pass


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("communicator task failed", exc_info=task.exception())


def _pattern_of(check: Any) -> str | None:
    pattern = getattr(check, "__self__", None)
    if (isinstance(pattern, re.Pattern) and getattr(check, "__name__", "") == "match"
            and isinstance(pattern.pattern, str) and (pattern.flags & ~re.UNICODE) == 0
            and "(?P" not in pattern.pattern):
        return pattern.pattern
    return None


def server_filters(subscriber: Any) -> tuple[Filter | None, Filter | None]:
    """Coordinator-side filters equivalent to a ``BroadcastFilter``'s (sender, subject) filters.

    Only a field with exactly one pattern filter is translated (a glob string is compiled by
    ``BroadcastFilter`` into a regex, which is sent as is); equality filters and several filters
    per field stay client-side only. The ``BroadcastFilter`` still runs on every delivery."""
    if not isinstance(subscriber, kiwi.BroadcastFilter) and type(subscriber).__name__ != "BroadcastFilter":
        return None, None

    def one(filters: Any) -> Filter | None:
        if not isinstance(filters, list) or len(filters) != 1:
            return None
        pattern = _pattern_of(filters[0])
        return Filter(FilterKind.REGEX, pattern) if pattern is not None else None

    return one(getattr(subscriber, "_sender_filters", None)), one(getattr(subscriber, "_subject_filters", None))


def _copy_future(source: Any, target: concurrent.futures.Future[Any]) -> None:
    def done(src: Any) -> None:
        if target.done():
            return
        if src.cancelled():
            target.cancel()
        elif src.exception() is not None:
            target.set_exception(src.exception())
        else:
            target.set_result(src.result())
    source.add_done_callback(done)


class TatzelwurmCommunicator(kiwi.Communicator):  # type: ignore[misc,valid-type]
    """Thread-based kiwipy communicator (drop-in for ``RmqThreadCommunicator``).

    Construct it with :func:`connect` (kiwipy's keyword arguments) or directly with
    ``address``/``token``/``data_dir``."""

    TASK_TIMEOUT = 5.0

    def __init__(self, address: str | None = None, token: str | None = None,
                 data_dir: str | os.PathLike[str] | None = None, *,
                 message_exchange: str = DEFAULT_MESSAGE_EXCHANGE, task_exchange: str = DEFAULT_TASK_EXCHANGE,
                 task_queue: str = DEFAULT_TASK_QUEUE, encoder: Callable[[Any], bytes] | None = None,
                 decoder: Callable[[bytes], Any] | None = None, testing_mode: bool = False,
                 task_slots: int = DEFAULT_TASK_SLOTS, connect_timeout: float = 10.0,
                 task_policy: p.DeliveryPolicy | int = p.DeliveryPolicy.DEFAULT) -> None:
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._loop.set_debug(bool(testing_mode))
        self._thread = threading.Thread(target=self._run_loop, name=f"tatzelwurm communicator {message_exchange}",
                                        daemon=True)
        self._thread_ident: int | None = None
        self.message_exchange = message_exchange
        self.task_exchange = task_exchange
        self.task_queue = task_queue
        self._thread.start()
        client = Client(address, token, data_dir, role="worker", name="tatzelwurm-python kiwipy communicator",
                        connect_timeout=connect_timeout)

        async def start() -> _Core:
            await client.start()
            return _Core(self, client, message_exchange, task_queue, encoder or DEFAULT_ENCODER,
                         decoder or DEFAULT_DECODER, kiwi.Future, task_slots, task_policy)

        try:
            self._core = asyncio.run_coroutine_threadsafe(start(), self._loop).result(connect_timeout + 1)
        except BaseException:
            self._stop_loop()
            self._closed = True
            raise

    # -- loop thread ---------------------------------------------------------------------------

    def _run_loop(self) -> None:
        self._thread_ident = threading.get_ident()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.get_ident() != self._thread_ident:
            self._thread.join()

    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread_ident

    def _ensure_open(self) -> None:
        if self._closed:
            raise kiwi.CommunicatorClosed()

    def _run(self, make: Callable[[], Awaitable[_T]]) -> _T:
        """Run a coroutine on our loop and wait (≤ TASK_TIMEOUT) for the coordinator to accept."""
        cf = asyncio.run_coroutine_threadsafe(_as_coro(make), self._loop)
        try:
            return cf.result(self.TASK_TIMEOUT)
        except concurrent.futures.TimeoutError:
            cf.cancel()
            raise kiwi.TimeoutError(f"the coordinator did not accept the operation within {self.TASK_TIMEOUT}s") \
                from None
        except ClientClosed:
            raise kiwi.CommunicatorClosed() from None
        except ConnectionLost as exc:
            raise kiwi.TimeoutError(f"connection to the coordinator lost: {exc}") from None

    def _schedule(self, make: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        """Re-entrant call from a subscriber on our own thread: we cannot block, so start it."""
        return self._core.spawn(_as_coro(make))

    # -- kiwipy.Communicator -------------------------------------------------------------------

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._on_loop_thread():
            self._core.spawn(self._core.close()).add_done_callback(lambda _t: self._loop.stop())
            return
        try:
            asyncio.run_coroutine_threadsafe(self._core.close(), self._loop).result(self.TASK_TIMEOUT)
        except Exception:  # noqa: BLE001 - closing anyway
            log.debug("error while closing the communicator", exc_info=True)
        self._stop_loop()

    def __enter__(self) -> TatzelwurmCommunicator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add_rpc_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        self._ensure_open()
        ident = str(identifier) if identifier is not None else _new_id()
        if self._on_loop_thread():
            self._core.check_new_rpc(ident)
            self._schedule(lambda: self._core.add_rpc_subscriber(subscriber, ident))
        else:
            self._run(lambda: self._core.add_rpc_subscriber(subscriber, ident))
        return identifier if identifier is not None else ident

    def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        ident = str(identifier)
        if self._on_loop_thread():
            self._core.check_remove_rpc(ident)
            self._schedule(lambda: self._core.remove_rpc_subscriber(ident))
        else:
            self._run(lambda: self._core.remove_rpc_subscriber(ident))

    def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        self._ensure_open()
        ident = identifier if identifier is not None else _new_id()
        if self._on_loop_thread():
            self._core.check_new_task_subscriber(ident)
            self._schedule(lambda: self._core.add_task_subscriber(subscriber, ident))
        else:
            self._run(lambda: self._core.add_task_subscriber(subscriber, ident))
        return ident

    def remove_task_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        if self._on_loop_thread():
            self._core.check_remove_task_subscriber(identifier)
            self._schedule(lambda: self._core.remove_task_subscriber(identifier))
        else:
            self._run(lambda: self._core.remove_task_subscriber(identifier))

    def add_broadcast_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        self._ensure_open()
        ident = str(identifier) if identifier is not None else _new_id()
        if self._on_loop_thread():
            self._core.check_new_broadcast(ident)
            self._schedule(lambda: self._core.add_broadcast_subscriber(subscriber, ident))
        else:
            self._run(lambda: self._core.add_broadcast_subscriber(subscriber, ident))
        return identifier if identifier is not None else ident

    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        ident = str(identifier)
        if self._on_loop_thread():
            self._core.check_remove_broadcast(ident)
            self._schedule(lambda: self._core.remove_broadcast_subscriber(ident))
        else:
            self._run(lambda: self._core.remove_broadcast_subscriber(ident))

    def task_send(self, task: Any, no_reply: bool = False) -> Any:
        self._ensure_open()
        if self._on_loop_thread():
            outer: concurrent.futures.Future[Any] = kiwi.Future()
            job = self._schedule(lambda: self._core.task_send(task, no_reply))
            if no_reply:
                return None
            job.add_done_callback(lambda t: _forward(t, outer))
            return outer
        future = self._run(lambda: self._core.task_send(task, no_reply))
        return None if no_reply else future

    def rpc_send(self, recipient_id: Any, msg: Any) -> Any:
        self._ensure_open()
        if self._on_loop_thread():
            outer: concurrent.futures.Future[Any] = kiwi.Future()
            self._schedule(lambda: self._core.rpc_send(recipient_id, msg)).add_done_callback(
                lambda t: _forward(t, outer))
            return outer
        return self._run(lambda: self._core.rpc_send(recipient_id, msg))

    def broadcast_send(self, body: Any, sender: Any = None, subject: Any = None, correlation_id: Any = None) -> bool:
        self._ensure_open()
        if self._on_loop_thread():
            self._schedule(lambda: self._core.broadcast_send(body, sender, subject, correlation_id))
            return True
        return self._run(lambda: self._core.broadcast_send(body, sender, subject, correlation_id))

    @property
    def worker_id(self) -> str:
        return self._core.worker_id


def _forward(task: asyncio.Task[Any], outer: concurrent.futures.Future[Any]) -> None:
    """Re-entrant sends: the scheduled coroutine returned the real future (or failed)."""
    if task.cancelled():
        outer.cancel()
    elif task.exception() is not None:
        exc = task.exception()
        if isinstance(exc, ClientClosed):
            exc = kiwi.CommunicatorClosed()
        outer.set_exception(exc)  # type: ignore[arg-type]
    else:
        _copy_future(task.result(), outer)


async def _as_coro(make: Callable[[], Awaitable[_T]]) -> _T:
    return await make()


def connect(connection_params: Any = None, connection_factory: Any = None, loop: Any = None,
            message_exchange: str = DEFAULT_MESSAGE_EXCHANGE, task_exchange: str = DEFAULT_TASK_EXCHANGE,
            task_queue: str = DEFAULT_TASK_QUEUE, task_prefetch_size: Any = None, task_prefetch_count: Any = None,
            encoder: Callable[[Any], bytes] | None = None, decoder: Callable[[bytes], Any] | None = None,
            testing_mode: bool = False, async_task_timeout: Any = None, **kwargs: Any) -> TatzelwurmCommunicator:
    """Make a :class:`TatzelwurmCommunicator` from the keyword arguments of kiwipy's
    ``RmqThreadCommunicator.connect``. ``connection_params`` is a dict with ``url`` (and optionally
    ``token``, ``data_dir``) or a string: the coordinator's address (``host:port``,
    ``tatzelwurm://token@host:port``). ``connection_factory``, ``loop``, ``task_prefetch_*`` and
    ``async_task_timeout`` are accepted and ignored. Extra keywords ``address``, ``token``,
    ``data_dir``, ``task_slots``, ``connect_timeout`` and ``task_policy`` (the delivery policy of the
    tasks it sends; default: the coordinator's ``--default-policy``) are passed on."""
    args = _endpoint_args(connection_params)
    for key in ("address", "token", "data_dir"):
        if kwargs.get(key) is not None:
            args[key] = kwargs.pop(key)
        else:
            kwargs.pop(key, None)
    extra = {k: kwargs.pop(k) for k in ("task_slots", "connect_timeout", "task_policy") if k in kwargs}
    if kwargs:
        log.debug("ignoring communicator arguments %s", sorted(kwargs))
    return TatzelwurmCommunicator(**args, message_exchange=message_exchange, task_exchange=task_exchange,
                                  task_queue=task_queue, encoder=encoder, decoder=decoder,
                                  testing_mode=testing_mode, **extra)


class AsyncTatzelwurmCommunicator:
    """The communicator for code running on an asyncio loop (like kiwipy's ``RmqCommunicator``):
    every method is a coroutine, futures are asyncio futures of that loop, subscribers are
    called on that loop. Create it with :func:`connect_async`."""

    def __init__(self, core_factory: Callable[[AsyncTatzelwurmCommunicator], _Core]) -> None:
        self._core = core_factory(self)
        self._closed = False

    def is_closed(self) -> bool:
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise kiwi.CommunicatorClosed()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._core.close()

    async def __aenter__(self) -> AsyncTatzelwurmCommunicator:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _call(self, coro: Awaitable[_T]) -> _T:
        try:
            return await coro
        except ClientClosed:
            raise kiwi.CommunicatorClosed() from None

    async def add_rpc_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        self._ensure_open()
        ident = str(identifier) if identifier is not None else _new_id()
        await self._call(self._core.add_rpc_subscriber(subscriber, ident))
        return identifier if identifier is not None else ident

    async def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        await self._call(self._core.remove_rpc_subscriber(str(identifier)))

    async def add_task_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        self._ensure_open()
        ident = identifier if identifier is not None else _new_id()
        await self._call(self._core.add_task_subscriber(subscriber, ident))
        return ident

    async def remove_task_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        await self._call(self._core.remove_task_subscriber(identifier))

    async def add_broadcast_subscriber(self, subscriber: Any, identifier: Any = None) -> Any:
        self._ensure_open()
        ident = str(identifier) if identifier is not None else _new_id()
        await self._call(self._core.add_broadcast_subscriber(subscriber, ident))
        return identifier if identifier is not None else ident

    async def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._ensure_open()
        await self._call(self._core.remove_broadcast_subscriber(str(identifier)))

    async def task_send(self, task: Any, no_reply: bool = False) -> asyncio.Future[Any] | None:
        self._ensure_open()
        return await self._call(self._core.task_send(task, no_reply))  # type: ignore[no-any-return]

    async def rpc_send(self, recipient_id: Any, msg: Any) -> asyncio.Future[Any]:
        self._ensure_open()
        return await self._call(self._core.rpc_send(recipient_id, msg))  # type: ignore[no-any-return]

    async def broadcast_send(self, body: Any, sender: Any = None, subject: Any = None,
                             correlation_id: Any = None) -> bool:
        self._ensure_open()
        return await self._call(self._core.broadcast_send(body, sender, subject, correlation_id))


async def connect_async(connection_params: Any = None, *, message_exchange: str = DEFAULT_MESSAGE_EXCHANGE,
                        task_queue: str = DEFAULT_TASK_QUEUE, encoder: Callable[[Any], bytes] | None = None,
                        decoder: Callable[[bytes], Any] | None = None, address: str | None = None,
                        token: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                        task_slots: int = DEFAULT_TASK_SLOTS,
                        task_policy: p.DeliveryPolicy | int = p.DeliveryPolicy.DEFAULT,
                        **ignored: Any) -> AsyncTatzelwurmCommunicator:
    """Connect an :class:`AsyncTatzelwurmCommunicator` on the running loop."""
    args = _endpoint_args(connection_params)
    args.update({k: v for k, v in (("address", address), ("token", token), ("data_dir", data_dir)) if v is not None})
    client = Client(args.get("address"), args.get("token"), args.get("data_dir"), role="worker",
                    name="tatzelwurm-python async communicator")
    await client.start()
    loop = asyncio.get_running_loop()
    return AsyncTatzelwurmCommunicator(lambda owner: _Core(owner, client, message_exchange, task_queue,
                                                           encoder or DEFAULT_ENCODER, decoder or DEFAULT_DECODER,
                                                           loop.create_future, task_slots, task_policy))
