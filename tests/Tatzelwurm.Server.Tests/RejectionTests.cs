using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;
using TaskState = Tatzelwurm.Core.TaskState;

namespace Tatzelwurm.Server.Tests;

/// <summary>Issue 5 §2: a rejected task goes to another worker, or waits for one that accepts.</summary>
public class RejectionTests
{
    [Fact]
    public async Task Rejection_ByOneWorker_RunsOnAnother()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        // Equal load: the assigner breaks ties by worker id, so "w-a" is offered the task first.
        var a = await coordinator.ConnectWorkerAsync("w-a");
        var b = await coordinator.ConnectWorkerAsync("w-b");
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync();
        Assert.Equal(id, (await a.ReceiveAsync<AssignTask>()).TaskId);

        await a.ReportAsync(id, TaskUpdateKind.Rejected);

        var offered = await b.ReceiveAsync<AssignTask>();
        Assert.Equal((id, 1), (offered.TaskId, offered.Attempt));
        await b.ReportAsync(id, TaskUpdateKind.Accepted);
        Assert.Empty(await a.DrainAsync());
        var task = await coordinator.TaskAsync(id);
        Assert.Equal((TaskState.Run, "w-b"), (task.State, task.WorkerId));
        Assert.Contains(task.History, h => h.State == TaskState.Ready && h.Reason == "rejected by w-a");
    }

    [Fact]
    public async Task Rejection_ByTheOnlyWorker_WaitsAndRunsWhenAnAcceptingWorkerJoins()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var a = await coordinator.ConnectWorkerAsync("w-a", slots: 2);
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync();
        Assert.Equal(id, (await a.ReceiveAsync<AssignTask>()).TaskId);

        await a.ReportAsync(id, TaskUpdateKind.Rejected);

        // Not handed straight back, not even by the periodic safety pass or when a slot of "w-a" frees.
        var other = await actioner.AddAsync(Specs.New("t"));
        Assert.Equal(other, (await a.ReceiveAsync<AssignTask>()).TaskId);
        await a.ReportAsync(other, TaskUpdateKind.Accepted);
        await a.ReportAsync(other, TaskUpdateKind.Finished);
        coordinator.Time.Advance(TimeSpan.FromSeconds(6));
        Assert.Empty(await a.DrainAsync());
        var waiting = await coordinator.TaskAsync(id);
        Assert.Equal((TaskState.Ready, (string?)null), (waiting.State, waiting.WorkerId));

        var b = await coordinator.ConnectWorkerAsync("w-b");

        Assert.Equal(id, (await b.ReceiveAsync<AssignTask>()).TaskId);
        await b.ReportAsync(id, TaskUpdateKind.Accepted);
        await b.ReportAsync(id, TaskUpdateKind.Finished, 0, [1]);
        Assert.Equal(0, (await actioner.RequestAsync<TaskOutcome>(rid => new WaitTask(rid, id))).ExitCode);
    }

    [Fact]
    public async Task Rejection_ByTheOnlyWorker_OfferedAgainWhenItRegistersAnew()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var a = await coordinator.ConnectWorkerAsync("w-a");
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync();
        await a.ReceiveAsync<AssignTask>();
        await a.ReportAsync(id, TaskUpdateKind.Rejected);
        Assert.Empty(await a.DrainAsync());

        // A worker that registers again (e.g. with new types or slots) may have become able to take it.
        await a.RequestAsync<WorkerRegistered>(rid => new RegisterWorker(rid, "w-a", "w-a", [], 2, []));

        Assert.Equal(id, (await a.ReceiveAsync<AssignTask>()).TaskId);
    }

    [Fact]
    public async Task Rejection_OfATaskNotOfferedToThatWorker_IllegalTransition()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var a = await coordinator.ConnectWorkerAsync("w-a");
        var b = await coordinator.ConnectWorkerAsync("w-b", slots: 0);
        var actioner = await coordinator.ConnectAsync();
        var id = await actioner.AddAsync();
        await a.ReceiveAsync<AssignTask>();

        await b.RequestErrorAsync(rid => new TaskUpdate(rid, id, TaskUpdateKind.Rejected, 0, null, null), ErrorCode.IllegalTransition);

        var task = await coordinator.TaskAsync(id);
        Assert.Equal((TaskState.Submit, "w-a"), (task.State, task.WorkerId));
    }
}
