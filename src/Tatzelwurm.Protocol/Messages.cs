using MessagePack;
using MessagePack.Formatters;

namespace Tatzelwurm.Protocol;

// Every frame body is a MessagePack union: the array [code, [field0, field1, ...]].
// The codes and the key order of each message are the wire contract (docs/protocol.md);
// append new keys at the end and never renumber.

/// <summary>A message that can travel in a frame.</summary>
[Union(1, typeof(Hello))]
[Union(2, typeof(Welcome))]
[Union(3, typeof(ErrorReply))]
[Union(4, typeof(OkReply))]
[Union(10, typeof(RegisterWorker))]
[Union(11, typeof(WorkerRegistered))]
[Union(12, typeof(Heartbeat))]
[Union(13, typeof(HeartbeatAck))]
[Union(14, typeof(AssignTask))]
[Union(15, typeof(TaskUpdate))]
[Union(16, typeof(ControlTask))]
[Union(17, typeof(DrainNotice))]
[Union(20, typeof(AddTasks))]
[Union(21, typeof(TasksAdded))]
[Union(22, typeof(ControlTasks))]
[Union(23, typeof(ControlResult))]
[Union(24, typeof(ListTasks))]
[Union(25, typeof(TaskList))]
[Union(26, typeof(ShowTask))]
[Union(27, typeof(TaskDetail))]
[Union(28, typeof(ListWorkers))]
[Union(29, typeof(WorkerList))]
[Union(30, typeof(WorkerCommand))]
[Union(31, typeof(SetTagLimit))]
[Union(32, typeof(ListTagLimits))]
[Union(33, typeof(TagLimitList))]
[Union(34, typeof(WaitTask))]
[Union(35, typeof(TaskLayer))]
[Union(36, typeof(TaskOutcome))]
[Union(37, typeof(WatchTasks))]
[Union(38, typeof(TaskEvent))]
[Union(40, typeof(RpcRegister))]
[Union(41, typeof(RpcUnregister))]
[Union(42, typeof(RpcCall))]
[Union(43, typeof(RpcDelivery))]
[Union(44, typeof(RpcLayer))]
[Union(45, typeof(RpcResult))]
[Union(46, typeof(RpcResponse))]
[Union(47, typeof(Subscribe))]
[Union(48, typeof(Unsubscribe))]
[Union(49, typeof(Broadcast))]
[Union(50, typeof(BroadcastDelivery))]
[Union(51, typeof(AssignTasks))]
[Union(52, typeof(TaskUpdates))]
[Union(53, typeof(TaskUpdatesResult))]
public interface IMessage;

/// <summary>A message that expects exactly one reply carrying the same request id.</summary>
public interface IRequest : IMessage
{
    /// <summary>Chosen by the client, non-zero, unique among its outstanding requests.</summary>
    uint RequestId { get; }
}

/// <summary>A reply or progress notice correlated with a request.</summary>
public interface IReply : IMessage
{
    /// <summary>The id of the request this answers (0 on a connection-level error).</summary>
    uint RequestId { get; }
}

/// <summary>Client roles declared in the handshake.</summary>
public static class Roles
{
    /// <summary>Runs tasks; may also do everything an actioner does.</summary>
    public const string Worker = "worker";
    /// <summary>Adds and controls tasks, reads tables, RPC and broadcast.</summary>
    public const string Actioner = "actioner";
}

// ---- handshake and generic replies -------------------------------------------------------

/// <summary>First frame from a client.</summary>
[MessagePackObject]
public sealed record Hello(
    [property: Key(0)] int Version,
    [property: Key(1)] string Role,
    [property: Key(2)] string Token,
    [property: Key(3)] string Client) : IMessage;

/// <summary>The coordinator accepted the handshake; it dictates the heartbeat interval.</summary>
[MessagePackObject]
public sealed record Welcome(
    [property: Key(0)] int Version,
    [property: Key(1)] string SessionId,
    [property: Key(2)] int HeartbeatMs,
    [property: Key(3)] int LeaseMs,
    [property: Key(4)] int MaxFrame) : IMessage;

