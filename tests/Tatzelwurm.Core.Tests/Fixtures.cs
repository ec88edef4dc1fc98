namespace Tatzelwurm.Core.Tests;

/// <summary>Stands in for a server session: Core compares connections by reference only.</summary>
internal sealed class Conn(string worker)
{
    public string Worker { get; } = worker;

    public override string ToString() => $"conn({Worker})";
}

internal static class Fixtures
{
    public static readonly DateTimeOffset T0 = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static readonly TimeSpan OneTick = TimeSpan.FromTicks(1);

    public static NewTask Spec(
        string type = "t", int priority = 0, string[]? tags = null, DeliveryPolicy? policy = null,
        bool ready = true, bool noReply = false) =>
        new(new byte[] { 1, 2, 3 }, type, priority, tags ?? [], policy, ready, noReply);

    /// <summary>A task record in a given state, as the state machine would have left it.</summary>
    public static TaskRecord Task(
        TaskState state, string? worker = null, PendingControl pending = PendingControl.None,
        DeliveryPolicy policy = DeliveryPolicy.AtMostOnce, bool noReply = false, long id = 7) =>
        new()
        {
            Id = id,
            Type = "t",
            Priority = 3,
            Tags = ["x"],
            Payload = new byte[] { 9 },
            Policy = policy,
            NoReply = noReply,
            State = state,
            ExitCode = state == TaskState.Terminated ? 0 : null,
            WorkerId = worker,
            PendingControl = pending,
            KillRequestedAt = pending == PendingControl.Kill ? T0 : null,
            CreatedAt = T0,
            UpdatedAt = T0,
            History = [new Transition(state, T0, null)],
        };
}

/// <summary>A <see cref="CoordinatorState"/> with the bookkeeping a test needs: one connection per worker and a clock.</summary>
internal sealed class Harness(CoordinatorOptions? options = null)
{
    private readonly List<WorkerMessage> _pending = [];

    public CoordinatorState State { get; } = new(options ?? CoordinatorOptions.Default);

    public CoordinatorOptions Options => State.Options;

    public Dictionary<string, Conn> Connections { get; } = new(StringComparer.Ordinal);

    public DateTimeOffset Now { get; set; } = Fixtures.T0;

    public TaskRecord this[long id] => State.Tasks[id];

    /// <summary>Registers (or re-registers) a worker on a fresh connection; returns the drop list.</summary>
    public IReadOnlyList<long> Register(string id, int slots = 1, string[]? types = null, (long TaskId, bool Paused)[]? held = null)
    {
        var conn = new Conn(id);
        Connections[id] = conn;
        return State.RegisterWorker(id, id, types ?? [], slots, held ?? [], conn, Now);
    }

    public long Add(string type = "t", int priority = 0, string[]? tags = null, DeliveryPolicy? policy = null, bool ready = true) =>
        State.AddTask(Fixtures.Spec(type, priority, tags, policy, ready), Now).Id;

    /// <summary>Runs the assigner and returns its assignments in order as (worker, task id); other messages stay queued.</summary>
    public List<(string Worker, long Task)> Assign()
    {
        State.Assign(Now);
        var outbox = State.TakeOutbox();
        _pending.AddRange(outbox.Where(m => m.Kind != WorkerMessageKind.Assign));
        return outbox.Where(m => m.Kind == WorkerMessageKind.Assign).Select(m => (((Conn)m.Connection).Worker, m.Task!.Id)).ToList();
    }

    /// <summary>Every worker message queued since the last call (including ones set aside by <see cref="Assign"/>).</summary>
    public List<WorkerMessage> Outbox()
    {
        var all = _pending.Concat(State.TakeOutbox()).ToList();
        _pending.Clear();
        return all;
    }

    public void Report(string worker, long task, WorkerReport report, int exitCode = 0, byte[]? result = null)
    {
        var rejection = State.WorkerUpdate(worker, task, report, exitCode, result, null, Now);
        Assert.Null(rejection);
    }

    public void Control(long task, ControlVerb verb) => Assert.Null(State.Control(task, verb, Now));

    public void Heartbeat(string worker) => State.Seen(worker, Connections[worker], Now);

    public void Disconnect(string worker) => State.Disconnected(worker, Connections[worker], Now);

    /// <summary>Adds a task and makes it run on <paramref name="worker"/> (which must be the only worker with room).</summary>
    public long Running(string worker, DeliveryPolicy? policy = null, string type = "t", string[]? tags = null)
    {
        var id = Add(type, tags: tags, policy: policy);
        var assigned = Assign();
        Assert.Contains((worker, id), assigned);
        Report(worker, id, WorkerReport.Accepted);
        return id;
    }

    /// <summary>Adds a task and leaves it in submit on <paramref name="worker"/>.</summary>
    public long Submitted(string worker, DeliveryPolicy? policy = null)
    {
        var id = Add(policy: policy);
        Assert.Contains((worker, id), Assign());
        return id;
    }
}
