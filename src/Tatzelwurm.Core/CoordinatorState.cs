using System.Collections;
using System.Runtime.InteropServices;

namespace Tatzelwurm.Core;

/// <summary>A task after a change, for watchers and waiters.</summary>
// A value: one is made for every transition, and the loop takes them all once per flush.
public readonly record struct TaskChange(TaskRecord Task, bool StateChanged, bool LayerAdded);

public enum WorkerMessageKind
{
    Assign,
    Pause,
    Play,
    Kill,
    Abandon,
    Drain,
    Stop,
    /// <summary>Close the connection: it was replaced by a newer one of the same worker, or the worker was declared dead.</summary>
    Close,
}

/// <summary>Something to send to a worker's connection once the batch that caused it is durable.</summary>
public sealed record WorkerMessage(object Connection, WorkerMessageKind Kind, TaskRecord? Task = null);

public enum WorkerAction
{
    Drain = 1,
    Stop = 2,
    Undrain = 3,
}

public enum ControlVerb
{
    Play = 1,
    Pause = 2,
    Kill = 3,
}

public enum WorkerReport
{
    Accepted = 1,
    Rejected = 2,
    Paused = 3,
    Resumed = 4,
    Pending = 5,
    Finished = 6,
}

/// <summary>
/// The task table, the worker table and the assigner: the coordinator's whole mutable state. It is
/// not thread-safe by design: exactly one loop owns it (SPEC: no locks around tables). Every method
/// takes "now" from the caller, which reads the injected TimeProvider, so tests drive time exactly.
/// Changes accumulate as dirty records (for the store), task changes (for watchers and waiters)
/// and worker messages (to send once durable); the owner takes them with <see cref="TakeBatch"/>,
/// <see cref="TakeChanges"/> and <see cref="TakeOutbox"/>.
/// </summary>
public sealed class CoordinatorState
{
    private const int MaxPurgePerPass = 10_000;

    // The live tasks (not terminated) as records; the terminated ones, until they are purged, in
    // the terminated log. Tasks shows both as one table.
    private readonly Dictionary<long, TaskRecord> _tasks = [];
    private readonly TerminatedLog _terminated = new();
    private readonly int[] _counts = new int[6];
    private readonly ReadyQueue _ready;
    private readonly Dictionary<string, WorkerRecord> _workers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _tagLimits = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _tagRunning = new(StringComparer.Ordinal);
    private readonly Dictionary<long, HashSet<string>> _rejectedBy = [];
    private readonly HashSet<long> _killsPending = [];
    // Per task changed since the last TakeBatch: the newest image (null = purged) and what the store
    // holds of it, fixed when the task first became dirty in this batch.
    private readonly Dictionary<long, (TaskRecord? Task, int StoredHistory)> _dirty = [];
    private readonly List<KeyValuePair<string, int?>> _tagLimitChanges = [];
    private List<TaskChange> _changes = [];
    private List<WorkerMessage> _outbox = [];
    // Only the history: holding the record would keep its payload alive after the task is purged.
    private IReadOnlyList<Transition>? _lastCreatedHistory;
    private long _lastId;
    private bool _assignNeeded;
    private bool _loading;

    public CoordinatorState(CoordinatorOptions options)
    {
        Options = options;
        _ready = new ReadyQueue(_tasks);
        Tasks = new TaskTable(this);
    }

    public CoordinatorOptions Options { get; }

    /// <summary>
    /// Every task, live and terminated. A terminated task is decoded from the terminated log each
    /// time it is read, so enumerating <c>Values</c> of a large table is costly: filters go through
    /// <see cref="TaskQueries.Page"/>, counts through <see cref="Count(TaskState)"/> and <see cref="CountsByType"/>.
    /// </summary>
    public IReadOnlyDictionary<long, TaskRecord> Tasks { get; }

    /// <summary>The tasks that are not terminated.</summary>
    internal IReadOnlyDictionary<long, TaskRecord> LiveTasks => _tasks;

    internal TerminatedLog Terminated => _terminated;

    public IReadOnlyDictionary<string, WorkerRecord> Workers => _workers;

    public IReadOnlyDictionary<string, int> TagLimits => _tagLimits;

