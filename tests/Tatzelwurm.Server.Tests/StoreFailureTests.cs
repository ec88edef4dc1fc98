using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;
using TaskState = Tatzelwurm.Core.TaskState;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// SPEC §10: a failing store stops acknowledging writes instead of acknowledging what it could not
/// persist; reads go on; after the writer's probe (at most once a second) writes are accepted again.
/// </summary>
public class StoreFailureTests
{
    [Fact]
    public async Task StoreFailure_AddsRefusedWhileReadsServed_AfterTheProbeStoreHoldsExactlyTheAcknowledgedTasks()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();
        var acknowledged = new List<long>(await client.AddManyAsync(2));
        var attempts = 0;
        coordinator.Store.FailCommit = _ =>
        {
            Interlocked.Increment(ref attempts);
            return true;
        };

        // The add that runs into the failure is applied in memory but not durable: no answer yet.
        var discovering = client.NextId();
        await client.SendAsync(new AddTasks(discovering, [Specs.New("first")]));
        await coordinator.UntilStoreFailingAsync();
        // Now that the coordinator knows the store fails, new changes are refused without being applied.
        var refused = await client.RequestErrorAsync(id => new AddTasks(id, [Specs.New("refused"), Specs.New("refused")]), ErrorCode.StoreUnavailable);
        Assert.Contains("store", refused.Message, StringComparison.OrdinalIgnoreCase);
        await client.RequestErrorAsync(id => new AddTasks(id, [Specs.New("refused")]), ErrorCode.StoreUnavailable);
        await client.RequestErrorAsync(id => new ControlTasks(id, TaskAction.Pause, [acknowledged[0]], false), ErrorCode.StoreUnavailable);
        await client.RequestErrorAsync(id => new SetTagLimit(id, "gpu", 1), ErrorCode.StoreUnavailable);
        Assert.False(coordinator.Coordinator.StoreHealthy);

        // Reads are still answered, and show nothing of the refused adds.
        var listed = await client.ListAllAsync();
        Assert.DoesNotContain(listed, t => t.Type == "refused");
        Assert.Equal(acknowledged, listed.Where(t => t.Type == "t").Select(t => t.Id));
        Assert.Equal(TaskState.Ready, (TaskState)(await client.RequestAsync<TaskDetail>(id => new ShowTask(id, acknowledged[0]))).Task.State);
        Assert.Empty((await client.RequestAsync<WorkerList>(id => new ListWorkers(id))).Workers);
        Assert.Equal(acknowledged, coordinator.Store.Snapshot().Tasks.Select(t => t.Id));

        // No retry before the probe is due: one tick short of a second, nothing is tried.
        await coordinator.QueryAsync(_ => 0);
        var triedBefore = Volatile.Read(ref attempts);
        coordinator.Time.Advance(TimeSpan.FromSeconds(1) - TimeSpan.FromTicks(1));
        await client.RequestErrorAsync(id => new AddTasks(id, [Specs.New("refused")]), ErrorCode.StoreUnavailable);
        Assert.Equal(triedBefore, Volatile.Read(ref attempts));

        // The disk comes back; the probe commits what was applied, and only then is the first add acknowledged.
        coordinator.Store.FailCommit = null;
        await coordinator.QueryAsync(_ => 0);
        coordinator.Time.Advance(TimeSpan.FromSeconds(1));
        var late = await client.ReplyAsync<TasksAdded>(discovering);
        acknowledged.AddRange(late.Ids);

        Assert.True(await coordinator.QueryAsync(_ => coordinator.Coordinator.StoreHealthy));
        acknowledged.AddRange(await client.AddManyAsync(2));
        Assert.Equal(acknowledged, coordinator.Store.Snapshot().Tasks.Select(t => t.Id));
        Assert.Equal(acknowledged, (await client.ListAllAsync()).Select(t => t.Id));
        await client.RequestAsync<OkReply>(id => new SetTagLimit(id, "gpu", 1));
        Assert.Equal(1, coordinator.Store.Snapshot().TagLimits["gpu"]);
    }

    [Fact]
    public async Task StoreFailure_WorkerReportsRefused_ReportedAgainAfterRecovery()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await ResultTests.StartOnWorkerAsync(actioner, worker);
        var other = await actioner.AddAsync();
        coordinator.Store.FailCommit = _ => true;

        // A failing commit discovered through another change, then the worker's report is refused.
        var discovering = actioner.NextId();
        await actioner.SendAsync(new ControlTasks(discovering, TaskAction.Pause, [other], false));
        await coordinator.UntilStoreFailingAsync();
        await actioner.RequestErrorAsync(rid => new AddTasks(rid, [Specs.New()]), ErrorCode.StoreUnavailable);
        await worker.RequestErrorAsync(rid => new TaskUpdate(rid, id, TaskUpdateKind.Finished, 0, [1], null), ErrorCode.StoreUnavailable);
        Assert.Equal(TaskState.Run, (await coordinator.TaskAsync(id)).State);

        coordinator.Store.FailCommit = null;
        await coordinator.QueryAsync(_ => 0);
        coordinator.Time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal([other], (await actioner.ReplyAsync<ControlResult>(discovering)).Applied);
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, [1]);

        Assert.Equal([1], (await actioner.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, id))).Result);
        var stored = coordinator.Store.Snapshot().Tasks.ToDictionary(t => t.Id);
        Assert.Equal((TaskState.Terminated, TaskState.Pause), (stored[id].State, stored[other].State));
    }
}