/// <summary>A typed error: the reply to a request, or with request id 0 a connection-level error before close.</summary>
[MessagePackObject]
public sealed record ErrorReply(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] ErrorCode Code,
    [property: Key(2)] string Message) : IReply;

/// <summary>The request succeeded and has nothing else to say.</summary>
[MessagePackObject]
public sealed record OkReply([property: Key(0)] uint RequestId) : IReply;

// ---- workers -----------------------------------------------------------------------------

/// <summary>A task a worker holds when it (re)registers.</summary>
[MessagePackObject]
public sealed record HeldTask(
    [property: Key(0)] long TaskId,
    [property: Key(1)] bool Paused);

/// <summary>
/// Declares (or re-declares) a worker: stable identity, accepted types and slots, and the tasks it
/// still holds so it can reclaim them after a reconnect. May be sent again to change types or slots.
/// With <see cref="Batches"/> the worker asks for <see cref="AssignTasks"/> pushes and may send
/// <see cref="TaskUpdates"/>; an older client's array without that key reads as false.
/// </summary>
[MessagePackObject]
public sealed record RegisterWorker(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string WorkerId,
    [property: Key(2)] string Name,
    [property: Key(3)] IReadOnlyList<string> Types,
    [property: Key(4)] int Slots,
    [property: Key(5)] IReadOnlyList<HeldTask> Held,
    [property: Key(6)] bool Batches = false) : IRequest;

/// <summary>
/// Reply to <see cref="RegisterWorker"/>: the held tasks the worker must drop (not reclaimed), and
/// whether the coordinator speaks the batched worker messages (false from a coordinator that predates them).
/// </summary>
[MessagePackObject]
public sealed record WorkerRegistered(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<long> Drop,
    [property: Key(2)] bool Batches = false) : IReply;

/// <summary>Worker liveness; sent every heartbeat interval whatever the worker is doing.</summary>
[MessagePackObject]
public sealed record Heartbeat([property: Key(0)] long Sequence) : IMessage;

/// <summary>The coordinator saw the heartbeat (lets the worker detect a dead coordinator).</summary>
[MessagePackObject]
public sealed record HeartbeatAck([property: Key(0)] long Sequence) : IMessage;

/// <summary>Pushed to a worker: run this task. Sent only once its submit state is durable.</summary>
[MessagePackObject]
public sealed record AssignTask(
    [property: Key(0)] long TaskId,
    [property: Key(1)] string Type,
    [property: Key(2)] byte[] Payload,
    [property: Key(3)] int Attempt,
    [property: Key(4)] bool NoReply) : IMessage;

/// <summary>
/// Pushed to a worker that registered with <see cref="RegisterWorker.Batches"/>: several assignments in
/// one frame, to be taken in order exactly as if each had come as its own <see cref="AssignTask"/>.
/// </summary>
[MessagePackObject]
public sealed record AssignTasks([property: Key(0)] IReadOnlyList<AssignTask> Tasks) : IMessage;

/// <summary>What a worker reports about a task it was sent.</summary>
public enum TaskUpdateKind
{
    /// <summary>submit → run.</summary>
    Accepted = 1,
    /// <summary>The worker cannot take it now: submit → ready, another worker gets it.</summary>
    Rejected = 2,
    /// <summary>The worker suspended it: run → pause.</summary>
    Paused = 3,
    /// <summary>The worker resumed it: pause → run.</summary>
    Resumed = 4,
    /// <summary>One more layer of "result to follow" (a future that resolves to a future).</summary>
    Pending = 5,
    /// <summary>It terminated with an exit code and an optional result or error text.</summary>
    Finished = 6,
}

/// <summary>Worker → coordinator report about one task; acknowledged once durable.</summary>
[MessagePackObject]
public sealed record TaskUpdate(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] long TaskId,
    [property: Key(2)] TaskUpdateKind Kind,
    [property: Key(3)] int ExitCode,
    [property: Key(4)] byte[]? Result,
    [property: Key(5)] string? Error) : IRequest;

