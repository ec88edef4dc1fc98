namespace Tatzelwurm.Core;

/// <summary>Everything the coordinator keeps across restarts.</summary>
public sealed record StoreSnapshot(
    IReadOnlyList<TaskRecord> Tasks,
    IReadOnlyDictionary<string, int> TagLimits,
    long LastTaskId)
{
    public static readonly StoreSnapshot Empty = new([], new Dictionary<string, int>(), 0);
}

/// <summary>
/// The after-image of a task changed in a batch, with what the store already holds of it (as of the
/// previous batch, which is committed first or merged into this one): nothing
/// (<see cref="StoredHistory"/> = <see cref="NotStored"/>, a new task), or its row and the first
/// <see cref="StoredHistory"/> history entries. History is append-only, so a store can write the
/// changed columns and the new entries only.
/// </summary>
public readonly record struct TaskUpsert(TaskRecord Task, int StoredHistory)
{
    public const int NotStored = -1;

    public static TaskUpsert New(TaskRecord task) => new(task, NotStored);

    public bool IsNew => StoredHistory == NotStored;
}

/// <summary>
/// One group commit: the after-images of every task changed since the last batch, purged task ids,
/// tag-limit changes (null removes) and the id counter (ids are never reused, even after a purge).
/// </summary>
public sealed record StoreBatch(
    IReadOnlyList<TaskUpsert> Upserts,
    IReadOnlyList<long> Deletes,
    IReadOnlyList<KeyValuePair<string, int?>> TagLimits,
    long LastTaskId)
{
    public bool IsEmpty => Upserts.Count == 0 && Deletes.Count == 0 && TagLimits.Count == 0;
}

/// <summary>
/// The coordinator's persistence. Only the coordinator's single writer calls it, one batch at a time.
/// <see cref="CommitAsync"/> returns once the batch is as durable as the store's mode promises (fsync'd
/// in the default mode); if it throws, nothing of the batch may be reported as persisted.
/// </summary>
public interface ITaskStore : IAsyncDisposable
{
    /// <summary>Where the data lives, for logs.</summary>
    string Description { get; }

    /// <summary>
    /// Every stored task. A terminated task may come without its payload bytes (but with its
    /// <see cref="TaskRecord.PayloadSize"/>): the coordinator does not keep them, so a store need not read them.
    /// </summary>
    Task<StoreSnapshot> LoadAsync(CancellationToken cancellationToken);

    Task CommitAsync(StoreBatch batch, CancellationToken cancellationToken);
}
