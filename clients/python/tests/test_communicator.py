"""KIWIPY_CONTRACT.md, MUST by MUST, against a real coordinator.

Each test names the contract section it covers (``§x.y``). The communicators of one test share a
``message_exchange``/``task_queue`` unique to that test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import re
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import pytest

from tatzelwurm import compat as kiwipy
from tatzelwurm import communicator as twc
from tatzelwurm.communicator import TatzelwurmCommunicator

from conftest import Coordinator

Factory = Callable[..., TatzelwurmCommunicator]


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    # Names as long and as odd as AiiDA's: ~120 characters with '/' and '.'.
    base = f"aiida-{unique}/profile.with.dots/" + "x" * 80
    return {"message_exchange": base + ".messages", "task_queue": base + ".tasks"}


@pytest.fixture
def make_comm(coordinator: Coordinator, names: dict[str, str]) -> Iterator[Factory]:
    made: list[TatzelwurmCommunicator] = []

    def make(**kw: Any) -> TatzelwurmCommunicator:
        args = {"connection_params": {"url": coordinator.address, "token": coordinator.token}, **names, **kw}
        comm = twc.connect(**args)
        made.append(comm)
        return comm

    yield make
    for comm in made:
        comm.close()


@pytest.fixture
def comm(make_comm: Factory) -> TatzelwurmCommunicator:
    return make_comm()


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# §1 construction -----------------------------------------------------------------------------


def test_s1_connect_accepts_rmq_kwargs_and_ignores_the_rest(coordinator: Coordinator, names: dict[str, str]) -> None:
    comm = twc.connect(connection_params={"url": coordinator.address, "token": coordinator.token},
                       connection_factory=object(), task_exchange="kiwipy.tasks", task_prefetch_size=0,
                       task_prefetch_count=0, encoder=None, decoder=None, testing_mode=True,
                       async_task_timeout=5, **names)
    try:
        assert isinstance(comm, kiwipy.Communicator)
        assert comm.broadcast_send("hello") is True
    finally:
        comm.close()
    # connection_params as a plain string (the coordinator's address), token from the URL
    comm = twc.connect(connection_params=f"tatzelwurm://{coordinator.token}@{coordinator.address}", **names)
    comm.close()


def test_s1_isolation_by_message_exchange_and_task_queue(make_comm: Factory, unique: str) -> None:
    a = make_comm()
    b = make_comm(message_exchange=f"other-{unique}.messages", task_queue=f"other-{unique}.tasks")
    got_a: list[Any] = []
    got_b: list[Any] = []
    a.add_broadcast_subscriber(lambda *args: got_a.append(args[1]))
    b.add_broadcast_subscriber(lambda *args: got_b.append(args[1]))
    a.add_rpc_subscriber(lambda c, m: "a", "same-id")
    b.add_task_subscriber(lambda c, t: "b did it")
    a.broadcast_send("only-a")
    wait_for(lambda: got_a)
    with pytest.raises(kiwipy.UnroutableError):
        b.rpc_send("same-id", None)
    fut = a.task_send("for a's queue")
    with pytest.raises(kiwipy.TimeoutError):
        fut.result(0.3)  # b consumes another queue
    time.sleep(0.1)
    assert got_a == ["only-a"] and got_b == []


# §2 types ------------------------------------------------------------------------------------


def test_s2_futures_are_concurrent_futures_at_every_level(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()

    def nested(comm: Any, msg: Any) -> Any:
        inner: concurrent.futures.Future[Any] = kiwipy.Future()
        inner.set_result(msg * 2)
        return inner

    server.add_rpc_subscriber(nested, "n")
    outer = client.rpc_send("n", 21)
    assert isinstance(outer, concurrent.futures.Future) and isinstance(outer, kiwipy.Future)
    inner = outer.result(5)
    assert isinstance(inner, kiwipy.Future)
    assert inner.result(5) == 42

    async def via_wrap_future() -> Any:
        first = await asyncio.wrap_future(client.rpc_send("n", 1))
        return await asyncio.wrap_future(first)

    assert asyncio.run(via_wrap_future()) == 2


def test_s2_exception_types() -> None:
    assert kiwipy.TimeoutError is concurrent.futures.TimeoutError
    assert kiwipy.CancelledError is concurrent.futures.CancelledError
    assert kiwipy.Future is concurrent.futures.Future
    assert issubclass(kiwipy.UnroutableError, kiwipy.DeliveryFailed)
    for exc in (kiwipy.RemoteException, kiwipy.TaskRejected, kiwipy.CommunicatorClosed,
                kiwipy.DuplicateSubscriberIdentifier):
        assert issubclass(exc, Exception)
    assert issubclass(TatzelwurmCommunicator, kiwipy.Communicator)


# §3 threading model --------------------------------------------------------------------------


def test_s3_1_works_inside_a_running_loop_without_using_it(make_comm: Factory) -> None:
    server = make_comm()
    server.add_rpc_subscriber(lambda c, m: m + 1, "inc")

    async def app() -> Any:
        # We are on a running loop that never yields while we block in the communicator.
        comm = make_comm()
        assert comm._loop is not asyncio.get_running_loop()
        fut = comm.rpc_send("inc", 1)
        value = fut.result(5)  # blocks this loop: the client must not need it
        got: list[Any] = []
        comm.add_broadcast_subscriber(lambda *a: got.append(a[1]))
        assert comm.broadcast_send("x") is True
        wait_for(lambda: got)
        return value

    assert asyncio.run(app()) == 2


def test_s3_1_no_event_loop_set_on_the_caller_thread(coordinator: Coordinator, names: dict[str, str]) -> None:
    result: list[Any] = []

    def thread() -> None:
        comm = twc.connect(connection_params={"url": coordinator.address, "token": coordinator.token}, **names)
        try:
            comm.add_rpc_subscriber(lambda c, m: "pong", "ping")
            result.append(comm.rpc_send("ping", None).result(5))
            try:
                asyncio.get_event_loop_policy().get_event_loop()
                result.append("loop set on caller thread")
            except RuntimeError:
                result.append("no loop")
        finally:
            comm.close()

    t = threading.Thread(target=thread)
    t.start()
    t.join(20)
    assert result == ["pong", "no loop"]


def test_s3_2_rpc_send_returns_before_the_subscriber_finishes(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()
    release = threading.Event()
    called = threading.Event()

    def slow(comm: Any, msg: Any) -> Any:
        called.set()
        fut: concurrent.futures.Future[Any] = kiwipy.Future()
        threading.Thread(target=lambda: (release.wait(5), fut.set_result("late"))).start()
        return fut

    server.add_rpc_subscriber(slow, "slow")
    t0 = time.monotonic()
    outer = client.rpc_send("slow", None)
    assert time.monotonic() - t0 < 1.0
    inner = outer.result(5)  # the pending layer arrives while the subscriber's future is unresolved
    assert called.is_set() and not inner.done()
    release.set()
    assert inner.result(5) == "late"


def test_s3_2_task_send_returns_without_waiting_for_the_subscriber(make_comm: Factory) -> None:
    worker, sender = make_comm(), make_comm()
    gate: concurrent.futures.Future[Any] = kiwipy.Future()
    worker.add_task_subscriber(lambda c, t: gate)
    t0 = time.monotonic()
    fut = sender.task_send("job")
    assert time.monotonic() - t0 < 1.0
    inner = fut.result(5)
    assert not inner.done()
    gate.set_result("finished")
    assert inner.result(5) == "finished"


def test_s3_2_blocking_step_is_limited_to_5s_with_kiwipy_timeout(comm: TatzelwurmCommunicator) -> None:
    assert comm.TASK_TIMEOUT == 5.0
    block = threading.Event()
    comm._loop.call_soon_threadsafe(lambda: block.wait(10))  # wedge the client's loop
    try:
        original = comm.TASK_TIMEOUT
        comm.TASK_TIMEOUT = 0.3  # the same mechanism, shortened for the test
        with pytest.raises(kiwipy.TimeoutError):
            comm.broadcast_send("stuck")
        comm.TASK_TIMEOUT = original
    finally:
        block.set()


def test_s3_3_subscribers_run_on_the_client_thread(make_comm: Factory) -> None:
    comm = make_comm()
    threads: dict[str, int] = {}
    comm.add_rpc_subscriber(lambda c, m: threads.setdefault("rpc", threading.get_ident()), "r")
    comm.add_task_subscriber(lambda c, t: threads.setdefault("task", threading.get_ident()))
    comm.add_broadcast_subscriber(lambda *a: threads.setdefault("bcast", threading.get_ident()))
    comm.rpc_send("r", None).result(5)
    comm.task_send("t").result(5)
    comm.broadcast_send("b")
    wait_for(lambda: len(threads) == 3)
    loop_thread = comm._thread.ident
    assert set(threads.values()) == {loop_thread} and loop_thread != threading.get_ident()


def test_s3_4_pending_futures_do_not_block_other_deliveries(make_comm: Factory) -> None:
    worker, sender = make_comm(), make_comm()
    gates: list[concurrent.futures.Future[Any]] = []

    def hold(comm: Any, task: Any) -> Any:
        fut: concurrent.futures.Future[Any] = kiwipy.Future()
        gates.append(fut)
        return fut

    worker.add_task_subscriber(hold)
    worker.add_rpc_subscriber(lambda c, m: kiwipy.Future(), "never")  # an RPC that never answers
    worker.add_rpc_subscriber(lambda c, m: "quick", "quick")
    bcasts: list[Any] = []
    worker.add_broadcast_subscriber(lambda *a: bcasts.append(a[1]))

    sender.rpc_send("never", None)
    futures = [sender.task_send(i) for i in range(20)]
    wait_for(lambda: len(gates) == 20)  # all 20 delivered although none finished
    assert sender.rpc_send("quick", None).result(5) == "quick"
    sender.broadcast_send("still flowing")
    wait_for(lambda: bcasts == ["still flowing"])
    for i, gate in enumerate(gates):
        gate.set_result(i)
    assert sorted(f.result(5).result(5) for f in futures) == list(range(20))


def test_s3_5_outer_future_resolves_only_after_the_subscriber_returned(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()
    log: list[str] = []

    def subscriber(comm: Any, msg: Any) -> Any:
        time.sleep(0.2)  # the subscriber takes a while before it returns its future
        log.append("queued callback")
        fut: concurrent.futures.Future[Any] = kiwipy.Future()
        fut.set_result("done")
        return fut

    server.add_rpc_subscriber(subscriber, "proc")
    server.add_task_subscriber(lambda c, t: subscriber(c, t))
    outer = client.rpc_send("proc", None)
    outer.result(5)
    assert log == ["queued callback"]
    outer = client.task_send("t")
    outer.result(5)
    assert log == ["queued callback", "queued callback"]


def test_s3_6_reentrant_calls_from_a_subscriber(make_comm: Factory) -> None:
    comm = make_comm()
    got: list[Any] = []

    def reentrant(c: Any, msg: Any) -> Any:
        c.add_rpc_subscriber(lambda c2, m: "inner", "inner-id")
        c.broadcast_send("from inside")
        return "ok"

    comm.add_rpc_subscriber(reentrant, "outer-id")
    comm.add_broadcast_subscriber(lambda *a: got.append(a[1]))
    assert comm.rpc_send("outer-id", None).result(5) == "ok"
    wait_for(lambda: got == ["from inside"])
    assert wait_for(lambda: _try(lambda: comm.rpc_send("inner-id", None).result(5))) == "inner"


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except kiwipy.UnroutableError:
        return None


# §4.1–4.3 RPC ----------------------------------------------------------------------------------


def test_s4_1_identifier_generated_routable_at_once_and_reusable(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()
    ident = server.add_rpc_subscriber(lambda c, m: "gen")
    assert isinstance(ident, str) and ident
    assert client.rpc_send(ident, None).result(5) == "gen"  # routable as soon as add returned
    pids = [uuid.uuid4() for _ in range(10)]
    for i, pid in enumerate(pids):
        assert server.add_rpc_subscriber(lambda c, m, i=i: i, str(pid)) == str(pid)
    assert [client.rpc_send(pid, None).result(5) for pid in pids] == list(range(10))
    server.remove_rpc_subscriber(str(pids[0]))
    server.add_rpc_subscriber(lambda c, m: "again", str(pids[0]))
    assert client.rpc_send(pids[0], None).result(5) == "again"


def test_s4_1_duplicate_rpc_identifier(make_comm: Factory) -> None:
    a, b = make_comm(), make_comm()
    a.add_rpc_subscriber(lambda c, m: 1, "dup")
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        a.add_rpc_subscriber(lambda c, m: 2, "dup")
    with pytest.raises(kiwipy.DuplicateSubscriberIdentifier):
        b.add_rpc_subscriber(lambda c, m: 2, "dup")


def test_s4_1_rpc_broadcast_and_task_identifiers_are_separate_namespaces(comm: TatzelwurmCommunicator) -> None:
    pid = str(uuid.uuid4())
    got: list[Any] = []
    assert comm.add_rpc_subscriber(lambda c, m: "rpc", pid) == pid
    assert comm.add_broadcast_subscriber(lambda *a: got.append(a[1]), pid) == pid
    assert comm.add_task_subscriber(lambda c, t: "task", pid) == pid
    assert comm.rpc_send(pid, None).result(5) == "rpc"
    comm.broadcast_send("b")
    wait_for(lambda: got == ["b"])


def test_s4_2_remove_rpc_subscriber(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()
    with pytest.raises(ValueError):
        server.remove_rpc_subscriber("unknown")
    server.add_rpc_subscriber(lambda c, m: 1, "gone")
    server.remove_rpc_subscriber("gone")
    with pytest.raises(kiwipy.UnroutableError):
        client.rpc_send("gone", None)


def test_s4_3_routing_uses_str_of_recipient_and_any_message(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()
    pid = uuid.uuid4()
    server.add_rpc_subscriber(lambda c, m: m, str(pid))
    for msg in (None, "text", {"intent": "pause", "message": None, "pid": pid}):
        assert client.rpc_send(pid, msg).result(5) == msg


def test_s4_3_unroutable_is_raised_synchronously(comm: TatzelwurmCommunicator) -> None:
    t0 = time.monotonic()
    with pytest.raises(kiwipy.UnroutableError):
        comm.rpc_send(uuid.uuid4(), {"intent": "play"})
    assert time.monotonic() - t0 < 1.0


def test_s4_3_recipient_gone_is_delivery_failed(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()
    server.add_rpc_subscriber(lambda c, m: kiwipy.Future(), "vanishing")
    inner = client.rpc_send("vanishing", None).result(5)  # the pending layer arrived
    server.close()
    with pytest.raises(kiwipy.DeliveryFailed):
        inner.result(5)


# §4.4–4.6 tasks ----------------------------------------------------------------------------------


def test_s4_4_competing_consumers_each_task_once(make_comm: Factory) -> None:
    w1, w2, sender = make_comm(), make_comm(), make_comm()
    seen: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def sub(name: str) -> Callable[[Any, Any], Any]:
        def run(comm: Any, task: Any) -> Any:
            with lock:
                seen.append((name, task))
            return task
        return run

    assert isinstance(w1.add_task_subscriber(sub("w1")), str)
    w2.add_task_subscriber(sub("w2"))
    futures = [sender.task_send(i) for i in range(30)]
    assert sorted(f.result(10) for f in futures) == list(range(30))
    assert sorted(t for _, t in seen) == list(range(30))  # exactly once each


def test_s4_5_remove_task_subscriber(make_comm: Factory) -> None:
    worker, sender = make_comm(), make_comm()
    with pytest.raises(ValueError):
        worker.remove_task_subscriber("unknown")
    ident = worker.add_task_subscriber(lambda c, t: "first")
    worker.remove_task_subscriber(ident)
    fut = sender.task_send("queued")
    with pytest.raises(kiwipy.TimeoutError):
        fut.result(0.5)  # stays queued, no error
    worker.add_task_subscriber(lambda c, t: f"late {t}")
    assert fut.result(5) == "late queued"


def test_s4_6_task_queued_without_subscribers(make_comm: Factory) -> None:
    sender = make_comm()
    fut = sender.task_send({"task": "launch"})
    with pytest.raises(kiwipy.TimeoutError):
        fut.result(0.01)
    worker = make_comm()
    worker.add_task_subscriber(lambda c, t: t["task"])
    assert fut.result(5) == "launch"


def test_s4_6_no_reply_returns_none_and_still_runs(make_comm: Factory) -> None:
    worker, sender = make_comm(), make_comm()
    ran = threading.Event()
    worker.add_task_subscriber(lambda c, t: ran.set())
    assert sender.task_send("fire and forget", True) is None
    assert sender.task_send("again", no_reply=True) is None
    assert ran.wait(5)


def test_s4_6_rejected_passes_to_next_subscriber_in_order(make_comm: Factory) -> None:
    worker, sender = make_comm(), make_comm()
    calls: list[str] = []

    def rejecting(comm: Any, task: Any) -> Any:
        calls.append("first")
        raise kiwipy.TaskRejected("not mine")

    def accepting(comm: Any, task: Any) -> Any:
        calls.append("second")
        return "second took it"

    worker.add_task_subscriber(rejecting)
    worker.add_task_subscriber(accepting)
    assert sender.task_send("t").result(5) == "second took it"
    assert calls == ["first", "second"]


def test_s4_6_all_reject_requeues_for_another_consumer(make_comm: Factory) -> None:
    picky, sender = make_comm(), make_comm()
    rejected = threading.Event()

    def reject(comm: Any, task: Any) -> Any:
        rejected.set()
        raise kiwipy.TaskRejected()

    picky.add_task_subscriber(reject)
    fut = sender.task_send("for somebody")
    assert rejected.wait(5)
    willing = make_comm()
    willing.add_task_subscriber(lambda c, t: "willing did it")
    assert fut.result(10) == "willing did it"


def test_s4_6_other_exception_completes_with_remote_exception(make_comm: Factory) -> None:
    worker, sender = make_comm(), make_comm()
    calls: list[str] = []

    def broken(comm: Any, task: Any) -> Any:
        calls.append("broken")
        raise RuntimeError("the task blew up")

    worker.add_task_subscriber(broken)
    worker.add_task_subscriber(lambda c, t: calls.append("next") or "unreachable")
    with pytest.raises(kiwipy.RemoteException, match="the task blew up"):
        sender.task_send("t").result(5)
    assert calls == ["broken"]


# §4.7–4.9 broadcasts -----------------------------------------------------------------------------


def test_s4_7_broadcast_filter_semantics(make_comm: Factory) -> None:
    rx, tx = make_comm(), make_comm()
    got: dict[str, list[Any]] = {"glob_sender": [], "subject_regex": [], "equality": [], "glob_subject": []}

    def rec(name: str) -> Callable[..., None]:
        return lambda comm, body, sender, subject, cid: got[name].append(body)

    rx.add_broadcast_subscriber(kiwipy.BroadcastFilter(rec("glob_sender"), sender="alice.jones"))
    rx.add_broadcast_subscriber(kiwipy.BroadcastFilter(rec("subject_regex"),
                                                       subject=re.compile("^(?!state_changed).*")))
    pid = uuid.uuid4()
    rx.add_broadcast_subscriber(kiwipy.BroadcastFilter(rec("equality"), sender=pid))
    rx.add_broadcast_subscriber(kiwipy.BroadcastFilter(rec("glob_subject"), subject="state_changed.*"))
    sends = [
        ("1", "alice.jones", "state_changed.running.waiting"),
        ("2", "alice.jones.junior", "hello"),   # prefix match of the sender glob
        ("3", "aliceXjones", "hello"),          # '.' is literal
        ("4", pid, "state_changed.created.running"),
        ("5", None, None),                      # None passes every filter
        ("6", "bob", "state_changedX"),
    ]
    for body, sender, subject in sends:
        tx.broadcast_send(body, sender=sender, subject=subject)
    wait_for(lambda: len(got["glob_sender"]) == 3 and len(got["glob_subject"]) == 3)
    time.sleep(0.2)
    assert got["glob_sender"] == ["1", "2", "5"]
    assert got["subject_regex"] == ["2", "3", "5"]
    assert got["equality"] == ["4", "5"]
    assert got["glob_subject"] == ["1", "4", "5"]


def test_s4_7_filters_are_applied_on_the_coordinator(make_comm: Factory) -> None:
    sender, sub = twc.server_filters(kiwipy.BroadcastFilter(lambda *a: None, subject=re.compile("^(?!state_changed).*"),
                                                            sender="a.*"))
    assert sub is not None and sub.pattern == "^(?!state_changed).*"
    assert sender is not None and sender.pattern == "a[.].*"
    assert twc.server_filters(kiwipy.BroadcastFilter(lambda *a: None, sender=uuid.uuid4())) == (None, None)
    assert twc.server_filters(lambda *a: None) == (None, None)


def test_s4_8_remove_broadcast_subscriber_and_reuse(make_comm: Factory) -> None:
    comm = make_comm()
    with pytest.raises(ValueError):
        comm.remove_broadcast_subscriber("unknown")
    got: list[Any] = []
    comm.add_broadcast_subscriber(lambda *a: got.append(("old", a[1])), "sub")
    comm.remove_broadcast_subscriber("sub")
    comm.add_broadcast_subscriber(lambda *a: got.append(("new", a[1])), "sub")
    comm.broadcast_send("x")
    wait_for(lambda: got)
    time.sleep(0.1)
    assert got == [("new", "x")]


def test_s4_9_broadcast_returns_true_self_delivery_order_and_round_trip(make_comm: Factory) -> None:
    a, b = make_comm(), make_comm()
    assert a.broadcast_send("nobody listens") is True
    got_a: list[tuple[Any, ...]] = []
    got_b: list[tuple[Any, ...]] = []
    a.add_broadcast_subscriber(lambda *args: got_a.append(args[1:]))
    b.add_broadcast_subscriber(lambda *args: got_b.append(args[1:]))
    pid = uuid.uuid4()
    expected = [({"n": i}, pid, "state_changed.a.b", 420) for i in range(50)]
    for body, sender, subject, cid in expected:
        assert a.broadcast_send(body, sender, subject, cid) is True  # positional, as LoopCommunicator does
    a.broadcast_send("plain", sender="str-sender", subject=None, correlation_id=None)
    expected.append(("plain", "str-sender", None, None))
    wait_for(lambda: len(got_a) == 51 and len(got_b) == 51)
    assert got_a == expected and got_b == expected
    assert isinstance(got_b[0][1], uuid.UUID) and got_b[0][3] == 420


# §4.10 close -----------------------------------------------------------------------------------


def test_s4_10_close_is_idempotent_and_everything_raises_closed(make_comm: Factory) -> None:
    comm = make_comm()
    with comm as entered:
        assert entered is comm
        assert not comm.is_closed()
    assert comm.is_closed()
    comm.close()
    comm.close()
    for call in (lambda: comm.add_rpc_subscriber(None, "rpc"), lambda: comm.add_task_subscriber(None),
                 lambda: comm.add_broadcast_subscriber(None), lambda: comm.broadcast_send(None),
                 lambda: comm.rpc_send("x", None), lambda: comm.task_send("t")):
        with pytest.raises(kiwipy.CommunicatorClosed):
            call()
    assert comm._loop.is_closed()


def test_s4_10_pending_futures_fail_on_close(make_comm: Factory) -> None:
    comm = make_comm()
    fut = comm.task_send("never picked up")
    comm.close()
    with pytest.raises(kiwipy.CommunicatorClosed):
        fut.result(5)


# §5 nested futures and errors ---------------------------------------------------------------------


def _done(value: Any) -> concurrent.futures.Future[Any]:
    f: concurrent.futures.Future[Any] = kiwipy.Future()
    f.set_result(value)
    return f


@pytest.mark.parametrize("kind", ["rpc", "task"])
def test_s5_layers_match_the_nesting_depth(make_comm: Factory, kind: str) -> None:
    server, client = make_comm(), make_comm()
    outcomes = {
        "plain": lambda: {"status": "ok"},
        "one": lambda: _done(5),
        "two": lambda: _done(_done(uuid.UUID(int=7))),
    }

    def subscriber(comm: Any, msg: Any) -> Any:
        return outcomes[msg]()

    if kind == "rpc":
        server.add_rpc_subscriber(subscriber, "x")
        send = lambda m: client.rpc_send("x", m)  # noqa: E731
    else:
        server.add_task_subscriber(subscriber)
        send = client.task_send
    assert send("plain").result(5) == {"status": "ok"}
    one = send("one").result(5)
    assert isinstance(one, kiwipy.Future) and one.result(5) == 5
    two = send("two").result(5)
    middle = two.result(5)
    assert isinstance(middle, kiwipy.Future)
    assert middle.result(5) == uuid.UUID(int=7)


@pytest.mark.parametrize("kind", ["rpc", "task"])
def test_s5_outer_readable_before_inner_is_set(make_comm: Factory, kind: str) -> None:
    server, client = make_comm(), make_comm()
    inner: concurrent.futures.Future[Any] = kiwipy.Future()
    sub = lambda c, m: _done(inner)  # noqa: E731 - future -> future -> value
    if kind == "rpc":
        server.add_rpc_subscriber(sub, "x")
        outer = client.rpc_send("x", None)
    else:
        server.add_task_subscriber(sub)
        outer = client.task_send(None)
    level1 = outer.result(5)
    level2 = level1.result(5)
    assert not level2.done()
    inner.set_result("finally")
    assert level2.result(5) == "finally"


@pytest.mark.parametrize("kind", ["rpc", "task"])
def test_s5_exceptions_and_cancellation_per_level(make_comm: Factory, kind: str) -> None:
    server, client = make_comm(), make_comm()

    def failing_future() -> Any:
        f: concurrent.futures.Future[Any] = kiwipy.Future()
        f.set_exception(KeyError("inner problem"))
        return f

    def cancelled_future() -> Any:
        f: concurrent.futures.Future[Any] = kiwipy.Future()
        f.cancel()
        return f

    def subscriber(comm: Any, msg: Any) -> Any:
        if msg == "raise":
            raise ValueError("direct problem")
        if msg == "fail":
            return failing_future()
        return cancelled_future()

    if kind == "rpc":
        server.add_rpc_subscriber(subscriber, "x")
        send = lambda m: client.rpc_send("x", m)  # noqa: E731
    else:
        server.add_task_subscriber(subscriber)
        send = client.task_send
    with pytest.raises(kiwipy.RemoteException) as info:
        send("raise").result(5)
    assert str(info.value) == "direct problem"
    level = send("fail").result(5)
    with pytest.raises(kiwipy.RemoteException) as info:
        level.result(5)
    assert str(info.value) == str(KeyError("inner problem"))
    level = send("cancel").result(5)
    with pytest.raises(kiwipy.CancelledError):
        level.result(5)
    assert level.cancelled()


def test_s5_coroutine_function_subscribers_are_awaited_on_the_client_loop(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()
    loops: list[Any] = []

    async def coro_sub(comm: Any, msg: Any) -> Any:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        return msg * 3

    server.add_rpc_subscriber(coro_sub, "co")
    server.add_task_subscriber(coro_sub)
    assert client.rpc_send("co", 2).result(5) == 6
    assert client.task_send(3).result(5) == 9
    assert loops == [server._loop, server._loop]


def test_s5_asyncio_future_of_the_client_loop_is_one_layer(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()

    def sub(comm: Any, msg: Any) -> Any:
        fut = comm._loop.create_future()
        comm._loop.call_later(0.05, fut.set_result, "from asyncio")
        return fut

    server.add_rpc_subscriber(sub, "aio")
    assert client.rpc_send("aio", None).result(5).result(5) == "from asyncio"


# §6 calling convention ---------------------------------------------------------------------------


def test_s6_calling_convention(comm: TatzelwurmCommunicator) -> None:
    seen: dict[str, Any] = {}

    def rpc(*args: Any, **kwargs: Any) -> Any:
        seen["rpc"] = (args, kwargs)

    def task(*args: Any, **kwargs: Any) -> Any:
        seen["task"] = (args, kwargs)

    def bcast(*args: Any, **kwargs: Any) -> Any:
        seen["bcast"] = (args, kwargs)

    comm.add_rpc_subscriber(rpc, "conv")
    comm.add_task_subscriber(task)
    comm.add_broadcast_subscriber(bcast)
    comm.rpc_send("conv", "m").result(5)
    comm.task_send("t").result(5)
    comm.broadcast_send("b", "s", "subj", 1)
    wait_for(lambda: "bcast" in seen)
    assert seen["rpc"] == ((comm, "m"), {})
    assert seen["task"] == ((comm, "t"), {})
    assert seen["bcast"] == ((comm, "b", "s", "subj", 1), {})  # all positional


def test_s6_failing_broadcast_subscribers_do_not_disturb_anything(make_comm: Factory,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    comm, sender = make_comm(), make_comm()
    got: list[Any] = []

    def raises(*args: Any) -> None:
        raise RuntimeError("subscriber bug")

    def wrong_signature() -> None:  # TypeError on every message
        pass

    comm.add_broadcast_subscriber(raises)
    comm.add_broadcast_subscriber(wrong_signature)
    comm.add_broadcast_subscriber(lambda *a: got.append(a[1]))
    comm.add_broadcast_subscriber(lambda *a: kiwipy.Future())  # return values are ignored
    for i in range(3):
        assert sender.broadcast_send(i) is True
    wait_for(lambda: got == [0, 1, 2])
    assert "subscriber bug" in caplog.text
    assert comm.rpc_send is not None and not comm.is_closed()


# §7 loop -----------------------------------------------------------------------------------------


def test_s7_loop_attribute_and_ownership(make_comm: Factory) -> None:
    comm = make_comm()
    comm._loop.set_debug(True)
    assert comm.loop() is comm._loop
    assert comm._loop.is_running()
    comm.close()
    assert comm._loop.is_closed() and not comm._thread.is_alive()


# §8 payloads -------------------------------------------------------------------------------------


def test_s8_default_encoder_round_trips_plumpy_values(make_comm: Factory) -> None:
    server, client = make_comm(), make_comm()
    pid = uuid.uuid4()
    values = [None, True, 5, "s", {"a": [1, 2, {"b": None}]}, pid,
              {"task": "launch", "process_class": "plumpy.Process", "persist": True, "nowait": False,
               "init_args": (), "init_kwargs": {"inputs": {"a": 1}}},
              {"task": "continue", "pid": pid, "nowait": False, "tag": None},
              {"default": 5}, {},
              {"ctime": 1.5, "paused": False, "process_string": "<P>", "state": "waiting", "state_info": "x"}]
    server.add_rpc_subscriber(lambda c, m: m, "echo")
    server.add_task_subscriber(lambda c, t: t)
    for value in values:
        assert client.rpc_send("echo", value).result(5) == value
        assert client.task_send(value).result(5) == value
    out = client.task_send({"pid": pid}).result(5)
    assert isinstance(out["pid"], uuid.UUID)


def test_s8_task_travels_as_task_no_reply_pair_with_custom_codec(coordinator: Coordinator, make_comm: Factory,
                                                                  unique: str) -> None:
    import json

    encoded: list[Any] = []

    def enc(obj: Any) -> bytes:
        encoded.append(obj)
        return json.dumps(obj).encode()

    comm = make_comm(encoder=enc, decoder=lambda b: json.loads(b))
    comm.add_task_subscriber(lambda c, t: {"got": t})
    assert comm.task_send({"x": 1}).result(5) == {"got": {"x": 1}}
    assert encoded[0] == ({"x": 1}, False)


# §9 library assumptions --------------------------------------------------------------------------


def test_s9_lost_connection_gives_timeout_error_from_broadcast_send(tmp_path: Any, names: dict[str, str]) -> None:
    from conftest import Coordinator as C

    coord = C(tmp_path / "data")
    coord.start()
    comm = twc.connect(connection_params={"data_dir": str(coord.data)}, **names)
    got: list[Any] = []
    comm.add_broadcast_subscriber(lambda *a: got.append(a[1]))
    try:
        assert comm.broadcast_send("up") is True
        coord.kill()
        with pytest.raises(kiwipy.TimeoutError):
            for _ in range(3):  # the first one may still be written into the dying socket
                comm.broadcast_send("down")
                time.sleep(0.2)
        coord.start()  # new port: found again through the data dir
        assert wait_for(lambda: _try_broadcast(comm), timeout=15) is True
        wait_for(lambda: "back" in got)  # the subscription was restored on the new connection
    finally:
        comm.close()
        coord.stop()


def _try_broadcast(comm: TatzelwurmCommunicator) -> Any:
    try:
        return comm.broadcast_send("back")
    except kiwipy.TimeoutError:
        return None


# asyncio-native variant -----------------------------------------------------------------------------


async def test_async_communicator(coordinator: Coordinator, names: dict[str, str]) -> None:
    params = {"url": coordinator.address, "token": coordinator.token}
    a = await twc.connect_async(params, **names)
    b = await twc.connect_async(params, **names)
    try:
        loop = asyncio.get_running_loop()

        def sub(comm: Any, msg: Any) -> Any:
            fut = loop.create_future()
            loop.call_later(0.01, fut.set_result, msg + 1)
            return fut

        await a.add_rpc_subscriber(sub, "inc")
        await a.add_task_subscriber(lambda c, t: t * 2)
        outer = await b.rpc_send("inc", 1)
        assert asyncio.isfuture(outer) and await (await outer) == 2
        assert await (await b.task_send(21)) == 42
        got: list[Any] = []
        await a.add_broadcast_subscriber(lambda *args: got.append(args[1:]))
        assert await b.broadcast_send("hi", uuid.UUID(int=1), "subj", 420) is True
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [("hi", uuid.UUID(int=1), "subj", 420)]
        with pytest.raises(kiwipy.UnroutableError):
            await b.rpc_send("nobody", None)
        assert inspect.iscoroutinefunction(a.task_send)
    finally:
        await a.close()
        await b.close()
    with pytest.raises(kiwipy.CommunicatorClosed):
        await a.broadcast_send("x")


# beyond the contract: actioner control of communicator tasks ------------------------------------


async def test_kill_of_a_communicator_task_cancels_the_sender_future(coordinator: Coordinator,
                                                                     make_comm: Factory) -> None:
    import tatzelwurm

    worker, sender = make_comm(), make_comm()
    gate: concurrent.futures.Future[Any] = kiwipy.Future()
    worker.add_task_subscriber(lambda c, t: gate)
    outer = sender.task_send("long process")
    inner = await asyncio.wrap_future(outer)  # pending layer: the subscriber holds the task
    async with await tatzelwurm.connect(coordinator.address, coordinator.token) as actioner:
        running = await actioner.list(state="run", type=sender.task_queue)
        (task,) = running.tasks
        await actioner.kill(task.id)
        outcome = await actioner.wait(task.id)
        assert outcome.exit_code == -1
    with pytest.raises(kiwipy.CancelledError):
        inner.result(5)
    assert gate.cancelled()


async def test_task_policy_is_passed_on(coordinator: Coordinator, make_comm: Factory) -> None:
    import tatzelwurm

    comm = make_comm(task_policy=tatzelwurm.DeliveryPolicy.AT_LEAST_ONCE)
    comm.task_send("queued", no_reply=True)
    async with await tatzelwurm.connect(coordinator.address, coordinator.token) as actioner:
        (task,) = (await actioner.list(type=comm.task_queue)).tasks
        assert task.policy == tatzelwurm.DeliveryPolicy.AT_LEAST_ONCE and task.no_reply
        await actioner.kill(task.id)
