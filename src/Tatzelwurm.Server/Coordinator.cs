using System.Runtime.InteropServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using CoreWorkerAction = Tatzelwurm.Core.WorkerAction;

namespace Tatzelwurm.Server;

/// <summary>
/// The coordinator loop: the single owner of the task table, the worker table and the messaging
/// registries. Sessions and the timer post commands to one channel; the loop applies them in order,
/// then hands the resulting store changes and frames to the <see cref="StoreWriter"/>, which sends
/// the frames only once the changes they report are durable.
/// </summary>
public sealed partial class Coordinator : ICoordinatorInbox, IAsyncDisposable
{
    private const int MaxCommandsPerFlush = 4096;
    private const int MaxTypeLength = 256;
    private const int MaxTags = 64;

    // An AssignTasks frame is closed at this estimate of its size or this many tasks, so a batch never
    // comes near a client's frame limit (16 MiB unless it chose lower) and a worker with many slots
    // takes a burst in several frames; a single larger task still goes alone, as in an AssignTask.
    private const int MaxAssignBatchBytes = 1 << 20;
    private const int MaxAssignBatchTasks = 1024;

    // An AssignTask's MessagePack encoding apart from its payload and type bytes, with every header at
    // its widest: array header, task id, type and payload headers, attempt, no_reply.
    private const int AssignEntryOverhead = 32;
    private static readonly TimeSpan SafetyPassInterval = TimeSpan.FromSeconds(5);

    private readonly Channel<ICommand> _inbox = Channel.CreateUnbounded<ICommand>(new UnboundedChannelOptions { SingleReader = true });
    private readonly ITaskStore _store;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CoordinatorState _state;
    private readonly Messaging _messaging = new();
    private readonly StoreWriter _writer;
    private readonly Dictionary<Session, SessionState> _sessions = [];
    private readonly Dictionary<long, List<(Session Session, uint RequestId)>> _waiters = [];
    private readonly List<(Session Session, string? Type, string? Tag)> _watchers = [];
    private List<Effect> _effects = [];
    private ITimer? _timer;
    private Task? _loop;
    private Task? _writerTask;
    private bool _storeHealthy = true;
    private string? _storeError;
    private DateTimeOffset _nextSafetyPass;

    private sealed class SessionState
    {
        public string? WorkerId { get; set; }

        /// <summary>The worker registered with Batches: its assignments of one flush go out as one AssignTasks.</summary>
        public bool Batches { get; set; }
    }

    public Coordinator(ITaskStore store, CoordinatorOptions options, TimeProvider time, ILogger<Coordinator> logger)
    {
        _store = store;
        _time = time;
        _logger = logger;
        _state = new CoordinatorState(options);
        _writer = new StoreWriter(store, this, time, logger);
    }

    public CoordinatorOptions Options => _state.Options;

    /// <summary>False while the store fails: mutations are refused, reads still served.</summary>
    public bool StoreHealthy => Volatile.Read(ref _storeHealthy);

    /// <summary>Store commits so far (each one fsync'd in the durable mode).</summary>
    public long Commits => _writer.Commits;

    /// <summary>Loads the store and starts the loop. Recovered tasks on workers wait for them for the grace period.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var snapshot = await _store.LoadAsync(cancellationToken);
        var now = _time.GetUtcNow();
        _state.Load(snapshot, now);
        LogRecovered(_logger, snapshot.Tasks.Count, _state.Count(TaskState.Submit) + _state.Count(TaskState.Run), _store.Description);
        _nextSafetyPass = now + SafetyPassInterval;
        _timer = _time.CreateTimer(_ => Post(Tick.Instance), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _writerTask = Task.Run(_writer.RunAsync, CancellationToken.None);
        _loop = Task.Run(LoopAsync, CancellationToken.None);
        Post(Tick.Instance);
    }

    public void Post(ICommand command) => _inbox.Writer.TryWrite(command);