/// <summary>One report inside <see cref="TaskUpdates"/>: the fields of <see cref="TaskUpdate"/> without a request id.</summary>
[MessagePackObject]
public sealed record TaskReport(
    [property: Key(0)] long TaskId,
    [property: Key(1)] TaskUpdateKind Kind,
    [property: Key(2)] int ExitCode,
    [property: Key(3)] byte[]? Result,
    [property: Key(4)] string? Error);

/// <summary>
/// Worker → coordinator: several reports applied in order, each on its own, as if sent as separate
/// <see cref="TaskUpdate"/>s. Answered by one <see cref="TaskUpdatesResult"/> once every change is durable.
/// </summary>
[MessagePackObject]
public sealed record TaskUpdates(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<TaskReport> Reports) : IRequest;

/// <summary>A refused report inside <see cref="TaskUpdatesResult"/>, by its position in the request.</summary>
[MessagePackObject]
public sealed record ReportFailure(
    [property: Key(0)] int Index,
    [property: Key(1)] ErrorCode Code,
    [property: Key(2)] string Message);

/// <summary>
/// Reply to <see cref="TaskUpdates"/>: every report not listed in <see cref="Failed"/> was applied and
/// is durable; a listed one changed nothing (the same refusal a lone <see cref="TaskUpdate"/> gets).
/// </summary>
[MessagePackObject]
public sealed record TaskUpdatesResult(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<ReportFailure> Failed) : IReply;

/// <summary>Control actions routed to a worker for one task.</summary>
public enum ControlAction
{
    /// <summary>Suspend the task; report <see cref="TaskUpdateKind.Paused"/>.</summary>
    Pause = 1,
    /// <summary>Resume the task; report <see cref="TaskUpdateKind.Resumed"/>.</summary>
    Play = 2,
    /// <summary>Stop the task; report Finished with exit code -1.</summary>
    Kill = 3,
    /// <summary>Forget the task without reporting: the coordinator no longer gives it to you.</summary>
    Drop = 4,
    /// <summary>An escalated kill: abandon the task at once and report Finished(-1).</summary>
    Abandon = 5,
}

/// <summary>Pushed to a worker: apply a control action to a task it holds.</summary>
[MessagePackObject]
public sealed record ControlTask(
    [property: Key(0)] long TaskId,
    [property: Key(1)] ControlAction Action) : IMessage;

/// <summary>Pushed to a worker: no new tasks; with Stop, exit once running tasks are done.</summary>
[MessagePackObject]
public sealed record DrainNotice([property: Key(0)] bool Stop) : IMessage;

// ---- actioners ---------------------------------------------------------------------------

/// <summary>Delivery policy when a task's worker is lost while running it.</summary>
public enum DeliveryPolicy
{
    /// <summary>Use the coordinator's default.</summary>
    Default = 0,
    /// <summary>Pause the task for a human or a rule to decide; never run it twice.</summary>
    AtMostOnce = 1,
    /// <summary>Put the task back to ready with the attempt counter raised.</summary>
    AtLeastOnce = 2,
}

/// <summary>One task to add. Its type and tags are interned as they are decoded (<see cref="InternedStringsFormatter"/>).</summary>
[MessagePackObject]
public sealed record TaskSpec(
    [property: Key(0)] byte[] Payload,
    [property: Key(1), MessagePackFormatter(typeof(StringInterningFormatter))] string Type,
    [property: Key(2)] int Priority,
    [property: Key(3), MessagePackFormatter(typeof(InternedStringsFormatter))] IReadOnlyList<string> Tags,
    [property: Key(4)] DeliveryPolicy Policy,
    [property: Key(5)] bool Ready,
    [property: Key(6)] bool NoReply);