    public int ReadyCount => _counts[(int)TaskState.Ready];

    public int Count(TaskState state) => _counts[(int)state];

    public int TagRunning(string tag) => _tagRunning.GetValueOrDefault(tag);

    /// <summary>Tasks per type, each an array of counts indexed by <see cref="TaskState"/>.</summary>
    public Dictionary<string, int[]> CountsByType()
    {
        var byType = new Dictionary<string, int[]>(StringComparer.Ordinal);
        int[] For(string type)
        {
            if (!byType.TryGetValue(type, out var counts))
            {
                counts = new int[_counts.Length];
                byType[type] = counts;
            }

            return counts;
        }

        foreach (var task in _tasks.Values)
        {
            For(task.Type)[(int)task.State]++;
        }

        foreach (var (type, count) in _terminated.CountsByType())
        {
            For(type)[(int)TaskState.Terminated] += count;
        }

        return byType;
    }

    // ---- recovery -------------------------------------------------------------------------

    /// <summary>
    /// Loads a snapshot from the store. Tasks that were on workers keep their state and wait for
    /// their worker to reconnect and reclaim them; the worker is suspect from <paramref name="now"/>
    /// and declared dead (tasks follow their policy) if it does not return within the grace period.
    /// </summary>
    public void Load(StoreSnapshot snapshot, DateTimeOffset now)
    {
        _lastId = snapshot.LastTaskId;
        foreach (var (tag, limit) in snapshot.TagLimits)
        {
            _tagLimits[tag] = limit;
        }

        // Non-terminated tasks first, in snapshot order; then terminated ones oldest first, so that the
        // retention queue is in termination order (the same order a stable sort by "terminated at, else
        // the beginning of time" gives, without sorting the whole snapshot). Nothing loaded is a change
        // to persist or report, so Put does not record it (a million dirty entries and change records
        // would only be cleared again). The terminated log keeps no payload bytes of terminated tasks
        // here either: a store may hand them back full.
        _tasks.EnsureCapacity(snapshot.Tasks.Count(t => t.State != TaskState.Terminated));
        var terminated = new List<TaskRecord>();
        _loading = true;
        try
        {
            foreach (var task in snapshot.Tasks)
            {
                if (task.State == TaskState.Terminated)
                {
                    terminated.Add(task);
                }
                else
                {
                    LoadOne(task, now);
                }
            }

            _terminated.EnsureCapacity(terminated.Count);
            foreach (var task in terminated.OrderBy(t => t.UpdatedAt))
            {
                LoadOne(task, now);
            }
        }
        finally
        {
            _loading = false;
        }

        _dirty.Clear();
        _changes.Clear();
    }

    private void LoadOne(TaskRecord task, DateTimeOffset now)
    {
        if (task.OnWorker && !_workers.ContainsKey(task.WorkerId!))
        {
            _workers[task.WorkerId!] = new WorkerRecord
            {
                Id = task.WorkerId!,
                Lease = WorkerLease.Suspect,
                SuspectSince = now,
                LastSeen = now,
            };
        }

        if (task.PendingControl == PendingControl.Kill)
        {
            _killsPending.Add(task.Id);
        }

        Put(task);
        _lastId = Math.Max(_lastId, task.Id);
    }

    // ---- actioner commands ------------------------------------------------------------------

    public TaskRecord AddTask(NewTask spec, DateTimeOffset now)
    {
        var task = TaskTransitions.Create(++_lastId, spec, Options.DefaultPolicy, now, _lastCreatedHistory);
        Put(task);
        _lastCreatedHistory = task.History;
        return task;
    }

    /// <summary>Play, pause or kill one task; for a task on a worker the worker is told.</summary>
    public Rejection? Control(long id, ControlVerb verb, DateTimeOffset now)
    {
        if (!Tasks.TryGetValue(id, out var task))
        {
            return Rejection.UnknownTask(id);
        }

        var worker = task.WorkerId is null ? null : _workers.GetValueOrDefault(task.WorkerId);
        // Any open connection gets the message, even with the lease lapsed: nothing else would
        // deliver it if the worker resumes heartbeating on it (only a re-register re-sends).
        var connected = worker is { Connection: not null };
        var step = verb switch
        {
            ControlVerb.Play => TaskTransitions.Play(task, connected, now),
            ControlVerb.Pause => TaskTransitions.Pause(task, connected, now),
            ControlVerb.Kill => TaskTransitions.Kill(task, connected, now),
            _ => new Rejection(RejectionCode.InvalidRequest, $"unknown action {verb}"),
        };
        return Apply(step, worker);
    }

