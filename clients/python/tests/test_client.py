"""asyncio client against a real coordinator: actioner operations, RPC, broadcast, errors."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

import tatzelwurm
from tatzelwurm import protocol as p

from conftest import Coordinator, eventually


async def test_connect_reads_address_and_token_from_data_dir(coordinator: Coordinator, monkeypatch) -> None:
    monkeypatch.delenv("TATZELWURM_SERVER", raising=False)
    monkeypatch.delenv("TATZELWURM_TOKEN", raising=False)
    monkeypatch.setenv("TATZELWURM_DATA", str(coordinator.data))
    c = await tatzelwurm.connect()
    try:
        assert c.welcome is not None and c.welcome.version == 1
        assert c.welcome.heartbeat_ms > 0
    finally:
        await c.close()


async def test_connect_from_environment(coordinator: Coordinator, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TATZELWURM_SERVER", coordinator.address)
    monkeypatch.setenv("TATZELWURM_TOKEN", coordinator.token)
    monkeypatch.setenv("TATZELWURM_DATA", str(tmp_path))  # empty: env wins anyway
    async with await tatzelwurm.connect() as c:
        assert c.connected


async def test_wrong_token_raises_auth_failed(coordinator: Coordinator) -> None:
    with pytest.raises(tatzelwurm.AuthFailed) as info:
        await tatzelwurm.connect(coordinator.address, "not-the-token")
    assert info.value.code == p.ErrorCode.AUTH_FAILED


async def test_add_show_list_and_control(client: tatzelwurm.Client, unique: str) -> None:
    tid = await client.add({"task": "continue", "pid": 42}, type=f"t-{unique}", priority=5,
                           tags=["user:alice", f"u:{unique}"], policy=tatzelwurm.DeliveryPolicy.AT_LEAST_ONCE,
                           ready=False)
    info = await client.show(tid)
    assert info.state == p.TaskState.CREATED
    assert info.type == f"t-{unique}" and info.priority == 5 and "user:alice" in info.tags
    assert info.policy == p.DeliveryPolicy.AT_LEAST_ONCE
    listed = await client.list(tag=f"u:{unique}")
    assert [t.id for t in listed.tasks] == [tid] and listed.matched == 1

    await client.play(tid)
    assert (await client.show(tid)).state == p.TaskState.READY
    await client.pause(tid)
    assert (await client.show(tid)).state == p.TaskState.PAUSE
    await client.kill(tid)
    info = await client.show(tid)
    assert info.state == p.TaskState.TERMINATED and info.exit_code == -1
    assert len(info.history) >= 4

    with pytest.raises(tatzelwurm.IllegalTransition) as exc:
        await client.play(tid)
    assert exc.value.control_result.failed[0].task_id == tid  # type: ignore[attr-defined]
    result = await client.play(tid, check=False)
    assert result.applied == [] and result.failed[0].code == p.ErrorCode.ILLEGAL_TRANSITION


async def test_unknown_task_is_typed(client: tatzelwurm.Client) -> None:
    with pytest.raises(tatzelwurm.UnknownTask):
        await client.show(987654321)
    with pytest.raises(tatzelwurm.UnknownTask):
        await client.wait(987654321)


async def test_iter_tasks_pages(client: tatzelwurm.Client, unique: str) -> None:
    ids = await client.add_many([tatzelwurm.TaskSpec(b"x", f"page-{unique}", 0, [f"p:{unique}"], 0, False, False)
                                 for _ in range(7)])
    seen = [t.id async for t in client.iter_tasks(tag=f"p:{unique}", page=3)]
    assert seen == ids


async def test_rpc_register_call_unregister(coordinator: Coordinator, unique: str) -> None:
    ns = f"ns-{unique}"
    async with await tatzelwurm.connect(coordinator.address, coordinator.token) as server, \
            await tatzelwurm.connect(coordinator.address, coordinator.token) as caller:

        async def echo(payload: bytes) -> bytes:
            return b"echo:" + payload

        def boom(payload: bytes) -> bytes:
            raise RuntimeError("no")

        await server.register_rpc(ns, "echo", echo)
        await server.register_rpc(ns, "boom", boom)
        with pytest.raises(tatzelwurm.DuplicateIdentifier):
            await caller.register_rpc(ns, "echo", echo)
        assert await caller.call_value(ns, "echo", b"hi") == b"echo:hi"
        with pytest.raises(tatzelwurm.RemoteError, match="RuntimeError: no"):
            await caller.call_value(ns, "boom")
        with pytest.raises(tatzelwurm.Unroutable):
            await caller.call(ns, "nobody")
        await server.unregister_rpc(ns, "echo")
        with pytest.raises(tatzelwurm.Unroutable):
            await caller.call(ns, "echo")
        with pytest.raises(tatzelwurm.UnknownIdentifier):
            await server.unregister_rpc(ns, "echo")


async def test_rpc_layers(client: tatzelwurm.Client, unique: str) -> None:
    ns = f"ns-{unique}"
    loop = asyncio.get_running_loop()

    def nested(payload: bytes):  # type: ignore[no-untyped-def]
        outer, inner = loop.create_future(), loop.create_future()
        outer.set_result(inner)
        loop.call_later(0.05, inner.set_result, b"deep")
        return outer

    await client.register_rpc(ns, "nested", nested)
    layers: list[int] = []
    result = await client.call(ns, "nested", b"", on_layer=layers.append)
    assert result.ok and result.payload == b"deep" and result.layers == 2 and layers == [1, 2]


async def test_rpc_recipient_disconnect_is_delivery_failed(coordinator: Coordinator, client: tatzelwurm.Client,
                                                           unique: str) -> None:
    ns = f"ns-{unique}"
    server = await tatzelwurm.connect(coordinator.address, coordinator.token)
    never = asyncio.get_running_loop().create_future()
    await server.register_rpc(ns, "hang", lambda payload: never)
    call = asyncio.ensure_future(client.call(ns, "hang"))
    await asyncio.sleep(0.2)
    await server.close()
    with pytest.raises(tatzelwurm.DeliveryFailed):
        await asyncio.wait_for(call, 10)


async def test_broadcast_filters_run_on_the_coordinator(coordinator: Coordinator, unique: str) -> None:
    ns = f"ns-{unique}"
    async with await tatzelwurm.connect(coordinator.address, coordinator.token) as a, \
            await tatzelwurm.connect(coordinator.address, coordinator.token) as b:
        got_all: list[p.BroadcastDelivery] = []
        got_glob: list[p.BroadcastDelivery] = []
        got_regex: list[p.BroadcastDelivery] = []
        await b.subscribe(ns, "all", got_all.append)
        await b.subscribe(ns, "glob", got_glob.append, subject="state_changed.*")
        await b.subscribe(ns, "regex", got_regex.append, subject=tatzelwurm.Filter.regex("^(?!state_changed).*"),
                          sender="alice.*")
        await a.broadcast(ns, b"1", sender="alice.jones", subject="state_changed.running.waiting", correlation_id="420")
        await a.broadcast(ns, b"2", sender="bob", subject="hello")
        await a.broadcast(ns, b"3", sender="alice.smith", subject="hello")
        await a.broadcast(ns, b"4", sender=None, subject=None)
        await a.broadcast(f"other-{unique}", b"5")
        await eventually(lambda: len(got_all) == 4)
        assert [d.body for d in got_all] == [b"1", b"2", b"3", b"4"]
        assert got_all[0].correlation_id == "420" and got_all[0].sender == "alice.jones"
        assert [d.body for d in got_glob] == [b"1", b"4"]
        assert [d.body for d in got_regex] == [b"3", b"4"]
        # one delivery per connection, naming every matching subscription
        assert set(got_all[3].subscriptions) == {"all", "glob", "regex"}
        await b.unsubscribe(ns, "all")
        with pytest.raises(tatzelwurm.UnknownIdentifier):
            await b.unsubscribe(ns, "all")


async def test_wait_result_future_and_watch(coordinator: Coordinator, client: tatzelwurm.Client, unique: str) -> None:
    worker = tatzelwurm.Worker(slots=2, address=coordinator.address, token=coordinator.token)

    @worker.handler(f"sq-{unique}")
    async def square(task: tatzelwurm.TaskContext) -> int:
        return int(task.data()) ** 2

    @worker.handler(f"fail-{unique}")
    async def fail(task: tatzelwurm.TaskContext) -> None:
        raise ValueError("boom")

    events: list[p.TaskEvent] = []

    async def watch() -> None:
        async for ev in client.watch(type=f"sq-{unique}"):
            events.append(ev)

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0.1)
    await worker.start()
    try:
        tid = await client.add(7, type=f"sq-{unique}")
        outcome = await client.wait(tid)
        assert outcome.exit_code == 0 and msgpack.unpackb(outcome.result) == 49 and outcome.layers == 0
        assert await client.result(tid) == 49
        fid = await client.add(b"", type=f"fail-{unique}")
        with pytest.raises(tatzelwurm.RemoteError, match="ValueError: boom"):
            await client.result(fid)
        await eventually(lambda: any(e.task_id == tid and e.state == p.TaskState.TERMINATED for e in events))
        states = [e.state for e in events if e.task_id == tid]
        assert p.TaskState.RUN in states
    finally:
        watcher.cancel()
        await worker.stop()


async def test_frames_over_max_frame_are_refused_locally(tmp_path) -> None:
    coord = Coordinator(tmp_path / "data", extra_args=["--max-frame", "4096"])
    coord.start()
    try:
        async with await tatzelwurm.connect(coord.address, coord.token) as c:
            assert c.welcome is not None and c.welcome.max_frame == 4096
            too_large = r"^{} of 5,0\d\d bytes exceeds the coordinator's max_frame of 4,096 bytes \(FRAME_TOO_LARGE\)$"
            with pytest.raises(p.FrameTooLarge, match=too_large.format("AddTasks")):
                await c.add(b"x" * 5000, type="big")
            with pytest.raises(p.FrameTooLarge, match=too_large.format("RpcCall")):
                await c.call("ns", "svc", b"x" * 5000)
            with pytest.raises(p.FrameTooLarge, match=too_large.format("Broadcast")):
                await c.broadcast("ns", b"x" * 5000)
            assert await c.add(b"x" * 100, type="small") > 0  # the connection is still fine
    finally:
        coord.stop()


async def test_rpc_reply_over_max_frame_gives_the_caller_the_sizes(tmp_path) -> None:
    # Unsent, the reply would leave the caller waiting until the recipient disconnects.
    coord = Coordinator(tmp_path / "data", extra_args=["--max-frame", "16384"])
    coord.start()
    try:
        async with await tatzelwurm.connect(coord.address, coord.token) as server, \
                await tatzelwurm.connect(coord.address, coord.token) as caller:
            def svc(payload: bytes) -> bytes:
                if payload == b"raise":
                    raise ValueError("x" * 20_000)
                return b"r" * 20_000 if payload == b"big" else b"ok"
            await server.register_rpc("ns", "svc", svc)
            with pytest.raises(tatzelwurm.RemoteError) as big:
                await asyncio.wait_for(caller.call_value("ns", "svc", b"big"), 10)
            assert str(big.value) == "RPC result of 20,000 bytes exceeds the coordinator's max_frame of 16,384 bytes"
            with pytest.raises(tatzelwurm.RemoteError) as raised:
                await asyncio.wait_for(caller.call_value("ns", "svc", b"raise"), 10)
            assert str(raised.value) == ("error text of 20,012 bytes exceeds the coordinator's max_frame of 16,384 bytes; "
                                         "the error text began: ValueError: " + "x" * 988)
            assert await caller.call_value("ns", "svc", b"small") == b"ok"  # the recipient is still there
    finally:
        coord.stop()


async def test_reconnect_after_connection_drop_restores_rpc_and_subscriptions(coordinator: Coordinator,
                                                                              unique: str) -> None:
    ns = f"ns-{unique}"
    async with await tatzelwurm.connect(coordinator.address, coordinator.token) as server, \
            await tatzelwurm.connect(coordinator.address, coordinator.token) as other:
        got: list[bytes] = []
        await server.register_rpc(ns, "svc", lambda payload: b"pong")
        await server.subscribe(ns, "sub", lambda d: got.append(d.body))
        reconnected = asyncio.Event()
        server.on_reconnect(reconnected.set)
        assert server.connection is not None
        server.connection.abort(tatzelwurm.ConnectionLost("simulated drop"))
        await asyncio.wait_for(reconnected.wait(), 10)
        assert await other.call_value(ns, "svc") == b"pong"
        await other.broadcast(ns, b"after")
        await eventually(lambda: got == [b"after"])