/// <summary>Adds tasks; the reply comes once they are durable.</summary>
[MessagePackObject]
public sealed record AddTasks(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<TaskSpec> Tasks) : IRequest;

/// <summary>The ids assigned to the added tasks, in request order.</summary>
[MessagePackObject]
public sealed record TasksAdded(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<long> Ids) : IReply;

/// <summary>Actioner control of tasks.</summary>
public enum TaskAction
{
    /// <summary>created/pause → ready (or resume on its worker).</summary>
    Play = 1,
    /// <summary>created/ready → pause; run → paused on its worker.</summary>
    Pause = 2,
    /// <summary>Any non-terminated state → terminated(-1).</summary>
    Kill = 3,
}

/// <summary>Plays, pauses or kills the given tasks, or with All every task the action applies to.</summary>
[MessagePackObject]
public sealed record ControlTasks(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] TaskAction Action,
    [property: Key(2)] IReadOnlyList<long> Ids,
    [property: Key(3)] bool All) : IRequest;

/// <summary>A per-task refusal inside <see cref="ControlResult"/>.</summary>
[MessagePackObject]
public sealed record TaskFailure(
    [property: Key(0)] long TaskId,
    [property: Key(1)] ErrorCode Code,
    [property: Key(2)] string Message);

/// <summary>Which tasks took the action (durably) and which refused it.</summary>
[MessagePackObject]
public sealed record ControlResult(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<long> Applied,
    [property: Key(2)] IReadOnlyList<TaskFailure> Failed) : IReply;

/// <summary>Lists tasks in id order, filtered, one page at a time.</summary>
[MessagePackObject]
public sealed record ListTasks(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] int? State,
    [property: Key(2)] string? Type,
    [property: Key(3)] string? Tag,
    [property: Key(4)] string? Worker,
    [property: Key(5)] long AfterId,
    [property: Key(6)] int Limit) : IRequest;

/// <summary>One transition in a task's history.</summary>
[MessagePackObject]
public sealed record TransitionInfo(
    [property: Key(0)] int State,
    [property: Key(1)] long AtMs,
    [property: Key(2)] string? Reason);

/// <summary>A task as shown to clients. History is empty in lists.</summary>
[MessagePackObject]
public sealed record TaskInfo(
    [property: Key(0)] long Id,
    [property: Key(1)] int State,
    [property: Key(2)] string Type,
    [property: Key(3)] int Priority,
    [property: Key(4)] IReadOnlyList<string> Tags,
    [property: Key(5)] DeliveryPolicy Policy,
    [property: Key(6)] string? Worker,
    [property: Key(7)] int Attempts,
    [property: Key(8)] int? ExitCode,
    [property: Key(9)] long CreatedAtMs,
    [property: Key(10)] long UpdatedAtMs,
    [property: Key(11)] string? Reason,
    [property: Key(12)] int PayloadSize,
    [property: Key(13)] IReadOnlyList<TransitionInfo> History,
    [property: Key(14)] string? WorkerLease,
    [property: Key(15)] bool HasResult,
    [property: Key(16)] bool NoReply);

/// <summary>A page of tasks, the number matching the filter, and counts by state of all tasks.</summary>
[MessagePackObject]
public sealed record TaskList(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<TaskInfo> Tasks,
    [property: Key(2)] IReadOnlyDictionary<int, int> Counts,
    [property: Key(3)] int Matched) : IReply;

/// <summary>Asks for one task with its history.</summary>
[MessagePackObject]
public sealed record ShowTask(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] long TaskId) : IRequest;

/// <summary>One task with its history.</summary>
[MessagePackObject]
public sealed record TaskDetail(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] TaskInfo Task) : IReply;

/// <summary>Asks for the worker table.</summary>
[MessagePackObject]
public sealed record ListWorkers([property: Key(0)] uint RequestId) : IRequest;