    /// <summary>Applies play or pause to every task it is legal for (never kill: too dangerous in bulk).</summary>
    public IReadOnlyList<long> ControlAll(ControlVerb verb, DateTimeOffset now)
    {
        var from = verb switch
        {
            ControlVerb.Play => new[] { TaskState.Created, TaskState.Pause },
            ControlVerb.Pause => [TaskState.Created, TaskState.Ready],
            _ => [],
        };
        var ids = _tasks.Values.Where(t => from.Contains(t.State)).Select(t => t.Id).Order().ToList();
        return ids.Where(id => Control(id, verb, now) is null).ToList();
    }

    public Rejection? SetTagLimit(string tag, int? limit)
    {
        if (string.IsNullOrEmpty(tag) || limit < 0)
        {
            return new Rejection(RejectionCode.InvalidRequest, "a tag limit needs a tag and a limit ≥ 0");
        }

        if (limit is { } l)
        {
            _tagLimits[tag] = l;
        }
        else
        {
            _tagLimits.Remove(tag);
        }

        _tagLimitChanges.Add(new(tag, limit));
        _ready.UnparkTag(tag);
        _assignNeeded = true;
        return null;
    }

    public Rejection? CommandWorker(string idOrName, WorkerAction action)
    {
        var worker = FindWorker(idOrName);
        if (worker is null)
        {
            return new Rejection(RejectionCode.UnknownWorker, $"no worker {idOrName}");
        }

        worker.Draining = action != WorkerAction.Undrain;
        worker.Stopping = action == WorkerAction.Stop;
        if (worker.Connection is { } connection)
        {
            if (action != WorkerAction.Undrain)
            {
                _outbox.Add(new WorkerMessage(connection, action == WorkerAction.Stop ? WorkerMessageKind.Stop : WorkerMessageKind.Drain));
            }
        }

        if (action == WorkerAction.Undrain)
        {
            // Tasks every other eligible worker rejected may go to this one again.
            _ready.UnparkRejected();
        }

        _assignNeeded = true;
        return null;
    }

    public WorkerRecord? FindWorker(string idOrName) =>
        _workers.GetValueOrDefault(idOrName) ?? _workers.Values.FirstOrDefault(w => w.Name == idOrName);

    // ---- workers ------------------------------------------------------------------------------