    /// <summary>Runs <paramref name="read"/> on the loop, after every command posted before it.</summary>
    public Task<T> QueryAsync<T>(Func<CoordinatorState, T> read)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(new Query(state =>
        {
            try
            {
                done.SetResult(read(state));
            }
            catch (Exception ex)
            {
                done.SetException(ex);
            }
        }));
        return done.Task;
    }

    /// <summary>Stops the loop after the commands already posted, flushes the writer and closes the store.</summary>
    public async ValueTask DisposeAsync()
    {
        _inbox.Writer.TryComplete();
        if (_loop is not null)
        {
            await _loop;
        }

        _writer.Complete();
        if (_writerTask is not null)
        {
            await _writerTask;
        }

        if (_timer is not null)
        {
            await _timer.DisposeAsync();
        }

        await _store.DisposeAsync();
    }

    private async Task LoopAsync()
    {
        var reader = _inbox.Reader;
        while (await reader.WaitToReadAsync())
        {
            var handled = 0;
            while (handled++ < MaxCommandsPerFlush && reader.TryRead(out var command))
            {
                try
                {
                    Handle(command);
                }
                catch (Exception ex)
                {
                    LogCommandFailed(_logger, command.GetType().Name, ex);
                    if (command is FromClient { Message: IRequest request } from)
                    {
                        Reply(from.Session, new ErrorReply(request.RequestId, ErrorCode.Internal, "internal error; see the coordinator's log"), EffectKind.Plain);
                    }
                }
            }

            Flush();
        }

        Flush();
    }

    private void Handle(ICommand command)
    {
        var now = _time.GetUtcNow();
        switch (command)
        {
            case FromClient from when _sessions.TryGetValue(from.Session, out var session):
                if (session.WorkerId is { } workerId)
                {
                    _state.Seen(workerId, from.Session, now);
                }

                HandleMessage(from.Session, session, from.Message, now);
                break;
            case FromClient:
                break;
            case SessionOpened opened:
                _sessions[opened.Session] = new SessionState();
                break;
            case SessionClosed closed:
                Closed(closed.Session, now);
                break;
            case Tick:
                _state.Tick(now);
                _state.Purge(now);
                if (now >= _nextSafetyPass)
                {
                    _state.RequestAssign();
                    _nextSafetyPass = now + SafetyPassInterval;
                }

                break;
            case StoreHealth health:
                _storeHealthy = health.Healthy;
                _storeError = health.Error;
                if (health.Healthy)
                {
                    _state.RequestAssign();
                }

                break;
            case Query query:
                query.Read(_state);
                break;
        }
    }

    private void HandleMessage(Session client, SessionState session, IMessage message, DateTimeOffset now)
    {
        if (message is RegisterWorker or Heartbeat or TaskUpdate or TaskUpdates && client.Role != Roles.Worker)
        {
            if (message is IRequest r)
            {
                Reply(client, new ErrorReply(r.RequestId, ErrorCode.NotAllowedForRole, $"{message.GetType().Name} is for workers; this connection is an {client.Role}"));
            }
            else
            {
                client.Close(new ErrorReply(0, ErrorCode.NotAllowedForRole, $"{message.GetType().Name} is for workers"));
            }

            return;
        }

        if (message is IRequest invalid && MissingField(message) is { } field)
        {
            Reply(client, new ErrorReply(invalid.RequestId, ErrorCode.InvalidRequest, $"{message.GetType().Name}: {field} is required"));
            return;
        }

        switch (message)
        {
            case Heartbeat heartbeat:
                Reply(client, new HeartbeatAck(heartbeat.Sequence));
                break;
            case RegisterWorker register:
                Register(client, session, register, now);
                break;
            case TaskUpdate update:
                WorkerUpdate(client, session, update, now);
                break;
            case TaskUpdates updates:
                WorkerUpdates(client, session, updates, now);
                break;
            case AddTasks add:
                AddTasks(client, add, now);
                break;
            case ControlTasks control:
                ControlTasks(client, control, now);
                break;
            case ListTasks list:
                ListTasks(client, list);
                break;
            case ShowTask show:
                Reply(client, _state.Tasks.TryGetValue(show.TaskId, out var shown)
                    ? new TaskDetail(show.RequestId, shown.ToInfo(_state, withHistory: true))
                    : new ErrorReply(show.RequestId, ErrorCode.UnknownTask, $"no task {show.TaskId}"));
                break;
            case ListWorkers workers:
                Reply(client, new WorkerList(workers.RequestId, _state.Workers.Values.OrderBy(w => w.Name, StringComparer.Ordinal).ThenBy(w => w.Id, StringComparer.Ordinal).Select(w => w.ToInfo()).ToList()));
                break;
            case WorkerCommand command:
                var refused = _state.CommandWorker(command.Worker, (CoreWorkerAction)(int)command.Action);
                Reply(client, refused is null ? new OkReply(command.RequestId) : Refusal(command.RequestId, refused), EffectKind.Plain);
                break;
            case SetTagLimit limit when MutationRefused(client, limit.RequestId):
                break;
            case SetTagLimit limit:
                var bad = _state.SetTagLimit(limit.Tag, limit.Limit);
                Reply(client, bad is null ? new OkReply(limit.RequestId) : Refusal(limit.RequestId, bad), bad is null ? EffectKind.Ack : EffectKind.Plain);
                break;
            case ListTagLimits tagLimits:
                Reply(client, new TagLimitList(tagLimits.RequestId,
                    _state.TagLimits.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => new TagLimitInfo(kv.Key, kv.Value, _state.TagRunning(kv.Key))).ToList()));
                break;
            case WaitTask wait:
                Wait(client, wait);
                break;
            case WatchTasks watch:
                _watchers.Add((client, watch.Type, watch.Tag));
                Reply(client, new OkReply(watch.RequestId));
                break;
            case RpcRegister rpcRegister:
                Emit(_messaging.Register(client, rpcRegister));
                break;
            case RpcUnregister rpcUnregister:
                Emit(_messaging.Unregister(client, rpcUnregister));
                break;
            case RpcCall call:
                Emit(_messaging.Call(client, call));
                break;
            case RpcResponse { Kind: not (RpcResponseKind.Pending or RpcResponseKind.Value or RpcResponseKind.Error) } response:
                // Not a request, so the refusal can only be an Error with request id 0, which closes.
                client.Close(new ErrorReply(0, ErrorCode.InvalidRequest, $"unknown RPC response kind {(int)response.Kind}"));
                break;
            case RpcResponse response:
                Emit(_messaging.Respond(client, response));
                break;
            case Subscribe subscribe:
                Emit(_messaging.Subscribe(client, subscribe));
                break;
            case Unsubscribe unsubscribe:
                Emit(_messaging.Unsubscribe(client, unsubscribe));
                break;
            case Broadcast broadcast:
                Emit(_messaging.Broadcast(client, broadcast));
                break;
            case IRequest request:
                Reply(client, new ErrorReply(request.RequestId, ErrorCode.InvalidRequest, $"{message.GetType().Name} is not a client request"));
                break;
            default:
                client.Close(new ErrorReply(0, ErrorCode.InvalidRequest, $"{message.GetType().Name} is not sent by clients"));
                break;
        }
    }

    // MessagePack lets nil stand in for any string; the registries key on these, so nil is refused here
    // rather than failing deeper down as an internal error (or registering a nil identifier).
    private static string? MissingField(IMessage message) => message switch
    {
        RpcRegister { Namespace: null } or RpcUnregister { Namespace: null } or RpcCall { Namespace: null }
            or Subscribe { Namespace: null } or Unsubscribe { Namespace: null } or Broadcast { Namespace: null } => "namespace",
        RpcRegister { Identifier: null } or RpcUnregister { Identifier: null } or RpcCall { Identifier: null } => "identifier",
        Subscribe { Subscription: null } or Unsubscribe { Subscription: null } => "subscription",
        Subscribe { Sender.Pattern: null } or Subscribe { Subject.Pattern: null } => "a filter's pattern",
        WorkerCommand { Worker: null } => "worker",
        _ => null,
    };

    private void Register(Session client, SessionState session, RegisterWorker register, DateTimeOffset now)
    {
        string? problem = register switch
        {
            { WorkerId: null or "" } => "worker_id is required",
            { Slots: < 0 } => "slots must be ≥ 0",
            { Types: null } or { Held: null } => "types and held are required (may be empty)",
            _ when session.WorkerId is { } id && id != register.WorkerId => $"this connection is already worker {id}",
            _ => null,
        };
        if (problem is not null)
        {
            Reply(client, new ErrorReply(register.RequestId, ErrorCode.InvalidRequest, problem));
            return;
        }

        var drop = _state.RegisterWorker(register.WorkerId!, register.Name ?? register.WorkerId!, register.Types!, register.Slots,
            register.Held!.Select(h => (h.TaskId, h.Paused)).ToList(), client, now);
        session.WorkerId = register.WorkerId;
        session.Batches = register.Batches;
        LogWorkerRegistered(_logger, register.WorkerId!, register.Name ?? "", register.Slots, register.Held!.Count, drop.Count);
        Reply(client, new WorkerRegistered(register.RequestId, drop, Batches: true), EffectKind.Ack);
    }

    private void WorkerUpdate(Session client, SessionState session, TaskUpdate update, DateTimeOffset now)
    {
        if (session.WorkerId is not { } workerId)
        {
            Reply(client, new ErrorReply(update.RequestId, ErrorCode.InvalidRequest, "register the worker before reporting tasks"));
            return;
        }

        if (MutationRefused(client, update.RequestId))
        {
            return;
        }

        var refused = _state.WorkerUpdate(workerId, update.TaskId, (WorkerReport)(int)update.Kind, update.ExitCode, update.Result, update.Error, now);
        Reply(client, refused is null ? new OkReply(update.RequestId) : Refusal(update.RequestId, refused), refused is null ? EffectKind.Ack : EffectKind.Plain);
    }

    // Each report is applied on its own, in order, exactly as a lone TaskUpdate would be: a refused one
    // changes nothing and is listed by its index, the others stand. The one reply is an Ack, so the
    // writer releases it only once every applied change is durable (held across a failed commit).
    // Refusals of the whole request (not registered, store failing, no list, too long a list) mean
    // nothing was applied.
    private void WorkerUpdates(Session client, SessionState session, TaskUpdates updates, DateTimeOffset now)
    {
        if (session.WorkerId is not { } workerId)
        {
            Reply(client, new ErrorReply(updates.RequestId, ErrorCode.InvalidRequest, "register the worker before reporting tasks"));
            return;
        }

        if (updates.Reports is null)
        {
            Reply(client, new ErrorReply(updates.RequestId, ErrorCode.InvalidRequest, "TaskUpdates: reports is required"));
            return;
        }

        if (MutationRefused(client, updates.RequestId))
        {
            return;
        }

        if (updates.Reports.Count > ProtocolConstants.MaxReportsPerTaskUpdates)
        {
            Reply(client, new ErrorReply(updates.RequestId, ErrorCode.InvalidRequest,
                $"TaskUpdates: {updates.Reports.Count} reports, at most {ProtocolConstants.MaxReportsPerTaskUpdates} per request"));
            return;
        }

        List<ReportFailure>? failed = null;
        for (var i = 0; i < updates.Reports.Count; i++)
        {
            Rejection? refused;
            try
            {
                refused = updates.Reports[i] is { } report
                    ? _state.WorkerUpdate(workerId, report.TaskId, (WorkerReport)(int)report.Kind, report.ExitCode, report.Result, report.Error, now)
                    : new Rejection(RejectionCode.InvalidRequest, "a report is nil");
            }
            catch (Exception ex)
            {
                // A bug in one report must not answer the whole request with an immediate Error while
                // the reports before it stay applied: it fails alone and the reply still waits for
                // the commit of the others.
                LogReportFailed(_logger, i, updates.Reports[i]!.TaskId, ex);
                (failed ??= []).Add(new ReportFailure(i, ErrorCode.Internal, "internal error; see the coordinator's log"));
                continue;
            }

            if (refused is not null)
            {
                (failed ??= []).Add(new ReportFailure(i, refused.Code.ToErrorCode(), refused.Message));
            }
        }

        Reply(client, new TaskUpdatesResult(updates.RequestId, failed ?? []), EffectKind.Ack);
    }

    private void AddTasks(Session client, AddTasks add, DateTimeOffset now)
    {
        if (MutationRefused(client, add.RequestId))
        {
            return;
        }

        var invalid = (add.Tasks ?? []).Select(Validate).FirstOrDefault(p => p is not null);
        if (add.Tasks is null or { Count: 0 } || invalid is not null)
        {
            Reply(client, new ErrorReply(add.RequestId, ErrorCode.InvalidRequest, invalid ?? "no tasks to add"));
            return;
        }

        var ids = add.Tasks.Select(spec => _state.AddTask(spec.ToNewTask(), now).Id).ToList();
        Reply(client, new TasksAdded(add.RequestId, ids), EffectKind.Ack);

        static string? Validate(TaskSpec spec) => spec switch
        {
            null => "a task spec is nil",
            { Type: null or "" } => "a task needs a type",
            { Type.Length: > MaxTypeLength } => $"task type longer than {MaxTypeLength} characters",
            { Tags.Count: > MaxTags } => $"more than {MaxTags} tags",
            { Policy: < Protocol.DeliveryPolicy.Default or > Protocol.DeliveryPolicy.AtLeastOnce } => $"unknown delivery policy {(int)spec.Policy}",
            _ when spec.Tags?.Any(string.IsNullOrEmpty) == true => "tags must be non-empty strings",
            _ => null,
        };
    }

    private void ControlTasks(Session client, ControlTasks control, DateTimeOffset now)
    {
        if (MutationRefused(client, control.RequestId))
        {
            return;
        }

        if (control.Action is < TaskAction.Play or > TaskAction.Kill || (control.All && control.Action == TaskAction.Kill))
        {
            Reply(client, new ErrorReply(control.RequestId, ErrorCode.InvalidRequest,
                control.All ? "kill needs explicit task ids" : $"unknown action {(int)control.Action}"));
            return;
        }

        var verb = (ControlVerb)(int)control.Action;
        if (control.All)
        {
            Reply(client, new ControlResult(control.RequestId, _state.ControlAll(verb, now), []), EffectKind.Ack);
            return;
        }

        var applied = new List<long>();
        var failed = new List<TaskFailure>();
        foreach (var id in control.Ids ?? [])
        {
            if (_state.Control(id, verb, now) is { } refused)
            {
                failed.Add(new TaskFailure(id, refused.Code.ToErrorCode(), refused.Message));
            }
            else
            {
                applied.Add(id);
            }
        }

        Reply(client, new ControlResult(control.RequestId, applied, failed), EffectKind.Ack);
    }

    private void ListTasks(Session client, ListTasks list)
    {
        if (list.Limit is < 1 or > 10_000 || list.State is < 0 or > 5)
        {
            Reply(client, new ErrorReply(list.RequestId, ErrorCode.InvalidRequest, "limit must be 1…10000 and state 0…5"));
            return;
        }

        var filter = new TaskFilter((TaskState?)list.State, list.Type, list.Tag, list.Worker);
        var (page, matched) = _state.Page(filter, list.AfterId, list.Limit);
        var counts = Enum.GetValues<TaskState>().ToDictionary(s => (int)s, _state.Count);
        Reply(client, new TaskList(list.RequestId, page.Select(t => t.ToInfo(_state, withHistory: false)).ToList(), counts, matched));
    }

    private void Wait(Session client, WaitTask wait)
    {
        if (!_state.Tasks.TryGetValue(wait.TaskId, out var task))
        {
            Reply(client, new ErrorReply(wait.RequestId, ErrorCode.UnknownTask, $"no task {wait.TaskId}"));
            return;
        }

        // A late waiter sees every layer reported so far, then the outcome if there is one.
        for (var depth = 1; depth <= task.Layers && task.State != TaskState.Terminated; depth++)
        {
            Reply(client, new TaskLayer(wait.RequestId, task.Id, depth), EffectKind.Held);
        }

        if (task.State == TaskState.Terminated)
        {
            Reply(client, task.ToOutcome(wait.RequestId), EffectKind.Held);
            return;
        }

        if (!_waiters.TryGetValue(task.Id, out var list))
        {
            list = [];
            _waiters[task.Id] = list;
        }

        list.Add((client, wait.RequestId));
    }

    private void Closed(Session client, DateTimeOffset now)
    {
        if (!_sessions.Remove(client, out var session))
        {
            return;
        }

        if (session.WorkerId is { } workerId)
        {
            _state.Disconnected(workerId, client, now);
            LogWorkerDisconnected(_logger, workerId);
        }

        Emit(_messaging.Remove(client));
        _watchers.RemoveAll(w => w.Session == client);
        foreach (var (id, list) in _waiters.ToList())
        {
            list.RemoveAll(w => w.Session == client);
            if (list.Count == 0)
            {
                _waiters.Remove(id);
            }
        }
    }

    private bool MutationRefused(Session client, uint requestId)
    {
        if (_storeHealthy)
        {
            return false;
        }

        Reply(client, new ErrorReply(requestId, ErrorCode.StoreUnavailable, $"the store is failing ({_storeError}); changes are refused until it recovers"));
        return true;
    }

    private void Flush()
    {
        var now = _time.GetUtcNow();
        if (_storeHealthy && _state.AssignNeeded)
        {
            var assigned = _state.Assign(now);
            if (assigned > 0)
            {
                TatzelwurmMetrics.Assignments.Add(assigned);
            }
        }

        foreach (var change in _state.TakeChanges())
        {
            Report(change);
        }

        Dictionary<Session, (List<AssignTask> Tasks, int Bytes)>? batches = null;
        foreach (var message in _state.TakeOutbox())
        {
            var session = (Session)message.Connection;
            switch (message.Kind)
            {
                case WorkerMessageKind.Assign:
                    var task = message.Task!;
                    var assign = new AssignTask(task.Id, task.Type, WholeArray(task.Payload), task.Attempts + 1, task.NoReply);
                    if (_sessions.TryGetValue(session, out var state) && state.Batches)
                    {
                        Batch(ref batches, session, assign);
                    }
                    else
                    {
                        Reply(session, assign, EffectKind.Held);
                    }

                    break;
                case WorkerMessageKind.Drain or WorkerMessageKind.Stop:
                    Reply(session, new DrainNotice(message.Kind == WorkerMessageKind.Stop), EffectKind.Held);
                    break;
                case WorkerMessageKind.Close:
                    session.Close(new ErrorReply(0, ErrorCode.InvalidRequest, "this worker's connection was replaced or the worker was declared dead"));
                    break;
                default:
                    Reply(session, new ControlTask(message.Task!.Id, message.Kind.ToControlAction()), EffectKind.Held);
                    break;
            }
        }

        var unit = new CommitUnit(_state.TakeBatch(), _effects);
        _effects = [];
        if (!unit.Batch.IsEmpty || unit.Effects.Count > 0 || !_storeHealthy)
        {
            _writer.Enqueue(unit);
        }

        ArmTimer(now);
    }

    // The frame takes the place of the session's first assignment in this flush and later ones join its
    // (still mutable) list, so every task's assignment stays ahead of any control sent for it afterwards.
    private void Batch(ref Dictionary<Session, (List<AssignTask> Tasks, int Bytes)>? batches, Session session, AssignTask assign)
    {
        batches ??= [];
        var size = AssignEntryOverhead + assign.Payload.Length + (3 * assign.Type.Length);
        if (batches.TryGetValue(session, out var open) && open.Bytes + size <= MaxAssignBatchBytes && open.Tasks.Count < MaxAssignBatchTasks)
        {
            open.Tasks.Add(assign);
            batches[session] = (open.Tasks, open.Bytes + size);
            return;
        }

        var tasks = new List<AssignTask> { assign };
        batches[session] = (tasks, size);
        Reply(session, new AssignTasks(tasks), EffectKind.Held);
    }

    // The record's payload is the array the add was decoded into (never written to), so an assignment
    // sends that array instead of a copy of it for every task handed out.
    private static byte[] WholeArray(ReadOnlyMemory<byte> payload) =>
        MemoryMarshal.TryGetArray(payload, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : payload.ToArray();

    private void Report(TaskChange change)
    {
        var task = change.Task;
        if (change.LayerAdded && _waiters.TryGetValue(task.Id, out var layered))
        {
            foreach (var (session, requestId) in layered)
            {
                Reply(session, new TaskLayer(requestId, task.Id, task.Layers), EffectKind.Held);
            }
        }

        if (!change.StateChanged)
        {
            return;
        }

        TaskTimings.Record(task);
        foreach (var (session, type, tag) in _watchers)
        {
            if ((type is null || type == task.Type) && (tag is null || task.Tags.Contains(tag)))
            {
                Reply(session, task.ToEvent(), EffectKind.Held);
            }
        }

        if (task.State == TaskState.Terminated)
        {
            TatzelwurmMetrics.Terminations.Add(1, new KeyValuePair<string, object?>("exit_code",
                task.ExitCode switch { 0 => "0", -1 => "-1", _ => "other" }));
            if (_waiters.Remove(task.Id, out var waiting))
            {
                foreach (var (session, requestId) in waiting)
                {
                    Reply(session, task.ToOutcome(requestId), EffectKind.Held);
                }
            }
        }
    }

    private void ArmTimer(DateTimeOffset now)
    {
        var next = _state.NextDeadline();
        if (_state.ReadyCount > 0 && (next is null || _nextSafetyPass < next))
        {
            next = _nextSafetyPass;
        }

        if (!_storeHealthy)
        {
            var probe = now + TimeSpan.FromSeconds(1);
            next = next is null || probe < next ? probe : next;
        }

        // An idle coordinator with nothing due arms nothing and uses no CPU.
        _timer?.Change(next is { } at ? Max(at - now, TimeSpan.Zero) : Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private static ErrorReply Refusal(uint requestId, Rejection rejection) => new(requestId, rejection.Code.ToErrorCode(), rejection.Message);

    private void Reply(Session session, IMessage message, EffectKind kind = EffectKind.Plain) => _effects.Add(new Effect(session, message, kind));

    private void Emit(IEnumerable<Effect> effects) => _effects.AddRange(effects);

    [LoggerMessage(Level = LogLevel.Information, Message = "recovered {Tasks} tasks ({OnWorkers} on workers, waiting for them to reclaim) from {Store}")]
    private static partial void LogRecovered(ILogger logger, int tasks, int onWorkers, string store);

    [LoggerMessage(Level = LogLevel.Information, Message = "worker {WorkerId} ({Name}) registered with {Slots} slots, reclaiming {Held}, dropping {Dropped}")]
    private static partial void LogWorkerRegistered(ILogger logger, string workerId, string name, int slots, int held, int dropped);

    [LoggerMessage(Level = LogLevel.Information, Message = "worker {WorkerId} disconnected")]
    private static partial void LogWorkerDisconnected(ILogger logger, string workerId);

    [LoggerMessage(Level = LogLevel.Error, Message = "command {Command} failed")]
    private static partial void LogCommandFailed(ILogger logger, string command, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "report {Index} (task {TaskId}) of a TaskUpdates failed")]
    private static partial void LogReportFailed(ILogger logger, int index, long taskId, Exception exception);
}
