"""Golden frames shared with the C# suite: decode each one and re-encode it byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from tatzelwurm import protocol as p


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "Tatzelwurm.sln").is_file():
            return parent
    raise RuntimeError("Tatzelwurm.sln not found above " + str(here))


GOLDEN = _repo_root() / "protocol" / "golden"
FILES = sorted(GOLDEN.glob("*.hex"))
PAYLOAD = bytes.fromhex("81a47461736ba8636f6e74696e7565")

# The samples of tests/Tatzelwurm.Protocol.Tests/GoldenVectors.cs, so the decoded values are
# checked too, not only the round trip.
EXPECTED: dict[str, p.Message] = {
    "hello": p.Hello(1, "worker", "s3cret-token", "workwurm/1.0"),
    "welcome": p.Welcome(1, "c0ffee", 2000, 10000, 16 * 1024 * 1024),
    "error": p.Error(7, p.ErrorCode.ILLEGAL_TRANSITION, "task 42 is terminated: cannot play"),
    "error_connection": p.Error(0, p.ErrorCode.AUTH_FAILED, "wrong token"),
    "ok": p.Ok(9),
    "register_worker": p.RegisterWorker(1, "host-1234-ab12", "host", ["async", "sync"], 4,
                                        [p.HeldTask(42, False), p.HeldTask(43, True)], True),
    "worker_registered": p.WorkerRegistered(1, [43], True),
    "heartbeat": p.Heartbeat(17),
    "heartbeat_ack": p.HeartbeatAck(17),
    "assign_task": p.AssignTask(42, "async", PAYLOAD, 1, False),
    "task_update_finished": p.TaskUpdate(3, 42, p.TaskUpdateKind.FINISHED, 0, bytes([1, 2, 3]), None),
    "task_update_failed": p.TaskUpdate(4, 42, p.TaskUpdateKind.FINISHED, 3, None, "ValueError: boom"),
    "assign_tasks": p.AssignTasks([p.AssignTask(42, "async", PAYLOAD, 1, False), p.AssignTask(43, "sync", b"", 2, True)]),
    "task_updates": p.TaskUpdates(24, [
        p.TaskReport(42, p.TaskUpdateKind.ACCEPTED, 0, None, None),
        p.TaskReport(42, p.TaskUpdateKind.FINISHED, 0, bytes([1, 2, 3]), None),
        p.TaskReport(43, p.TaskUpdateKind.FINISHED, 3, None, "ValueError: boom")]),
    "task_updates_result": p.TaskUpdatesResult(24, [p.ReportFailure(2, p.ErrorCode.ILLEGAL_TRANSITION,
                                                                    "task 43 is terminated: cannot finish")]),
    "control_task": p.ControlTask(42, p.ControlAction.KILL),
    "drain_notice": p.DrainNotice(True),
    "add_tasks": p.AddTasks(5, [p.TaskSpec(PAYLOAD, "async", 10, ["computer:daint", "user:alice"],
                                           p.DeliveryPolicy.AT_LEAST_ONCE, True, False)]),
    "tasks_added": p.TasksAdded(5, [1, 2, 300, 70000, 5000000000]),
    "control_tasks": p.ControlTasks(6, p.TaskAction.PLAY, [], True),
    "control_result": p.ControlResult(6, [1, 2], [p.TaskFailure(3, p.ErrorCode.ILLEGAL_TRANSITION,
                                                                "task 3 is run: cannot play")]),
    "list_tasks": p.ListTasks(8, 1, "async", None, None, 0, 100),
    "task_list": p.TaskList(8, [p.TaskInfo(1, 1, "async", 0, ["a"], p.DeliveryPolicy.AT_MOST_ONCE, None, 0, None,
                                           1700000000000, 1700000000500, None, 15, [], None, False, False)],
                            {1: 1}, 1),
    "show_task": p.ShowTask(10, 1),
    "task_detail": p.TaskDetail(10, p.TaskInfo(
        1, 5, "async", -3, [], p.DeliveryPolicy.AT_LEAST_ONCE, None, 1, -1, 1700000000000, 1700000009000,
        "killed by actioner", 15,
        [p.TransitionInfo(1, 1700000000000, None), p.TransitionInfo(5, 1700000009000, "killed by actioner")],
        None, True, False)),
    "list_workers": p.ListWorkers(11),
    "worker_list": p.WorkerList(11, [p.WorkerInfo("host-1234-ab12", "host", ["async"], 4, 2, "connected",
                                                  1700000001000, 1700000000000, False)]),
    "worker_command": p.WorkerCommand(12, "host", p.WorkerAction.DRAIN),
    "set_tag_limit": p.SetTagLimit(13, "computer:daint", 50),
    "list_tag_limits": p.ListTagLimits(14),
    "tag_limit_list": p.TagLimitList(14, [p.TagLimitInfo("computer:daint", 50, 12)]),
    "wait_task": p.WaitTask(15, 42),
    "task_layer": p.TaskLayer(15, 42, 1),
    "task_outcome": p.TaskOutcome(15, 42, 0, PAYLOAD, None, 1),
    "watch_tasks": p.WatchTasks(16, None, "user:alice"),
    "task_event": p.TaskEvent(42, 3, "async", "host-1234-ab12", None, 1700000002000, None),
    "rpc_register": p.RpcRegister(17, "aiida-profile", "2f0c3c7e-8a8e-4a3c-9d7e-0d1a2b3c4d5e"),
    "rpc_unregister": p.RpcUnregister(18, "aiida-profile", "2f0c3c7e-8a8e-4a3c-9d7e-0d1a2b3c4d5e"),
    "rpc_call": p.RpcCall(19, "aiida-profile", "2f0c3c7e-8a8e-4a3c-9d7e-0d1a2b3c4d5e", PAYLOAD),
    "rpc_delivery": p.RpcDelivery(77, "aiida-profile", "2f0c3c7e-8a8e-4a3c-9d7e-0d1a2b3c4d5e", PAYLOAD),
    "rpc_layer": p.RpcLayer(19, 1),
    "rpc_result": p.RpcResult(19, True, PAYLOAD, None, 1),
    "rpc_response": p.RpcResponse(77, p.RpcResponseKind.ERROR, None, "RuntimeError: no"),
    "subscribe": p.Subscribe(20, "aiida-profile", "sub-1", None, p.Filter(p.FilterKind.REGEX, "^(?!state_changed).*")),
    "unsubscribe": p.Unsubscribe(21, "aiida-profile", "sub-1"),
    "broadcast": p.Broadcast(22, "aiida-profile", PAYLOAD, "42", "state_changed.running.waiting", "420"),
    "broadcast_delivery": p.BroadcastDelivery(["sub-1", "sub-2"], "aiida-profile", PAYLOAD, None, "hello", None),
}


def test_every_message_type_has_a_golden_frame() -> None:
    assert FILES, f"no golden frames under {GOLDEN}"
    names = {f.stem for f in FILES}
    assert names == set(EXPECTED)
    covered = {type(m) for m in EXPECTED.values()}
    assert covered == set(p.MESSAGE_TYPES.values())


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_golden_frame_round_trips_byte_for_byte(path: Path) -> None:
    frame = bytes.fromhex(path.read_text().strip())
    message = p.decode_frame(frame)
    assert message == EXPECTED[path.stem]
    assert p.encode_frame(message) == frame
    # Encoding the hand-built sample gives the same bytes as well.
    assert p.encode_frame(EXPECTED[path.stem]) == frame


# Frames in the shape a peer from before the batched worker messages sends: shorter arrays that
# must still decode, the missing trailing fields taking their defaults.
OLD_SHAPES: dict[str, p.Message] = {
    "register_worker_6_fields": p.RegisterWorker(1, "host-1234-ab12", "host", ["async", "sync"], 4,
                                                 [p.HeldTask(42, False), p.HeldTask(43, True)]),
    "worker_registered_2_fields": p.WorkerRegistered(1, [43]),
}


@pytest.mark.parametrize("name", sorted(OLD_SHAPES))
def test_old_shape_frame_decodes_with_defaults(name: str) -> None:
    frame = bytes.fromhex((GOLDEN / "decode-only" / f"{name}.hex").read_text().strip())
    message = p.decode_frame(frame)
    assert message == OLD_SHAPES[name]
    assert getattr(message, "batches") is False


def test_error_frames_become_typed_exceptions() -> None:
    err = p.decode_frame(bytes.fromhex((GOLDEN / "error.hex").read_text().strip()))
    assert isinstance(err, p.Error)
    exc = err.exception()
    assert isinstance(exc, p.IllegalTransition) and isinstance(exc, p.TatzelwurmError)
    assert exc.code == p.ErrorCode.ILLEGAL_TRANSITION and exc.request_id == 7
    assert "cannot play" in str(exc)
    assert isinstance(p.error_from_code(11, "x"), p.Unroutable)
    assert type(p.error_from_code(99, "future code")) is p.TatzelwurmError


def test_frame_decoder_splits_stream_and_refuses_oversized_frames() -> None:
    frames = [p.encode_frame(p.Heartbeat(i)) for i in range(3)]
    stream = b"".join(frames)
    dec = p.FrameDecoder()
    got = []
    for i in range(0, len(stream), 3):  # dribble the bytes in
        got += dec.feed(stream[i:i + 3])
    assert got == [p.Heartbeat(0), p.Heartbeat(1), p.Heartbeat(2)]
    with pytest.raises(p.ProtocolError) as info:
        p.FrameDecoder(max_frame=10).feed(b"\x00\x00\x01\x00")
    assert info.value.code == p.ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(p.ProtocolError):
        p.FrameDecoder().feed(b"\x00\x00\x00\x00")


@pytest.mark.parametrize("body", [b"\xc1", b"\x93\x01\x02\x03", b"\x92\xa1x\x90", b"\x92\x0c\x90"])
def test_malformed_bodies_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_body(body)


def test_unknown_message_code() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_body(bytes.fromhex("92cd03e791") + b"\x01")
    assert info.value.code == p.ErrorCode.UNKNOWN_MESSAGE