    /// <summary>
    /// Registers a worker, or re-attaches a returning one (same id) and reconciles what it holds:
    /// tasks it still runs are reclaimed unchanged, tasks it lost follow the lost-worker rules, and
    /// tasks it reports that are no longer its own come back in the returned drop list.
    /// </summary>
    public IReadOnlyList<long> RegisterWorker(
        string id, string name, IReadOnlyCollection<string> types, int slots,
        IReadOnlyList<(long TaskId, bool Paused)> held, object connection, DateTimeOffset now)
    {
        if (!_workers.TryGetValue(id, out var worker))
        {
            worker = new WorkerRecord { Id = id, ConnectedAt = now };
            _workers[id] = worker;
        }
        else if (worker.Connection is { } old && !ReferenceEquals(old, connection))
        {
            _outbox.Add(new WorkerMessage(old, WorkerMessageKind.Close));
        }

        if (!ReferenceEquals(worker.Connection, connection))
        {
            worker.ConnectedAt = now;
            if (worker.Draining)
            {
                // Drained or stopped while it was away (or on its old connection): tell the new one.
                _outbox.Add(new WorkerMessage(connection, worker.Stopping ? WorkerMessageKind.Stop : WorkerMessageKind.Drain));
            }
        }

        worker.Name = name;
        worker.Types = new HashSet<string>(types, StringComparer.Ordinal);
        worker.Slots = slots;
        worker.Connection = connection;
        worker.Lease = WorkerLease.Connected;
        worker.LastSeen = now;
        worker.Registered = true;

        var heldById = held.ToDictionary(h => h.TaskId, h => h.Paused);
        var drop = heldById.Keys
            .Where(tid => !_tasks.TryGetValue(tid, out var t) || t.WorkerId != id || !t.OnWorker)
            .Order()
            .ToList();

        foreach (var tid in worker.Tasks.ToList())
        {
            var task = _tasks[tid];
            if (!heldById.TryGetValue(tid, out var paused))
            {
                Apply(TaskTransitions.WorkerLost(task, $"worker {id} came back without it", now), null);
                continue;
            }

            // The worker's report is the truth about a task it holds.
            var step = (task.State, paused) switch
            {
                (TaskState.Submit, _) => TaskTransitions.Accept(task, id, now),
                (TaskState.Run, true) => TaskTransitions.WorkerPaused(task, id, now),
                (TaskState.Pause, false) => TaskTransitions.WorkerResumed(task, id, now),
                _ => new Step(task, null),
            };
            Apply(step, worker);
            if (step.Signal == WorkerSignal.None)
            {
                // Accept already signals a pending pause or kill; don't send it twice.
                ResendPendingControl(_tasks[tid], worker);
            }

            // The worker could not confirm a kill while it was away: the escalation deadline starts
            // when the kill actually reaches it, here.
            if (_tasks[tid] is { PendingControl: PendingControl.Kill } killed)
            {
                Put(killed with { KillRequestedAt = now });
                _killsPending.Add(tid);
            }
        }

        foreach (var rejecters in _rejectedBy.Values)
        {
            rejecters.Remove(id);
        }

        _ready.UnparkRejected();
        _assignNeeded = true;
        return drop;
    }

    /// <summary>Any traffic from a worker renews its lease.</summary>
    public void Seen(string workerId, object connection, DateTimeOffset now)
    {
        if (_workers.TryGetValue(workerId, out var worker) && ReferenceEquals(worker.Connection, connection))
        {
            worker.LastSeen = now;
            if (worker.Lease == WorkerLease.Suspect)
            {
                worker.Lease = WorkerLease.Connected;
                _ready.UnparkRejected();
                _assignNeeded = true;
            }
        }
    }

    public void Disconnected(string workerId, object connection, DateTimeOffset now)
    {
        if (!_workers.TryGetValue(workerId, out var worker) || !ReferenceEquals(worker.Connection, connection))
        {
            return;
        }

        worker.Connection = null;
        if (worker.Load == 0)
        {
            // Nothing to reclaim: forget it now rather than list a ghost for the grace period.
            _workers.Remove(workerId);
            return;
        }

        // Already suspect (lease lapsed): the grace period keeps counting from the lapse.
        if (worker.Lease != WorkerLease.Suspect)
        {
            worker.Lease = WorkerLease.Suspect;
            worker.SuspectSince = now;
        }
    }

    public Rejection? WorkerUpdate(string workerId, long taskId, WorkerReport report, int exitCode, byte[]? result, string? error, DateTimeOffset now)
    {
        if (!Tasks.TryGetValue(taskId, out var task))
        {
            return Rejection.UnknownTask(taskId);
        }

        var worker = _workers.GetValueOrDefault(workerId);
        var step = report switch
        {
            WorkerReport.Accepted => TaskTransitions.Accept(task, workerId, now),
            WorkerReport.Rejected => TaskTransitions.Reject(task, workerId, now),
            WorkerReport.Paused => TaskTransitions.WorkerPaused(task, workerId, now),
            WorkerReport.Resumed => TaskTransitions.WorkerResumed(task, workerId, now),
            WorkerReport.Pending => TaskTransitions.WorkerPending(task, workerId, now),
            WorkerReport.Finished => TaskTransitions.WorkerFinished(task, workerId, exitCode, result, error, now),
            _ => new Rejection(RejectionCode.InvalidRequest, $"unknown report {report}"),
        };
        if (step.Ok && report == WorkerReport.Rejected)
        {
            if (!_rejectedBy.TryGetValue(taskId, out var set))
            {
                set = new HashSet<string>(StringComparer.Ordinal);
                _rejectedBy[taskId] = set;
            }

            set.Add(workerId);
        }

        return Apply(step, worker);
    }

