using Tatzelwurm.Core;
using Xunit;
using static Tatzelwurm.Storage.Tests.TestData;

namespace Tatzelwurm.Storage.Tests;

/// <summary>What every ITaskStore must do; run against each implementation.</summary>
public abstract class StoreContractTests : IAsyncDisposable
{
    private ITaskStore? _store;

    /// <summary>Read by the store's FailCommit hook.</summary>
    protected bool Failing { get; set; }

    protected abstract ITaskStore Create();

    /// <summary>The store as a restarted coordinator would see it (a new instance where the store has a file).</summary>
    protected abstract Task<ITaskStore> ReopenAsync(ITaskStore store);

    protected ITaskStore Store => _store ??= Create();

    public virtual async ValueTask DisposeAsync()
    {
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }

        GC.SuppressFinalize(this);
    }

    private async Task<StoreSnapshot> ReloadAsync()
    {
        _store = await ReopenAsync(Store);
        return await _store.LoadAsync(Ct);
    }

    [Fact]
    public async Task Load_NewStore_IsEmpty()
    {
        var snapshot = await Store.LoadAsync(Ct);
        Same(StoreSnapshot.Empty, snapshot);
    }

    [Fact]
    public async Task Commit_EveryFieldInEveryState_RoundTrips()
    {
        var tasks = Enum.GetValues<TaskState>().Select((s, i) => Full(i + 1, s)).ToList();
        await Store.CommitAsync(Batch(tasks), Ct);

        var snapshot = await ReloadAsync();

        Same(new StoreSnapshot(tasks, new Dictionary<string, int>(), tasks.Count), snapshot);
    }

    [Fact]
    public async Task Commit_NullsAndEmpties_RoundTripDistinctly()
    {
        var minimal = Minimal(1);
        var empties = Minimal(2) with
        {
            Payload = Array.Empty<byte>(),
            Result = [],
            Error = "",
            Reason = "",
            WorkerId = "",
            Tags = [""],
            ExitCode = 0,
            KillRequestedAt = DateTimeOffset.UnixEpoch,
            History = [new Transition(TaskState.Created, DateTimeOffset.UnixEpoch, "")],
        };
        await Store.CommitAsync(Batch([minimal, empties]), Ct);

        var snapshot = await ReloadAsync();

        Same(minimal, snapshot.Tasks[0]);
        Same(empties, snapshot.Tasks[1]);
        Assert.Null(snapshot.Tasks[0].Result);
        Assert.NotNull(snapshot.Tasks[1].Result);
    }

    [Fact]
    public async Task Commit_OneMebibytePayloadAndResult_RoundTripsBytes()
    {
        var payload = new byte[1 << 20];
        new Random(42).NextBytes(payload);
        var task = Full(1) with { Payload = payload, Result = [.. payload.Reverse()] };
        await Store.CommitAsync(Batch([task]), Ct);

        var snapshot = await ReloadAsync();

        Same(task, Assert.Single(snapshot.Tasks));
    }

    [Fact]
    public async Task Commit_PayloadSliceOfLargerArray_StoresOnlyTheSlice()
    {
        var backing = new byte[] { 1, 2, 3, 4, 5 };
        var task = Minimal(1) with { Payload = backing.AsMemory(1, 3) };
        await Store.CommitAsync(Batch([task]), Ct);

        var snapshot = await ReloadAsync();

        Assert.Equal(new byte[] { 2, 3, 4 }, snapshot.Tasks[0].Payload.ToArray());
    }

    [Fact]
    public async Task Commit_UpsertUpdateThenDelete_KeepsLatestAfterImageThenNothing()
    {
        var created = Full(1, TaskState.Ready);
        await Store.CommitAsync(Batch([created, Minimal(2)]), Ct);
        var updated = Moved(created, TaskState.Terminated, "done") with { ExitCode = 0, WorkerId = null };
        await Store.CommitAsync(Batch(updates: [Updated(created, updated)], lastTaskId: 2), Ct);

        var afterUpdate = await ReloadAsync();
        Same(updated, afterUpdate.Tasks[0]);
        Same(Minimal(2), afterUpdate.Tasks[1]);

        await Store.CommitAsync(Batch(deletes: [1, 99], lastTaskId: 2), Ct);

        var afterDelete = await ReloadAsync();
        Same(Minimal(2), Assert.Single(afterDelete.Tasks));
    }

    [Fact]
    public async Task Commit_TagLimits_SetChangeAndRemove()
    {
        await Store.CommitAsync(Batch(tagLimits: [Limit("gpu", 2), Limit("io", 5), Limit("ünï", 1)]), Ct);
        await Store.CommitAsync(Batch(tagLimits: [Limit("gpu", 3), Limit("io", null), Limit("never-set", null)]), Ct);

        var snapshot = await ReloadAsync();

        Assert.Equal(new Dictionary<string, int> { ["gpu"] = 3, ["ünï"] = 1 }, snapshot.TagLimits);
    }

    [Fact]
    public async Task Commit_LowerLastTaskId_NeverMovesItBackwards()
    {
        await Store.CommitAsync(Batch([Minimal(10)], lastTaskId: 10), Ct);
        await Store.CommitAsync(Batch([Minimal(3)], lastTaskId: 3), Ct);
        // All tasks purged: the counter must survive so ids are never reused.
        await Store.CommitAsync(Batch(deletes: [3, 10], lastTaskId: 0), Ct);

        var snapshot = await ReloadAsync();

        Assert.Empty(snapshot.Tasks);
        Assert.Equal(10, snapshot.LastTaskId);
    }

    [Fact]
    public async Task Commit_EmptyBatchWithHigherLastTaskId_PersistsTheCounter()
    {
        await Store.CommitAsync(Batch(lastTaskId: 7), Ct);

        var snapshot = await ReloadAsync();

        Assert.Equal(7, snapshot.LastTaskId);
    }

    [Fact]
    public async Task Commit_Failing_ThrowsStoreExceptionAndKeepsPreviousState_LaterCommitSucceeds()
    {
        var first = Full(1);
        await Store.CommitAsync(Batch([first], tagLimits: [Limit("gpu", 1)]), Ct);

        Failing = true;
        var failed = Batch([Full(2)], deletes: [], tagLimits: [Limit("gpu", null)], lastTaskId: 2, updates: [Updated(first, Moved(first, TaskState.Terminated))]);
        await Assert.ThrowsAsync<StoreException>(() => Store.CommitAsync(failed, Ct));

        var afterFailure = await Store.LoadAsync(Ct);
        Same(new StoreSnapshot([first], new Dictionary<string, int> { ["gpu"] = 1 }, 1), afterFailure);

        Failing = false;
        await Store.CommitAsync(failed, Ct);

        var recovered = await ReloadAsync();
        Same(new StoreSnapshot([.. failed.Upserts.Select(u => u.Task).OrderBy(t => t.Id)], new Dictionary<string, int>(), 2), recovered);
    }

    [Fact]
    public async Task Commit_UpdateOfEveryMutableField_RoundTripsEachWay()
    {
        // Values to nulls and back: the update path writes only the mutable columns, so each of
        // them must go through it in both directions; the fixed ones must stay as inserted.
        var created = Full(1, TaskState.Run);
        await Store.CommitAsync(Batch([created]), Ct);
        var cleared = Moved(created, TaskState.Ready) with
        {
            WorkerId = null,
            ExitCode = null,
            Result = null,
            Error = null,
            Attempts = 3,
            Layers = 0,
            PendingControl = PendingControl.None,
            KillRequestedAt = null,
            Reason = null,
        };
        await Store.CommitAsync(Batch(updates: [Updated(created, cleared)]), Ct);
        Same(cleared, Assert.Single((await ReloadAsync()).Tasks));

        var set = Moved(cleared, TaskState.Terminated, "lost") with
        {
            WorkerId = "worker-9",
            ExitCode = -1,
            Result = [1, 2],
            Error = "gone",
            Attempts = 4,
            Layers = 2,
            PendingControl = PendingControl.Pause,
            KillRequestedAt = T0.AddMinutes(1),
            Reason = "worker lost",
        };
        await Store.CommitAsync(Batch(updates: [Updated(cleared, set)]), Ct);
        Same(set, Assert.Single((await ReloadAsync()).Tasks));
    }

    [Fact]
    public async Task Commit_HistoryAppendedOverSeveralBatches_ReloadsInOrder()
    {
        var task = Full(1, TaskState.Ready);
        var other = Minimal(2);
        await Store.CommitAsync(Batch([task, other]), Ct);
        TaskState[] path = [TaskState.Submit, TaskState.Run, TaskState.Pause, TaskState.Run, TaskState.Terminated];
        for (var i = 0; i < path.Length; i += 2)
        {
            // One or two transitions per batch, as a busy task gets between group commits.
            var next = path[i..Math.Min(i + 2, path.Length)].Aggregate(task, (t, s) => Moved(t, s, $"step {s}"));
            await Store.CommitAsync(Batch(updates: [Updated(task, next)], lastTaskId: 2), Ct);
            task = next;
        }

        var snapshot = await ReloadAsync();

        Assert.Equal(8, task.History.Count);
        Same(task, snapshot.Tasks[0]);
        Same(other, snapshot.Tasks[1]);
    }

    [Fact]
    public async Task Commit_RetryOfAFailedUpdateFromTheEarliestBase_PersistsEveryEntry()
    {
        // StoreWriter merges a failed batch with the next ones, keeping the earliest base: the
        // retry carries the newest image with the history count from before the failed batch.
        var stored = Full(1, TaskState.Ready);
        await Store.CommitAsync(Batch([stored]), Ct);
        var failedImage = Moved(stored, TaskState.Submit);
        var added = Minimal(2) with { State = TaskState.Ready, History = [new Transition(TaskState.Ready, T0, null)] };
        Failing = true;
        await Assert.ThrowsAsync<StoreException>(() => Store.CommitAsync(Batch([added], updates: [Updated(stored, failedImage)]), Ct));
        Failing = false;

        var newest = Moved(Moved(failedImage, TaskState.Run), TaskState.Terminated, "done");
        var addedNewest = Moved(added, TaskState.Pause);
        await Store.CommitAsync(Batch([addedNewest], updates: [new TaskUpsert(newest, stored.History.Count)]), Ct);

        var snapshot = await ReloadAsync();
        Same(newest, snapshot.Tasks[0]);
        Same(addedNewest, snapshot.Tasks[1]);
    }
}
