using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;
using DeliveryPolicy = Tatzelwurm.Protocol.DeliveryPolicy;
using TaskSpec = Tatzelwurm.Protocol.TaskSpec;
using WorkerAction = Tatzelwurm.Protocol.WorkerAction;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// The coordinator loop's timers on a <see cref="Microsoft.Extensions.Time.Testing.FakeTimeProvider"/>:
/// a worker's lease lapses exactly at lease_ms of silence, any frame renews it, and after the grace
/// period its tasks follow their delivery policy unless it came back and reclaimed them.
/// </summary>
public class LeaseTests
{
    private static readonly CoordinatorOptions Options = CoordinatorOptions.Default with
    {
        Lease = TimeSpan.FromSeconds(10),
        Grace = TimeSpan.FromSeconds(30),
    };

    [Fact]
    public async Task Lease_SilentWorker_ConnectedOneTickBeforeTheLeaseSuspectAtIt()
    {
        await using var coordinator = await TestCoordinator.StartAsync(Options);
        await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();

        coordinator.Time.Advance(Options.Lease - TimeSpan.FromTicks(1));
        Assert.Equal("connected", await LeaseAsync(actioner, "w1"));

        coordinator.Time.Advance(TimeSpan.FromTicks(1));
        Assert.Equal("suspect", await LeaseAsync(actioner, "w1"));
    }

    [Fact]
    public async Task Lease_HeartbeatsEveryInterval_NeverSuspect()
    {
        await using var coordinator = await TestCoordinator.StartAsync(Options);
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();

        for (var i = 1; i <= 20; i++)
        {
            coordinator.Time.Advance(Options.HeartbeatInterval);
            await worker.SendAsync(new Heartbeat(i));
            Assert.Equal(i, (await worker.ReceiveAsync<HeartbeatAck>()).Sequence);
        }

        Assert.Equal("connected", await LeaseAsync(actioner, "w1"));
    }

    [Fact]
    public async Task Lease_SuspectWorkerSpeaksAgain_ConnectedAndAssignedAgain()
    {
        await using var coordinator = await TestCoordinator.StartAsync(Options);
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        coordinator.Time.Advance(Options.Lease);
        Assert.Equal("suspect", await LeaseAsync(actioner, "w1"));

        // A suspect worker gets no new tasks (looked up without a frame from the worker, which would renew it) ...
        var id = await actioner.AddAsync();
        Assert.Equal(TaskState.Ready, (await coordinator.TaskAsync(id)).State);

        // ... until any frame from it renews the lease.
        await worker.SendAsync(new Heartbeat(1));
        Assert.Equal(1, (await worker.ReceiveAsync<HeartbeatAck>()).Sequence);
        Assert.Equal(id, (await worker.ReceiveAsync<AssignTask>()).TaskId);
        Assert.Equal("connected", await LeaseAsync(actioner, "w1"));
    }

    [Theory]
    [InlineData(DeliveryPolicy.AtLeastOnce, TaskState.Ready)]
    [InlineData(DeliveryPolicy.AtMostOnce, TaskState.Pause)]
    public async Task Grace_WorkerGoneForTheGracePeriod_RunningTaskFollowsItsPolicy(DeliveryPolicy policy, TaskState expected)
    {
        await using var coordinator = await TestCoordinator.StartAsync(Options);
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await ResultTests.StartOnWorkerAsync(actioner, worker, new TaskSpec([1], "t", 0, [], policy, true, false));
        await worker.CompleteAsync();
        await worker.ExpectClosedAsync();
        await coordinator.UntilDisconnectedAsync("w1");

        coordinator.Time.Advance(Options.Grace - TimeSpan.FromTicks(1));
        var waiting = await coordinator.TaskAsync(id);
        Assert.Equal((TaskState.Run, "w1"), (waiting.State, waiting.WorkerId));

        coordinator.Time.Advance(TimeSpan.FromTicks(1));

        var lost = await coordinator.TaskAsync(id);
        Assert.Equal((expected, (string?)null, 1), (lost.State, lost.WorkerId, lost.Attempts));
        Assert.Empty((await actioner.RequestAsync<WorkerList>(rid => new ListWorkers(rid))).Workers);
        Assert.Equal(expected, coordinator.Store.Snapshot().Tasks.Single().State);
    }

    [Fact]
    public async Task Grace_WorkerReconnectsWithinIt_ReclaimsItsTaskAndIsToldToDropTheRest()
    {
        await using var coordinator = await TestCoordinator.StartAsync(Options);
        var worker = await coordinator.ConnectWorkerAsync("w1", slots: 2);
        var actioner = await coordinator.ConnectAsync();
        var kept = await ResultTests.StartOnWorkerAsync(actioner, worker);
        var other = await actioner.AddAsync();
        await worker.ReceiveAsync<AssignTask>();
        await worker.ReportAsync(other, TaskUpdateKind.Accepted);
        await worker.CompleteAsync();
        await worker.ExpectClosedAsync();
        await coordinator.UntilDisconnectedAsync("w1");
        coordinator.Time.Advance(Options.Grace - TimeSpan.FromTicks(1));

        // Back just in time, still running "kept" but claiming a task that was never its own.
        var back = await coordinator.ConnectAsync(Roles.Worker);
        var registered = await back.RequestAsync<WorkerRegistered>(rid => new RegisterWorker(rid, "w1", "w1", [], 2, [new HeldTask(kept, false), new HeldTask(999, false)]));
        coordinator.Time.Advance(TimeSpan.FromSeconds(1));

        Assert.Equal([999L], registered.Drop);
        var reclaimed = await coordinator.TaskAsync(kept);
        Assert.Equal((TaskState.Run, "w1", 0), (reclaimed.State, reclaimed.WorkerId, reclaimed.Attempts));
        // "other" was not in its list: it lost it, so that task follows its policy now.
        var dropped = await coordinator.TaskAsync(other);
        Assert.Equal((TaskState.Pause, (string?)null), (dropped.State, dropped.WorkerId));
        await back.ReportAsync(kept, TaskUpdateKind.Finished, 0, [1]);
        Assert.Equal(0, (await actioner.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, kept))).ExitCode);
    }

    [Fact]
    public async Task Drain_Worker_ToldAndGivenNoNewTasksUntilUndrained()
    {
        await using var coordinator = await TestCoordinator.StartAsync(Options);
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();

        await actioner.RequestAsync<OkReply>(rid => new WorkerCommand(rid, "w1", WorkerAction.Drain));
        Assert.False((await worker.ReceiveAsync<DrainNotice>()).Stop);
        var id = await actioner.AddAsync();
        Assert.Empty(await worker.DrainAsync());
        Assert.Equal("draining", await LeaseAsync(actioner, "w1"));

        await actioner.RequestAsync<OkReply>(rid => new WorkerCommand(rid, "w1", WorkerAction.Undrain));
        Assert.Equal(id, (await worker.ReceiveAsync<AssignTask>()).TaskId);

        await actioner.RequestAsync<OkReply>(rid => new WorkerCommand(rid, "w1", WorkerAction.Stop));
        Assert.True((await worker.ReceiveAsync<DrainNotice>()).Stop);
    }

    private static async Task<string> LeaseAsync(PipeClient actioner, string workerId) =>
        (await actioner.RequestAsync<WorkerList>(rid => new ListWorkers(rid))).Workers.Single(w => w.WorkerId == workerId).State;
}