    // ---- time -------------------------------------------------------------------------------

    /// <summary>
    /// Applies everything that is due at <paramref name="now"/>: lapsed leases (suspect), expired
    /// grace (dead: tasks follow their policy), overdue kills (abandon). Deadlines are inclusive: a
    /// lease renewed at t lapses at exactly t + lease.
    /// </summary>
    public void Tick(DateTimeOffset now)
    {
        foreach (var worker in _workers.Values.ToList())
        {
            if (worker.Lease == WorkerLease.Connected && now >= worker.LastSeen + Options.Lease)
            {
                worker.Lease = WorkerLease.Suspect;
                worker.SuspectSince = worker.LastSeen + Options.Lease;
            }

            if (worker.Lease == WorkerLease.Suspect && now >= worker.SuspectSince + Options.Grace)
            {
                DeclareDead(worker, now);
            }
        }

        foreach (var id in _killsPending.ToList())
        {
            if (!_tasks.TryGetValue(id, out var task) || task.PendingControl != PendingControl.Kill)
            {
                _killsPending.Remove(id);
            }
            else if (TaskTransitions.KillOverdue(task, Options.KillTimeout, now)
                && _workers.GetValueOrDefault(task.WorkerId!) is { Connection: { } connection, Lease: WorkerLease.Connected })
            {
                _outbox.Add(new WorkerMessage(connection, WorkerMessageKind.Abandon, task));
                _killsPending.Remove(id);
            }
        }
    }

    /// <summary>The earliest instant at which <see cref="Tick"/> or <see cref="Purge"/> has something to do.</summary>
    public DateTimeOffset? NextDeadline()
    {
        DateTimeOffset? next = null;
        void Consider(DateTimeOffset at) => next = next is null || at < next ? at : next;

        foreach (var worker in _workers.Values)
        {
            Consider(worker.Lease == WorkerLease.Connected ? worker.LastSeen + Options.Lease : worker.SuspectSince + Options.Grace);
        }

        foreach (var id in _killsPending)
        {
            // Only kills Tick can escalate: while the worker is away the abandon waits for its
            // reclaim or death, and a past deadline here would make the owner's timer spin.
            if (_tasks.TryGetValue(id, out var task) && task.KillRequestedAt is { } at
                && task.WorkerId is { } workerId && _workers.GetValueOrDefault(workerId) is { Connection: not null, Lease: WorkerLease.Connected })
            {
                Consider(at + Options.KillTimeout);
            }
        }

        if (_terminated.TryPeekOldest(out var oldest, out _))
        {
            Consider(oldest + Options.Retention);
        }

        return next;
    }

    /// <summary>Deletes terminated tasks past retention, at most a bounded number per call so the loop never stalls.</summary>
    public int Purge(DateTimeOffset now)
    {
        var purged = 0;
        while (purged < MaxPurgePerPass && _terminated.TryPeekOldest(out var at, out var id) && at + Options.Retention <= now)
        {
            _terminated.RemoveOldest();
            _counts[(int)TaskState.Terminated]--;
            _dirty[id] = (null, TaskUpsert.NotStored);
            purged++;
        }

        return purged;
    }

    // ---- assignment -------------------------------------------------------------------------

    /// <summary>True when something happened that may allow an assignment (a task became ready, a slot freed, a worker joined).</summary>
    public bool AssignNeeded => _assignNeeded;

    public void RequestAssign() => _assignNeeded = true;