/// <summary>A worker as shown to clients.</summary>
[MessagePackObject]
public sealed record WorkerInfo(
    [property: Key(0)] string WorkerId,
    [property: Key(1)] string Name,
    [property: Key(2)] IReadOnlyList<string> Types,
    [property: Key(3)] int Slots,
    [property: Key(4)] int Load,
    [property: Key(5)] string State,
    [property: Key(6)] long LastSeenMs,
    [property: Key(7)] long ConnectedAtMs,
    [property: Key(8)] bool Draining);

/// <summary>The worker table.</summary>
[MessagePackObject]
public sealed record WorkerList(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<WorkerInfo> Workers) : IReply;

/// <summary>Operator actions on a worker.</summary>
public enum WorkerAction
{
    /// <summary>No new tasks; running ones finish.</summary>
    Drain = 1,
    /// <summary>Drain, then shut down gracefully.</summary>
    Stop = 2,
    /// <summary>Take new tasks again.</summary>
    Undrain = 3,
}

/// <summary>Drains, stops or undrains a worker given by id or name.</summary>
[MessagePackObject]
public sealed record WorkerCommand(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string Worker,
    [property: Key(2)] WorkerAction Action) : IRequest;

/// <summary>Sets (or with null removes) the concurrency limit of running tasks carrying a tag.</summary>
[MessagePackObject]
public sealed record SetTagLimit(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string Tag,
    [property: Key(2)] int? Limit) : IRequest;

/// <summary>Asks for the tag limits.</summary>
[MessagePackObject]
public sealed record ListTagLimits([property: Key(0)] uint RequestId) : IRequest;

/// <summary>A tag limit and how many tasks with that tag hold a worker now.</summary>
[MessagePackObject]
public sealed record TagLimitInfo(
    [property: Key(0)] string Tag,
    [property: Key(1)] int Limit,
    [property: Key(2)] int Running);

/// <summary>The tag limits.</summary>
[MessagePackObject]
public sealed record TagLimitList(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] IReadOnlyList<TagLimitInfo> Limits) : IReply;

/// <summary>
/// Waits for a task's outcome. Answered by zero or more <see cref="TaskLayer"/> notices and then
/// exactly one <see cref="TaskOutcome"/> (or an error).
/// </summary>
[MessagePackObject]
public sealed record WaitTask(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] long TaskId) : IRequest;

/// <summary>Progress notice for a wait: the worker reported one more "result to follow" layer.</summary>
[MessagePackObject]
public sealed record TaskLayer(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] long TaskId,
    [property: Key(2)] int Depth) : IReply;

/// <summary>The final answer to a wait: the task terminated.</summary>
[MessagePackObject]
public sealed record TaskOutcome(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] long TaskId,
    [property: Key(2)] int ExitCode,
    [property: Key(3)] byte[]? Result,
    [property: Key(4)] string? Error,
    [property: Key(5)] int Layers) : IReply;

/// <summary>Subscribes this connection to task state changes (optionally of one type or tag).</summary>
[MessagePackObject]
public sealed record WatchTasks(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string? Type,
    [property: Key(2)] string? Tag) : IRequest;

/// <summary>Pushed to watchers: a task changed state (sent once the change is durable).</summary>
[MessagePackObject]
public sealed record TaskEvent(
    [property: Key(0)] long TaskId,
    [property: Key(1)] int State,
    [property: Key(2)] string Type,
    [property: Key(3)] string? Worker,
    [property: Key(4)] int? ExitCode,
    [property: Key(5)] long AtMs,
    [property: Key(6)] string? Reason) : IMessage;

// ---- RPC ---------------------------------------------------------------------------------

/// <summary>Makes this connection the recipient of an RPC identifier in a namespace.</summary>
[MessagePackObject]
public sealed record RpcRegister(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string Namespace,
    [property: Key(2)] string Identifier) : IRequest;

/// <summary>Frees an RPC identifier this connection holds.</summary>
[MessagePackObject]
public sealed record RpcUnregister(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string Namespace,
    [property: Key(2)] string Identifier) : IRequest;

