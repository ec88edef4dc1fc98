using Tatzelwurm.Core;
using Xunit;
using static Tatzelwurm.Storage.Tests.TestData;

namespace Tatzelwurm.Storage.Tests;

public sealed class InMemoryTaskStoreTests : StoreContractTests
{
    protected override ITaskStore Create() => new InMemoryTaskStore { FailCommit = _ => Failing };

    // Nothing survives a real restart; the same instance stands in for "after restart".
    protected override Task<ITaskStore> ReopenAsync(ITaskStore store) => Task.FromResult(store);

    [Fact]
    public async Task Commit_CallerMutatesItsArraysAfterwards_StoreKeepsCommittedBytes()
    {
        var store = new InMemoryTaskStore();
        var payload = new byte[] { 1, 2, 3 };
        var result = new byte[] { 4 };
        var tags = new List<string> { "a" };
        var history = new List<Transition> { new(TaskState.Created, T0, null) };
        await store.CommitAsync(Batch([Minimal(1) with { Payload = payload, Result = result, Tags = tags, History = history }]), Ct);

        payload[0] = 99;
        result[0] = 99;
        tags.Add("b");
        history.Clear();

        var task = Assert.Single(store.Snapshot().Tasks);
        Assert.Equal(new byte[] { 1, 2, 3 }, task.Payload.ToArray());
        Assert.Equal(new byte[] { 4 }, task.Result);
        Assert.Equal(["a"], task.Tags);
        Assert.Single(task.History);
    }

    [Fact]
    public async Task Load_CallerMutatesLoadedResult_StoreKeepsCommittedBytes()
    {
        var store = new InMemoryTaskStore();
        await store.CommitAsync(Batch([Minimal(1) with { Result = [4] }]), Ct);

        (await store.LoadAsync(Ct)).Tasks[0].Result![0] = 99;

        Assert.Equal(new byte[] { 4 }, store.Snapshot().Tasks[0].Result);
    }

    [Fact]
    public void Constructor_InitialSnapshot_IsTheCommittedState()
    {
        var initial = new StoreSnapshot([Full(2), Minimal(1)], new Dictionary<string, int> { ["gpu"] = 1 }, 5);

        var snapshot = new InMemoryTaskStore(initial).Snapshot();

        Same(new StoreSnapshot([Minimal(1), Full(2)], initial.TagLimits, 5), snapshot);
    }

    [Fact]
    public async Task Commit_Failing_DoesNotCountAsCommit()
    {
        var store = new InMemoryTaskStore { FailCommit = _ => true };

        await Assert.ThrowsAsync<StoreException>(() => store.CommitAsync(Batch([Minimal(1)]), Ct));

        Assert.Equal(0, store.CommitCount);
        Assert.Empty(store.Snapshot().Tasks);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Commit_WrongStoredHistoryClaim_RefusedOnlyWhenVerifying(bool verify)
    {
        var store = new InMemoryTaskStore { VerifyStoredHistory = verify };
        var stored = Minimal(1);
        await store.CommitAsync(Batch([stored]), Ct);
        var next = Moved(stored, TaskState.Ready);

        // Claims one history entry more than the store holds.
        var commit = store.CommitAsync(Batch(updates: [new TaskUpsert(next, stored.History.Count + 1)]), Ct);

        if (verify)
        {
            await Assert.ThrowsAsync<InvalidOperationException>(() => commit);
            Assert.Equal(stored.History.Count, store.Snapshot().Tasks[0].History.Count);
        }
        else
        {
            await commit;
            Assert.Equal(next.History.Count, store.Snapshot().Tasks[0].History.Count);
        }
    }
}