    /// <summary>
    /// Hands ready tasks to workers: highest priority first and FIFO within a priority across the types
    /// some worker can take, to the least-loaded worker accepting the type, never past its slots or a
    /// tag's limit. Each assignment costs O(log n) in the ready tasks plus a pass over the workers.
    /// </summary>
    public int Assign(DateTimeOffset now)
    {
        _assignNeeded = false;
        var assigned = 0;
        while (true)
        {
            string? bestType = null;
            ReadyQueue.Entry best = default;
            foreach (var (type, set) in _ready.Types)
            {
                if (set.Count == 0 || (bestType is not null && set.Min.CompareTo(best) > 0) || !AnyWorkerCanTake(type))
                {
                    continue;
                }

                bestType = type;
                best = set.Min;
            }

            if (bestType is null)
            {
                return assigned;
            }

            var task = _tasks[best.Id];
            if (BlockingTag(task) is { } tag)
            {
                _ready.ParkForTag(bestType, tag, best);
                continue;
            }

            var worker = PickWorker(task);
            if (worker is null)
            {
                _ready.ParkRejected(bestType, best);
                continue;
            }

            // Put takes the task out of the ready set as it leaves ready.
            var step = TaskTransitions.Assign(task, worker.Id, now);
            Put(step.Task!);
            _outbox.Add(new WorkerMessage(worker.Connection!, WorkerMessageKind.Assign, step.Task));
            assigned++;
        }
    }

    private bool AnyWorkerCanTake(string type)
    {
        foreach (var worker in _workers.Values)
        {
            if (worker.CanTake(type))
            {
                return true;
            }
        }

        return false;
    }

    private string? BlockingTag(TaskRecord task)
    {
        foreach (var tag in task.Tags)
        {
            if (_tagLimits.TryGetValue(tag, out var limit) && _tagRunning.GetValueOrDefault(tag) >= limit)
            {
                return tag;
            }
        }

        return null;
    }

    private WorkerRecord? PickWorker(TaskRecord task)
    {
        var rejecters = _rejectedBy.GetValueOrDefault(task.Id);
        WorkerRecord? best = null;
        foreach (var worker in _workers.Values)
        {
            if (!worker.CanTake(task.Type) || (rejecters?.Contains(worker.Id) ?? false))
            {
                continue;
            }

            if (best is null || worker.Load < best.Load
                || (worker.Load == best.Load && string.CompareOrdinal(worker.Id, best.Id) < 0))
            {
                best = worker;
            }
        }

        return best;
    }

    // ---- output -------------------------------------------------------------------------------

    /// <summary>Takes the changes since the last call as one store batch.</summary>
    public StoreBatch TakeBatch()
    {
        var batch = new StoreBatch(
            _dirty.Values.Where(d => d.Task is not null).Select(d => new TaskUpsert(d.Task!, d.StoredHistory)).ToList(),
            _dirty.Where(kv => kv.Value.Task is null).Select(kv => kv.Key).ToList(),
            _tagLimitChanges.ToList(),
            _lastId);
        _dirty.Clear();
        _tagLimitChanges.Clear();
        return batch;
    }

    public List<TaskChange> TakeChanges()
    {
        var changes = _changes;
        _changes = [];
        return changes;
    }

    public List<WorkerMessage> TakeOutbox()
    {
        var outbox = _outbox;
        _outbox = [];
        return outbox;
    }

    // ---- internals ------------------------------------------------------------------------------

    private void DeclareDead(WorkerRecord worker, DateTimeOffset now)
    {
        foreach (var tid in worker.Tasks.ToList())
        {
            Apply(TaskTransitions.WorkerLost(_tasks[tid], $"worker {worker.Id} declared dead", now), null);
        }

        if (worker.Connection is { } connection)
        {
            _outbox.Add(new WorkerMessage(connection, WorkerMessageKind.Close));
        }

        _workers.Remove(worker.Id);
        _assignNeeded = true;
    }

    private void ResendPendingControl(TaskRecord task, WorkerRecord worker)
    {
        var kind = (task.PendingControl, task.State) switch
        {
            (PendingControl.Kill, _) => WorkerMessageKind.Kill,
            (PendingControl.Pause, TaskState.Run) => WorkerMessageKind.Pause,
            (PendingControl.Play, TaskState.Pause) => WorkerMessageKind.Play,
            _ => (WorkerMessageKind?)null,
        };
        if (kind is { } k && worker.Connection is { } connection)
        {
            _outbox.Add(new WorkerMessage(connection, k, task));
        }
    }