/// <summary>
/// Calls an RPC identifier. Answered by zero or more <see cref="RpcLayer"/> notices and then exactly
/// one <see cref="RpcResult"/>, or an error (Unroutable at once, DeliveryFailed if the recipient leaves).
/// </summary>
[MessagePackObject]
public sealed record RpcCall(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string Namespace,
    [property: Key(2)] string Identifier,
    [property: Key(3)] byte[] Payload) : IRequest;

/// <summary>Pushed to the recipient of a call; answer with <see cref="RpcResponse"/> carrying the call id.</summary>
[MessagePackObject]
public sealed record RpcDelivery(
    [property: Key(0)] long CallId,
    [property: Key(1)] string Namespace,
    [property: Key(2)] string Identifier,
    [property: Key(3)] byte[] Payload) : IMessage;

/// <summary>Progress notice for a call: one more "result to follow" layer.</summary>
[MessagePackObject]
public sealed record RpcLayer(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] int Depth) : IReply;

/// <summary>The final answer to a call: a value or the recipient's error text.</summary>
[MessagePackObject]
public sealed record RpcResult(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] bool Ok,
    [property: Key(2)] byte[]? Payload,
    [property: Key(3)] string? Error,
    [property: Key(4)] int Layers) : IReply;

/// <summary>How the recipient answers a call.</summary>
public enum RpcResponseKind
{
    /// <summary>One more layer: the value will follow.</summary>
    Pending = 1,
    /// <summary>The final value.</summary>
    Value = 2,
    /// <summary>The final error text.</summary>
    Error = 3,
}

/// <summary>The recipient's answer (or one layer of it) to a delivered call. Not acknowledged.</summary>
[MessagePackObject]
public sealed record RpcResponse(
    [property: Key(0)] long CallId,
    [property: Key(1)] RpcResponseKind Kind,
    [property: Key(2)] byte[]? Payload,
    [property: Key(3)] string? Error) : IMessage;

// ---- broadcast ---------------------------------------------------------------------------

/// <summary>How a broadcast filter pattern is read.</summary>
public enum FilterKind
{
    /// <summary>kiwipy's rule: '*' matches anything, every other character is literal, matched at the start.</summary>
    Glob = 1,
    /// <summary>A regular expression matched at the start of the value.</summary>
    Regex = 2,
}

/// <summary>A sender or subject filter applied by the coordinator.</summary>
[MessagePackObject]
public sealed record BroadcastFilter(
    [property: Key(0)] FilterKind Kind,
    [property: Key(1)] string Pattern);

/// <summary>Subscribes to broadcasts in a namespace under a subscription id chosen by the client.</summary>
[MessagePackObject]
public sealed record Subscribe(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string Namespace,
    [property: Key(2)] string Subscription,
    [property: Key(3)] BroadcastFilter? Sender,
    [property: Key(4)] BroadcastFilter? Subject) : IRequest;

/// <summary>Ends a subscription.</summary>
[MessagePackObject]
public sealed record Unsubscribe(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string Namespace,
    [property: Key(2)] string Subscription) : IRequest;

/// <summary>Sends a broadcast to every matching subscriber in the namespace. Not persisted.</summary>
[MessagePackObject]
public sealed record Broadcast(
    [property: Key(0)] uint RequestId,
    [property: Key(1)] string Namespace,
    [property: Key(2)] byte[] Body,
    [property: Key(3)] string? Sender,
    [property: Key(4)] string? Subject,
    [property: Key(5)] string? CorrelationId) : IRequest;

/// <summary>Pushed to a subscribing connection: one broadcast, with the ids of its subscriptions it matched.</summary>
[MessagePackObject]
public sealed record BroadcastDelivery(
    [property: Key(0)] IReadOnlyList<string> Subscriptions,
    [property: Key(1)] string Namespace,
    [property: Key(2)] byte[] Body,
    [property: Key(3)] string? Sender,
    [property: Key(4)] string? Subject,
    [property: Key(5)] string? CorrelationId) : IMessage;
