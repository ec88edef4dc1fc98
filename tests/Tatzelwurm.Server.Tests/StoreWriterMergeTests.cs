using Tatzelwurm.Core;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// A failed batch is merged with the units queued after it. The store writes only what changed
/// since the base a batch names, so the merge must keep each task's earliest base.
/// </summary>
public class StoreWriterMergeTests
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.FromUnixTimeMilliseconds(1_750_000_000_000);

    [Fact]
    public void Merge_TaskNewInTheFailedBatch_StaysNewWithTheNewestImage()
    {
        var created = Task(1, TaskState.Ready);
        var running = Moved(Moved(created, TaskState.Submit), TaskState.Run);

        var merged = StoreWriter.Merge(Batch(TaskUpsert.New(created)), [Unit(new TaskUpsert(running, created.History.Count))]);

        var upsert = Assert.Single(merged.Upserts);
        Assert.Same(running, upsert.Task);
        Assert.True(upsert.IsNew);
    }

    [Fact]
    public void Merge_StoredTaskChangedAgain_KeepsTheHistoryCountOfTheFailedBatch()
    {
        var stored = Task(1, TaskState.Ready);
        var submitted = Moved(stored, TaskState.Submit);
        var running = Moved(submitted, TaskState.Run);
        var done = Moved(running, TaskState.Terminated);

        var merged = StoreWriter.Merge(
            Batch(new TaskUpsert(submitted, stored.History.Count)),
            [Unit(new TaskUpsert(running, submitted.History.Count)), Unit(new TaskUpsert(done, running.History.Count))]);

        var upsert = Assert.Single(merged.Upserts);
        Assert.Same(done, upsert.Task);
        Assert.Equal(stored.History.Count, upsert.StoredHistory);
    }

    [Fact]
    public void Merge_TaskPurgedAfterTheFailedBatch_IsOnlyADelete()
    {
        var merged = StoreWriter.Merge(Batch(TaskUpsert.New(Task(1, TaskState.Terminated))), [Unit(deletes: [1])]);

        Assert.Empty(merged.Upserts);
        Assert.Equal([1L], merged.Deletes);
    }

    [Fact]
    public void Merge_TaskAddedAndTerminatedBeforeAnyCommit_IsInsertedWithItsPayload()
    {
        // The table keeps the terminated task without its bytes; the merged batch inserts the task
        // from its terminated image, which must still carry them.
        var state = new CoordinatorState(CoordinatorOptions.Default);
        var id = state.AddTask(new NewTask(new byte[] { 1, 2, 3 }, "t", 0, [], null, true, false), T0).Id;
        var failed = state.TakeBatch();
        Assert.Null(state.Control(id, ControlVerb.Kill, T0));

        var merged = StoreWriter.Merge(failed, [Unit(Assert.Single(state.TakeBatch().Upserts))]);

        Assert.True(state.Tasks[id].Payload.IsEmpty);
        var upsert = Assert.Single(merged.Upserts);
        Assert.True(upsert.IsNew);
        Assert.Equal(TaskState.Terminated, upsert.Task.State);
        Assert.Equal([1, 2, 3], upsert.Task.Payload.ToArray());
    }

    private static TaskRecord Task(long id, TaskState state) => new()
    {
        Id = id,
        Type = "t",
        State = state,
        CreatedAt = T0,
        UpdatedAt = T0,
        History = [new Transition(state, T0, null)],
    };

    private static TaskRecord Moved(TaskRecord task, TaskState to) =>
        task with { State = to, History = [.. task.History, new Transition(to, T0, null)] };

    private static StoreBatch Batch(params TaskUpsert[] upserts) => new(upserts, [], [], 1);

    private static CommitUnit Unit(TaskUpsert? upsert = null, long[]? deletes = null) =>
        new(new StoreBatch(upsert is { } u ? [u] : [], deletes ?? [], [], 1), []);
}