    private Rejection? Apply(Step step, WorkerRecord? worker)
    {
        if (!step.Ok)
        {
            return step.Rejection;
        }

        Put(step.Task!);
        if (step.Task!.PendingControl == PendingControl.Kill)
        {
            _killsPending.Add(step.Task.Id);
        }

        var kind = step.Signal switch
        {
            WorkerSignal.Pause => WorkerMessageKind.Pause,
            WorkerSignal.Play => WorkerMessageKind.Play,
            WorkerSignal.Kill => WorkerMessageKind.Kill,
            WorkerSignal.Abandon => WorkerMessageKind.Abandon,
            _ => (WorkerMessageKind?)null,
        };
        if (kind is { } k && worker?.Connection is { } connection)
        {
            _outbox.Add(new WorkerMessage(connection, k, step.Task));
        }

        return null;
    }

    // The single place where a task record replaces another: keeps counts, the ready index, worker
    // holdings and tag counters consistent with the table, and records the change for the store.
    private void Put(TaskRecord next)
    {
        if (_tasks.TryGetValue(next.Id, out var prev))
        {
            _counts[(int)prev.State]--;
            if (prev.State == TaskState.Ready)
            {
                _ready.Remove(prev);
            }

            if (prev.OnWorker)
            {
                Release(prev);
            }
        }

        // Terminated is final: the task moves to the terminated log, which keeps no payload bytes
        // (only their size, for display; only assignments read a payload). The store still gets the
        // full record below: a task added and terminated in one batch is inserted from this image.
        if (next.State == TaskState.Terminated)
        {
            _tasks.Remove(next.Id);
            _terminated.Append(next);
            _rejectedBy.Remove(next.Id);
        }
        else
        {
            _tasks[next.Id] = next;
        }

        _counts[(int)next.State]++;
        if (next.State == TaskState.Ready)
        {
            _ready.Add(next);
            _assignNeeded = true;
        }

        if (next.OnWorker)
        {
            if (_workers.TryGetValue(next.WorkerId!, out var worker))
            {
                worker.Tasks.Add(next.Id);
            }

            foreach (var tag in next.Tags)
            {
                _tagRunning[tag] = _tagRunning.GetValueOrDefault(tag) + 1;
            }
        }

        if (!_loading)
        {
            ref var dirty = ref CollectionsMarshal.GetValueRefOrAddDefault(_dirty, next.Id, out var wasDirty);
            dirty = (next, wasDirty ? dirty.StoredHistory : prev?.History.Count ?? TaskUpsert.NotStored);
            _changes.Add(new TaskChange(next, prev is null || prev.State != next.State, next.Layers > (prev?.Layers ?? 0)));
        }
    }

    private void Release(TaskRecord prev)
    {
        if (_workers.TryGetValue(prev.WorkerId!, out var worker) && worker.Tasks.Remove(prev.Id))
        {
            _ready.UnparkRejected();
            _assignNeeded = true;
        }

        foreach (var tag in prev.Tags)
        {
            var running = _tagRunning.GetValueOrDefault(tag) - 1;
            if (running <= 0)
            {
                _tagRunning.Remove(tag);
            }
            else
            {
                _tagRunning[tag] = running;
            }

            if (_tagLimits.ContainsKey(tag))
            {
                _ready.UnparkTag(tag);
            }
        }
    }

    // The live tasks and the terminated log as one read-only table.
    private sealed class TaskTable(CoordinatorState state) : IReadOnlyDictionary<long, TaskRecord>
    {
        public int Count => state._tasks.Count + state._terminated.Count;

        public IEnumerable<long> Keys => state._tasks.Keys.Concat(state._terminated.Ids);

        public IEnumerable<TaskRecord> Values => state._tasks.Values.Concat(state._terminated.Records());

        public TaskRecord this[long key] => TryGetValue(key, out var task) ? task : throw new KeyNotFoundException($"no task {key}");

        public bool ContainsKey(long key) => state._tasks.ContainsKey(key) || state._terminated.Contains(key);

        public bool TryGetValue(long key, out TaskRecord value) =>
            state._tasks.TryGetValue(key, out value!) || state._terminated.TryGet(key, out value);

        public IEnumerator<KeyValuePair<long, TaskRecord>> GetEnumerator() =>
            Values.Select(t => KeyValuePair.Create(t.Id, t)).GetEnumerator();

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
