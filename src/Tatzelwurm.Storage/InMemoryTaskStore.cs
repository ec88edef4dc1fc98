using Tatzelwurm.Core;

namespace Tatzelwurm.Storage;

/// <summary>
/// Keeps the last committed state in memory (tests, <c>--store memory</c>). Records are copied in
/// and out, so nothing a caller holds aliases what the store keeps.
/// </summary>
public sealed class InMemoryTaskStore : ITaskStore
{
    private readonly Lock _lock = new();
    private readonly Dictionary<long, TaskRecord> _tasks = [];
    private readonly Dictionary<string, int> _tagLimits = new(StringComparer.Ordinal);
    private long _lastTaskId;
    private int _commitCount;

    public InMemoryTaskStore()
    {
    }

    /// <summary>Starts from <paramref name="initial"/>, as if it had been committed before.</summary>
    public InMemoryTaskStore(StoreSnapshot initial)
    {
        ArgumentNullException.ThrowIfNull(initial);
        foreach (var task in initial.Tasks)
        {
            _tasks[task.Id] = Detach(task);
        }

        foreach (var (tag, limit) in initial.TagLimits)
        {
            _tagLimits[tag] = limit;
        }

        _lastTaskId = initial.LastTaskId;
    }

    public string Description => "memory (nothing survives a restart)";

    /// <summary>Test hook: returning true makes the commit throw a <see cref="StoreException"/> and change nothing.</summary>
    public Func<StoreBatch, bool>? FailCommit { get; set; }

    /// <summary>
    /// Refuse a batch whose stored-history claims do not match what this store holds (on by default, so
    /// every test that runs the coordinator on this store checks the claims the SQLite store relies on).
    /// Off for <c>--store memory</c>: there a wrong claim loses nothing, while refusing would keep the
    /// store failing for good, since a retried batch repeats the claim.
    /// </summary>
    public bool VerifyStoredHistory { get; init; } = true;

    /// <summary>Commits that succeeded.</summary>
    public int CommitCount => Volatile.Read(ref _commitCount);

    public Task<StoreSnapshot> LoadAsync(CancellationToken cancellationToken) => Task.FromResult(Snapshot());

    /// <summary>A copy of the committed state, tasks in id order.</summary>
    public StoreSnapshot Snapshot()
    {
        lock (_lock)
        {
            var tasks = _tasks.Values.OrderBy(t => t.Id).Select(Detach).ToList();
            return new StoreSnapshot(tasks, new Dictionary<string, int>(_tagLimits, StringComparer.Ordinal), _lastTaskId);
        }
    }

    public Task CommitAsync(StoreBatch batch, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled(cancellationToken);
        }

        if (FailCommit?.Invoke(batch) == true)
        {
            return Task.FromException(new StoreException("simulated disk failure (InMemoryTaskStore.FailCommit)"));
        }

        // Copy before taking the lock and before changing anything: the commit is all or nothing.
        var upserts = batch.Upserts.Select(u => Detach(u.Task)).ToList();
        lock (_lock)
        {
            // The SQLite store writes only what changed since the stored image a batch claims, so a
            // wrong claim would lose data there.
            foreach (var upsert in VerifyStoredHistory ? batch.Upserts : [])
            {
                var stored = _tasks.TryGetValue(upsert.Task.Id, out var current) ? current.History.Count : TaskUpsert.NotStored;
                if (stored != upsert.StoredHistory)
                {
                    return Task.FromException(new InvalidOperationException(
                        $"batch claims task {upsert.Task.Id} is stored with {upsert.StoredHistory} history entries; the store has {stored}"));
                }
            }

            foreach (var task in upserts)
            {
                _tasks[task.Id] = task;
            }

            foreach (var id in batch.Deletes)
            {
                _tasks.Remove(id);
            }

            foreach (var (tag, limit) in batch.TagLimits)
            {
                if (limit is { } max)
                {
                    _tagLimits[tag] = max;
                }
                else
                {
                    _tagLimits.Remove(tag);
                }
            }

            _lastTaskId = Math.Max(_lastTaskId, batch.LastTaskId);
            _commitCount++;
        }

        return Task.CompletedTask;
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    // Records are immutable but may hold mutable arrays or lists (Payload's backing array, Result,
    // a List passed as Tags/History): copy those.
    internal static TaskRecord Detach(TaskRecord t) => t with
    {
        Tags = [.. t.Tags],
        Payload = t.Payload.ToArray(),
        PayloadSize = t.PayloadSize,
        Result = t.Result is null ? null : [.. t.Result],
        History = [.. t.History],
    };
}
