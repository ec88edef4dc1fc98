using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;
using TaskState = Tatzelwurm.Core.TaskState;

namespace Tatzelwurm.Server.Tests;

/// <summary>Issue 5 §1: results as futures, layered results, no-reply tasks, error results.</summary>
public class ResultTests
{
    [Fact]
    public async Task Wait_BeforeTermination_OutcomeArrivesWhenTheWorkerFinishes()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await StartOnWorkerAsync(actioner, worker);

        var wait = actioner.NextId();
        await actioner.SendAsync(new WaitTask(wait, id));
        Assert.Empty(await actioner.DrainAsync());
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, [9, 8, 7]);

        var outcome = await actioner.ReceiveAsync<TaskOutcome>();
        Assert.Equal(new TaskOutcome(wait, id, 0, null, null, 0) with { Result = outcome.Result }, outcome);
        Assert.Equal([9, 8, 7], outcome.Result);
    }

    [Fact]
    public async Task Wait_AfterTermination_OutcomeAtOnce()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await StartOnWorkerAsync(actioner, worker);
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, [1]);

        var outcome = await actioner.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, id));

        Assert.Equal((id, 0, 0), (outcome.TaskId, outcome.ExitCode, outcome.Layers));
        Assert.Equal([1], outcome.Result);
        Assert.Null(outcome.Error);
    }

    [Fact]
    public async Task Wait_FromASecondClientAndAReconnectedOne_EveryWaiterGetsTheOutcome()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var submitter = await coordinator.ConnectAsync();
        var other = await coordinator.ConnectAsync();
        var id = await StartOnWorkerAsync(submitter, worker);

        var mine = submitter.NextId();
        await submitter.SendAsync(new WaitTask(mine, id));
        var theirs = other.NextId();
        await other.SendAsync(new WaitTask(theirs, id));
        Assert.Empty(await other.DrainAsync());
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, [5]);

        Assert.Equal((mine, id, (byte)5), Summary(await submitter.ReceiveAsync<TaskOutcome>()));
        Assert.Equal((theirs, id, (byte)5), Summary(await other.ReceiveAsync<TaskOutcome>()));

        // The submitter reconnects later and asks again: the stored result is still there.
        await submitter.CompleteAsync();
        await submitter.ExpectClosedAsync();
        var again = await coordinator.ConnectAsync();
        Assert.Equal([5], (await again.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, id))).Result);

        static (uint, long, byte) Summary(TaskOutcome o) => (o.RequestId, o.TaskId, o.Result!.Single());
    }

    [Fact]
    public async Task Wait_WaiterDisconnectsBeforeTheEnd_OthersStillServed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var leaver = await coordinator.ConnectAsync();
        var id = await StartOnWorkerAsync(actioner, worker);
        await leaver.SendAsync(new WaitTask(1, id));
        await leaver.CompleteAsync();
        await leaver.ExpectClosedAsync();

        var wait = actioner.NextId();
        await actioner.SendAsync(new WaitTask(wait, id));
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, null);

        Assert.Equal(wait, (await actioner.ReceiveAsync<TaskOutcome>()).RequestId);
    }

    [Fact]
    public async Task Wait_LayeredResult_WaiterSeesEachLayerThenOutcomeWithTheDepth()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync();
        await worker.ReceiveAsync<AssignTask>();
        var wait = actioner.NextId();
        await actioner.SendAsync(new WaitTask(wait, id));

        // "Accepted, result to follow" twice (the first also moves submit → run), then the value.
        await worker.ReportAsync(id, TaskUpdateKind.Pending);
        Assert.Equal(new TaskLayer(wait, id, 1), await actioner.ReceiveAsync<TaskLayer>());
        Assert.Equal(TaskState.Run, (await coordinator.TaskAsync(id)).State);
        await worker.ReportAsync(id, TaskUpdateKind.Pending);
        Assert.Equal(new TaskLayer(wait, id, 2), await actioner.ReceiveAsync<TaskLayer>());
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, [42]);

        var outcome = await actioner.ReceiveAsync<TaskOutcome>();
        Assert.Equal((wait, 0, 2), (outcome.RequestId, outcome.ExitCode, outcome.Layers));
        Assert.Equal([42], outcome.Result);
    }

    [Fact]
    public async Task Wait_LateWaiterOnALayeredRunningTask_SeesTheLayersSoFar()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await StartOnWorkerAsync(actioner, worker);
        await worker.ReportAsync(id, TaskUpdateKind.Pending);
        await worker.ReportAsync(id, TaskUpdateKind.Pending);

        var late = await coordinator.ConnectAsync();
        var wait = late.NextId();
        await late.SendAsync(new WaitTask(wait, id));

        Assert.Equal(new TaskLayer(wait, id, 1), await late.ReceiveAsync<TaskLayer>());
        Assert.Equal(new TaskLayer(wait, id, 2), await late.ReceiveAsync<TaskLayer>());
        Assert.Empty(await late.DrainAsync());
        await worker.ReportAsync(id, TaskUpdateKind.Pending);
        Assert.Equal(new TaskLayer(wait, id, 3), await late.ReceiveAsync<TaskLayer>());
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, [1]);
        Assert.Equal(3, (await late.ReceiveAsync<TaskOutcome>()).Layers);

        // After the end a waiter gets the outcome alone, with the depth it had.
        var outcome = await late.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, id));
        Assert.Equal(3, outcome.Layers);
    }

    [Fact]
    public async Task Finished_ShowAndListReportThePayloadSize_TheTableNoLongerHoldsTheBytes()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await StartOnWorkerAsync(actioner, worker, Specs.New(payload: new byte[321]));
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, [1]);
        await actioner.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, id));

        var shown = (await actioner.RequestAsync<TaskDetail>(rid => new ShowTask(rid, id))).Task;
        var listed = Assert.Single((await actioner.RequestAsync<TaskList>(rid => new ListTasks(rid, (int)TaskState.Terminated, null, null, null, 0, 10))).Tasks);

        Assert.Equal(((int)TaskState.Terminated, 321), (shown.State, shown.PayloadSize));
        Assert.Equal((id, 321), (listed.Id, listed.PayloadSize));
        Assert.True((await coordinator.TaskAsync(id)).Payload.IsEmpty);
        Assert.Equal(321, coordinator.Store.Snapshot().Tasks.Single(t => t.Id == id).Payload.Length);
    }

    [Fact]
    public async Task NoReplyTask_FinishedWithAResult_StoresNoResult()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync(Specs.New(noReply: true));
        Assert.True((await worker.ReceiveAsync<AssignTask>()).NoReply);
        await worker.ReportAsync(id, TaskUpdateKind.Accepted);
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 0, [1, 2, 3]);

        var outcome = await actioner.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, id));
        var info = (await actioner.RequestAsync<TaskDetail>(rid => new ShowTask(rid, id))).Task;

        Assert.Equal((0, (byte[]?)null, (string?)null), (outcome.ExitCode, outcome.Result, outcome.Error));
        Assert.False(info.HasResult);
        Assert.True(info.NoReply);
        Assert.Null(coordinator.Store.Snapshot().Tasks.Single(t => t.Id == id).Result);
    }

    [Fact]
    public async Task NoReplyTask_FailedWithErrorText_StoresNoErrorButKeepsTheExitCode()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync(Specs.New(noReply: true));
        await worker.ReceiveAsync<AssignTask>();
        await worker.ReportAsync(id, TaskUpdateKind.Accepted);
        await worker.ReportAsync(id, TaskUpdateKind.Finished, 3, null, "a long traceback nobody asked for");

        var outcome = await actioner.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, id));

        // docs/protocol.md: a task added with no_reply stores no result (result and error are nil).
        Assert.Equal((3, (byte[]?)null, (string?)null), (outcome.ExitCode, outcome.Result, outcome.Error));
        Assert.False((await actioner.RequestAsync<TaskDetail>(rid => new ShowTask(rid, id))).Task.HasResult);
        var stored = coordinator.Store.Snapshot().Tasks.Single(t => t.Id == id);
        Assert.Equal((3, (string?)null), (stored.ExitCode, stored.Error));
    }

    [Fact]
    public async Task ErrorResult_ExitCodeAndErrorText_DeliveredAndStored()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1");
        var actioner = await coordinator.ConnectAsync();
        var id = await StartOnWorkerAsync(actioner, worker);
        var wait = actioner.NextId();
        await actioner.SendAsync(new WaitTask(wait, id));

        await worker.ReportAsync(id, TaskUpdateKind.Finished, 3, null, "ValueError: boom");

        Assert.Equal(new TaskOutcome(wait, id, 3, null, "ValueError: boom", 0), await actioner.ReceiveAsync<TaskOutcome>());
        var info = (await actioner.RequestAsync<TaskDetail>(rid => new ShowTask(rid, id))).Task;
        Assert.Equal(((int)TaskState.Terminated, (int?)3, true), (info.State, info.ExitCode, info.HasResult));
    }

    [Fact]
    public async Task Wait_TaskKilledBeforeItRan_OutcomeIsMinusOne()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync();
        var wait = actioner.NextId();
        await actioner.SendAsync(new WaitTask(wait, id));

        var control = await actioner.RequestAsync<ControlResult>(rid => new ControlTasks(rid, TaskAction.Kill, [id], false));

        Assert.Equal([id], control.Applied);
        Assert.Equal(new TaskOutcome(wait, id, -1, null, null, 0), await actioner.ReceiveAsync<TaskOutcome>());
    }

    [Fact]
    public async Task Wait_UnknownTaskId_UnknownTask()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var actioner = await coordinator.ConnectAsync();
        await actioner.AddAsync();

        await actioner.RequestErrorAsync(rid => new WaitTask(rid, 2), ErrorCode.UnknownTask);
        await actioner.RequestErrorAsync(rid => new WaitTask(rid, 0), ErrorCode.UnknownTask);
        await actioner.RequestErrorAsync(rid => new WaitTask(rid, -5), ErrorCode.UnknownTask);
    }

    /// <summary>Adds a ready task, lets the (only) worker receive and accept it; returns its id.</summary>
    internal static async Task<long> StartOnWorkerAsync(PipeClient actioner, PipeClient worker, TaskSpec? spec = null)
    {
        var id = await actioner.AddAsync(spec);
        Assert.Equal(id, (await worker.ReceiveAsync<AssignTask>()).TaskId);
        await worker.ReportAsync(id, TaskUpdateKind.Accepted);
        return id;
    }
}
