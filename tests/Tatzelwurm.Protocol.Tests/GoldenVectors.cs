using Tatzelwurm.Protocol;

namespace Tatzelwurm.Protocol.Tests;

/// <summary>
/// One sample of every message type. Their frames are stored under protocol/golden/NAME.hex and
/// checked byte for byte by this suite and by the Python client's suite.
/// Regenerate (only when adding messages) with TATZELWURM_WRITE_GOLDEN=1 dotnet test.
/// </summary>
internal static class GoldenVectors
{
    private static readonly byte[] Payload = [0x81, 0xa4, 0x74, 0x61, 0x73, 0x6b, 0xa8, 0x63, 0x6f, 0x6e, 0x74, 0x69, 0x6e, 0x75, 0x65];

    public static IReadOnlyList<(string Name, IMessage Message)> All { get; } =
    [
        ("hello", new Hello(1, Roles.Worker, "s3cret-token", "workwurm/1.0")),
        ("welcome", new Welcome(1, "c0ffee", 2000, 10000, 16 * 1024 * 1024)),
        ("error", new ErrorReply(7, ErrorCode.IllegalTransition, "task 42 is terminated: cannot play")),
        ("error_connection", new ErrorReply(0, ErrorCode.AuthFailed, "wrong token")),
        ("ok", new OkReply(9)),
        ("register_worker", new RegisterWorker(1, "host-1234-ab12", "host", ["async", "sync"], 4, [new HeldTask(42, false), new HeldTask(43, true)], Batches: true)),
        ("worker_registered", new WorkerRegistered(1, [43], Batches: true)),
        ("heartbeat", new Heartbeat(17)),
        ("heartbeat_ack", new HeartbeatAck(17)),
        ("assign_task", new AssignTask(42, "async", Payload, 1, false)),
        ("task_update_finished", new TaskUpdate(3, 42, TaskUpdateKind.Finished, 0, [1, 2, 3], null)),
        ("task_update_failed", new TaskUpdate(4, 42, TaskUpdateKind.Finished, 3, null, "ValueError: boom")),
        ("assign_tasks", new AssignTasks([new AssignTask(42, "async", Payload, 1, false), new AssignTask(43, "sync", [], 2, true)])),
        ("task_updates", new TaskUpdates(24, [
            new TaskReport(42, TaskUpdateKind.Accepted, 0, null, null),
            new TaskReport(42, TaskUpdateKind.Finished, 0, [1, 2, 3], null),
            new TaskReport(43, TaskUpdateKind.Finished, 3, null, "ValueError: boom")])),
        ("task_updates_result", new TaskUpdatesResult(24, [new ReportFailure(2, ErrorCode.IllegalTransition, "task 43 is terminated: cannot finish")])),
        ("control_task", new ControlTask(42, ControlAction.Kill)),
        ("drain_notice", new DrainNotice(true)),
        ("add_tasks", new AddTasks(5, [new TaskSpec(Payload, "async", 10, ["computer:daint", "user:alice"], DeliveryPolicy.AtLeastOnce, true, false)])),
        ("tasks_added", new TasksAdded(5, [1, 2, 300, 70000, 5000000000])),
        ("control_tasks", new ControlTasks(6, TaskAction.Play, [], true)),
        ("control_result", new ControlResult(6, [1, 2], [new TaskFailure(3, ErrorCode.IllegalTransition, "task 3 is run: cannot play")])),
        ("list_tasks", new ListTasks(8, 1, "async", null, null, 0, 100)),
        ("task_list", new TaskList(8,
            [new TaskInfo(1, 1, "async", 0, ["a"], DeliveryPolicy.AtMostOnce, null, 0, null, 1700000000000, 1700000000500, null, 15, [], null, false, false)],
            new Dictionary<int, int> { [1] = 1 }, 1)),
        ("show_task", new ShowTask(10, 1)),
        ("task_detail", new TaskDetail(10,
            new TaskInfo(1, 5, "async", -3, [], DeliveryPolicy.AtLeastOnce, null, 1, -1, 1700000000000, 1700000009000, "killed by actioner", 15,
                [new TransitionInfo(1, 1700000000000, null), new TransitionInfo(5, 1700000009000, "killed by actioner")], null, true, false))),
        ("list_workers", new ListWorkers(11)),
        ("worker_list", new WorkerList(11, [new WorkerInfo("host-1234-ab12", "host", ["async"], 4, 2, "connected", 1700000001000, 1700000000000, false)])),
        ("worker_command", new WorkerCommand(12, "host", WorkerAction.Drain)),
        ("set_tag_limit", new SetTagLimit(13, "computer:daint", 50)),
        ("list_tag_limits", new ListTagLimits(14)),
        ("tag_limit_list", new TagLimitList(14, [new TagLimitInfo("computer:daint", 50, 12)])),
        ("wait_task", new WaitTask(15, 42)),
        ("task_layer", new TaskLayer(15, 42, 1)),
        ("task_outcome", new TaskOutcome(15, 42, 0, Payload, null, 1)),
        ("watch_tasks", new WatchTasks(16, null, "user:alice")),
        ("task_event", new TaskEvent(42, 3, "async", "host-1234-ab12", null, 1700000002000, null)),
        ("rpc_register", new RpcRegister(17, "aiida-profile", "2f0c3c7e-8a8e-4a3c-9d7e-0d1a2b3c4d5e")),
        ("rpc_unregister", new RpcUnregister(18, "aiida-profile", "2f0c3c7e-8a8e-4a3c-9d7e-0d1a2b3c4d5e")),
        ("rpc_call", new RpcCall(19, "aiida-profile", "2f0c3c7e-8a8e-4a3c-9d7e-0d1a2b3c4d5e", Payload)),
        ("rpc_delivery", new RpcDelivery(77, "aiida-profile", "2f0c3c7e-8a8e-4a3c-9d7e-0d1a2b3c4d5e", Payload)),
        ("rpc_layer", new RpcLayer(19, 1)),
        ("rpc_result", new RpcResult(19, true, Payload, null, 1)),
        ("rpc_response", new RpcResponse(77, RpcResponseKind.Error, null, "RuntimeError: no")),
        ("subscribe", new Subscribe(20, "aiida-profile", "sub-1", null, new BroadcastFilter(FilterKind.Regex, "^(?!state_changed).*"))),
        ("unsubscribe", new Unsubscribe(21, "aiida-profile", "sub-1")),
        ("broadcast", new Broadcast(22, "aiida-profile", Payload, "42", "state_changed.running.waiting", "420")),
        ("broadcast_delivery", new BroadcastDelivery(["sub-1", "sub-2"], "aiida-profile", Payload, null, "hello", null)),
    ];
}
