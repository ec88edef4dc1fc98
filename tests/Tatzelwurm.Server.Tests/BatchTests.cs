using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;
using TaskState = Tatzelwurm.Core.TaskState;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// The batched worker path (docs/protocol.md, AssignTasks and TaskUpdates): assignments of one flush
/// in one frame for workers that opted in, several reports in one request with one durable reply.
/// </summary>
public class BatchTests
{
    [Fact]
    public async Task AssignTasks_OptedInWorker_OneFlushArrivesAsOneFrameInOrder()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await ConnectBatchingWorkerAsync(coordinator, "w1", slots: 3);
        var actioner = await coordinator.ConnectAsync();

        var ids = await actioner.AddManyAsync(3);

        var batch = await worker.ReceiveAsync<AssignTasks>();
        Assert.Equal(ids, batch.Tasks.Select(t => t.TaskId));
        Assert.All(batch.Tasks, t => Assert.Equal(("t", 1), (t.Type, t.Attempt)));
        Assert.All(batch.Tasks, t => Assert.Equal([1, 2, 3], t.Payload));
        Assert.Empty(await worker.DrainAsync());
    }

    [Fact]
    public async Task AssignTasks_WorkerThatDidNotOptIn_GetsOneAssignTaskPerTask()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1", slots: 3);
        var actioner = await coordinator.ConnectAsync();

        var ids = await actioner.AddManyAsync(3);

        var frames = new List<IMessage>();
        while (frames.Count < 3)
        {
            frames.Add(await worker.ReceiveAsync());
        }

        Assert.Equal(ids, frames.Select(f => Assert.IsType<AssignTask>(f).TaskId));
        Assert.Empty(await worker.DrainAsync());
    }

    [Fact]
    public async Task RegisterWorker_OldShapeWithoutBatches_AcceptedAndServedSingleFrames()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectAsync(Roles.Worker);
        // RegisterWorker as a client that predates the batched messages writes it: six fields.
        var id = worker.NextId();
        await worker.SendBodyAsync(RawFrames.Body(10, new object[] { id, "old", "old", Array.Empty<object>(), 2, Array.Empty<object>() }));
        var registered = await worker.ReplyAsync<WorkerRegistered>(id);
        Assert.Empty(registered.Drop);
        var actioner = await coordinator.ConnectAsync();

        var ids = await actioner.AddManyAsync(2);

        Assert.Equal(ids[0], (await worker.ReceiveAsync<AssignTask>()).TaskId);
        Assert.Equal(ids[1], (await worker.ReceiveAsync<AssignTask>()).TaskId);
    }

    [Fact]
    public async Task TaskUpdates_SeveralReports_AppliedInOrderAndAnsweredOnceDurable()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await ConnectBatchingWorkerAsync(coordinator, "w1", slots: 2);
        var actioner = await coordinator.ConnectAsync();
        var ids = await actioner.AddManyAsync(2);
        await worker.ReceiveAsync<AssignTasks>();

        var result = await worker.RequestAsync<TaskUpdatesResult>(rid => new TaskUpdates(rid, [
            new TaskReport(ids[0], TaskUpdateKind.Accepted, 0, null, null),
            new TaskReport(ids[1], TaskUpdateKind.Accepted, 0, null, null),
            new TaskReport(ids[0], TaskUpdateKind.Finished, 0, [7], null),
        ]));

        Assert.Empty(result.Failed);
        // Already in the store when the reply came: the reply is released only after the commit.
        var stored = coordinator.Store.Snapshot().Tasks.ToDictionary(t => t.Id);
        Assert.Equal((TaskState.Terminated, 0, TaskState.Run), (stored[ids[0]].State, stored[ids[0]].ExitCode, stored[ids[1]].State));
        Assert.Equal([7], (await actioner.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, ids[0]))).Result);
    }

    [Fact]
    public async Task TaskUpdates_MixedValidAndInvalid_RefusedOnesListedByIndexTheOthersApplied()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await ConnectBatchingWorkerAsync(coordinator, "w1", slots: 2);
        var actioner = await coordinator.ConnectAsync();
        var ids = await actioner.AddManyAsync(2);
        await worker.ReceiveAsync<AssignTasks>();

        var result = await worker.RequestAsync<TaskUpdatesResult>(rid => new TaskUpdates(rid, [
            new TaskReport(ids[0], TaskUpdateKind.Accepted, 0, null, null),
            new TaskReport(ids[0], TaskUpdateKind.Accepted, 0, null, null),
            new TaskReport(999, TaskUpdateKind.Accepted, 0, null, null),
            null!,
            new TaskReport(ids[1], (TaskUpdateKind)42, 0, null, null),
            new TaskReport(ids[0], TaskUpdateKind.Finished, 3, null, "boom"),
            new TaskReport(ids[0], TaskUpdateKind.Paused, 0, null, null),
        ]));

        // A second Accepted is illegal in run; the Finished after the refused items still applies, and a
        // report after that termination is refused again.
        Assert.Equal(
            [(1, ErrorCode.IllegalTransition), (2, ErrorCode.UnknownTask), (3, ErrorCode.InvalidRequest), (4, ErrorCode.InvalidRequest), (6, ErrorCode.IllegalTransition)],
            result.Failed.Select(f => (f.Index, f.Code)));
        var stored = coordinator.Store.Snapshot().Tasks.ToDictionary(t => t.Id);
        Assert.Equal((TaskState.Terminated, 3, TaskState.Submit), (stored[ids[0]].State, stored[ids[0]].ExitCode, stored[ids[1]].State));
    }

    [Fact]
    public async Task TaskUpdates_FromAnActionerOrBeforeRegistering_RefusedWhole()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var actioner = await coordinator.ConnectAsync();
        var unregistered = await coordinator.ConnectAsync(Roles.Worker);
        var id = await actioner.AddAsync();
        TaskReport[] reports = [new(id, TaskUpdateKind.Accepted, 0, null, null)];

        await actioner.RequestErrorAsync(rid => new TaskUpdates(rid, reports), ErrorCode.NotAllowedForRole);
        await unregistered.RequestErrorAsync(rid => new TaskUpdates(rid, reports), ErrorCode.InvalidRequest);
        await unregistered.RequestErrorAsync(rid => new TaskUpdates(rid, null!), ErrorCode.InvalidRequest);

        Assert.Equal(TaskState.Ready, (await coordinator.TaskAsync(id)).State);
    }

    [Fact]
    public async Task TaskUpdates_StoreFails_ReplyHeldUntilTheRetryCommits_LaterBatchRefusedWhole()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await ConnectBatchingWorkerAsync(coordinator, "w1", slots: 2);
        var actioner = await coordinator.ConnectAsync();
        var ids = await actioner.AddManyAsync(2);
        await worker.ReceiveAsync<AssignTasks>();
        coordinator.Store.FailCommit = _ => true;

        // The batch that runs into the failure is applied in memory but not durable: no answer yet.
        var discovering = worker.NextId();
        await worker.SendAsync(new TaskUpdates(discovering, [
            new TaskReport(ids[0], TaskUpdateKind.Accepted, 0, null, null),
            new TaskReport(ids[0], TaskUpdateKind.Finished, 0, [5], null),
        ]));
        await coordinator.UntilStoreFailingAsync();
        Assert.DoesNotContain(await worker.DrainAsync(), m => m is TaskUpdatesResult);

        // Known failing now: the next batch is refused as a whole and none of it is applied.
        await worker.RequestErrorAsync(rid => new TaskUpdates(rid, [new TaskReport(ids[1], TaskUpdateKind.Accepted, 0, null, null)]), ErrorCode.StoreUnavailable);
        Assert.Equal(TaskState.Submit, (await coordinator.TaskAsync(ids[1])).State);
        Assert.DoesNotContain(coordinator.Store.Snapshot().Tasks, t => t.State != TaskState.Submit);

        coordinator.Store.FailCommit = null;
        await coordinator.QueryAsync(_ => 0);
        coordinator.Time.Advance(TimeSpan.FromSeconds(1));
        Assert.Empty((await worker.ReplyAsync<TaskUpdatesResult>(discovering)).Failed);
        var stored = coordinator.Store.Snapshot().Tasks.ToDictionary(t => t.Id);
        Assert.Equal((TaskState.Terminated, TaskState.Submit), (stored[ids[0]].State, stored[ids[1]].State));
    }

    [Fact]
    public async Task AssignTasks_MoreTasksInOneFlushThanAFrameHolds_SplitIntoFramesOfAtMost1024()
    {
        await using var coordinator = await TestCoordinator.StartAsync(configure: o => o with { MaxFrame = 1 << 20 });
        var worker = await ConnectBatchingWorkerAsync(coordinator, "w1", slots: 1500);
        var actioner = await coordinator.ConnectAsync();

        var ids = await actioner.AddManyAsync(1500);

        var frames = new List<AssignTasks>();
        while (frames.Sum(f => f.Tasks.Count) < ids.Count)
        {
            frames.Add(await worker.ReceiveAsync<AssignTasks>());
        }

        Assert.Equal([1024, 476], frames.Select(f => f.Tasks.Count));
        Assert.Equal(ids, frames.SelectMany(f => f.Tasks).Select(t => t.TaskId));
    }

    [Fact]
    public async Task TaskUpdates_MoreThan4096Reports_RefusedWholeNothingApplied()
    {
        await using var coordinator = await TestCoordinator.StartAsync(configure: o => o with { MaxFrame = 1 << 20 });
        var worker = await ConnectBatchingWorkerAsync(coordinator, "w1", slots: 1);
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync();
        await worker.ReceiveAsync<AssignTasks>();
        var reports = new List<TaskReport> { new(id, TaskUpdateKind.Accepted, 0, null, null) };
        reports.AddRange(Enumerable.Range(0, 4096).Select(i => new TaskReport(100_000 + i, TaskUpdateKind.Accepted, 0, null, null)));

        var refused = await worker.RequestErrorAsync(rid => new TaskUpdates(rid, reports), ErrorCode.InvalidRequest);

        Assert.Contains("4096", refused.Message, StringComparison.Ordinal);
        Assert.Equal(TaskState.Submit, (await coordinator.TaskAsync(id)).State);
        Assert.DoesNotContain((await worker.RequestAsync<TaskUpdatesResult>(rid => new TaskUpdates(rid, reports[..4096]))).Failed, f => f.Index == 0);
        Assert.Equal(TaskState.Run, (await coordinator.TaskAsync(id)).State);
    }

    private static async Task<PipeClient> ConnectBatchingWorkerAsync(TestCoordinator coordinator, string workerId, int slots)
    {
        var client = await coordinator.ConnectAsync(Roles.Worker);
        var registered = await client.RequestAsync<WorkerRegistered>(id => new RegisterWorker(id, workerId, workerId, [], slots, [], Batches: true));
        Assert.True(registered.Batches);
        return client;
    }
}
