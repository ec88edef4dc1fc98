using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>A worker returning with the tasks it still runs (SPEC §4, issue 4 scope 3), after a blip or a coordinator restart.</summary>
public class ReclaimTests
{
    [Fact]
    public void Reclaim_WithinGrace_TasksUnchangedAndNoSecondAssignment()
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        h.Register("w2", slots: 2);
        var run = h.Running("w1");
        h.Now = T0 + TimeSpan.FromSeconds(1);
        h.Disconnect("w1");
        var before = h[run];
        h.Heartbeat("w2");

        h.Now = T0 + TimeSpan.FromSeconds(1) + h.Options.Grace - OneTick;
        h.Heartbeat("w2");
        var drop = h.Register("w1", slots: 2, held: [(run, false)]);

        Assert.Empty(drop);
        Assert.Equal((before.State, before.WorkerId, before.Attempts, before.History), (h[run].State, h[run].WorkerId, h[run].Attempts, h[run].History));
        Assert.Equal(WorkerLease.Connected, h.State.Workers["w1"].Lease);
        Assert.Empty(h.Assign());
        h.State.Tick(h.Now + OneTick);
        Assert.Equal((TaskState.Run, "w1"), (h[run].State, h[run].WorkerId));
    }

    [Fact]
    public void Reclaim_SubmitTaskTheWorkerRuns_BecomesRunOnTheSameWorker()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Submitted("w1");
        h.Disconnect("w1");

        Assert.Empty(h.Register("w1", held: [(id, false)]));

        Assert.Equal((TaskState.Run, "w1"), (h[id].State, h[id].WorkerId));
        Assert.Empty(h.Assign());
    }

    [Fact]
    public void Reclaim_WorkerReportsPauseStateChangedWhileAway_ItsReportIsTheTruth()
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        var nowPaused = h.Running("w1");
        var nowRunning = h.Running("w1");
        h.Control(nowRunning, ControlVerb.Pause);
        h.Report("w1", nowRunning, WorkerReport.Paused);
        h.Disconnect("w1");

        h.Register("w1", slots: 2, held: [(nowPaused, true), (nowRunning, false)]);

        Assert.Equal((TaskState.Pause, "w1"), (h[nowPaused].State, h[nowPaused].WorkerId));
        Assert.Equal((TaskState.Run, "w1"), (h[nowRunning].State, h[nowRunning].WorkerId));
    }

    [Fact]
    public void Reclaim_TasksMissingFromHeldList_FollowTheLostRules()
    {
        var h = new Harness();
        h.Register("w1", slots: 5);
        var kept = h.Running("w1", DeliveryPolicy.AtMostOnce);
        var lostMost = h.Running("w1", DeliveryPolicy.AtMostOnce);
        var lostLeast = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        var lostSubmit = h.Submitted("w1");
        h.Disconnect("w1");

        var drop = h.Register("w1", slots: 5, held: [(kept, false)]);

        Assert.Empty(drop);
        Assert.Equal((TaskState.Run, "w1", 0), (h[kept].State, h[kept].WorkerId, h[kept].Attempts));
        Assert.Equal((TaskState.Pause, (string?)null, 1), (h[lostMost].State, h[lostMost].WorkerId, h[lostMost].Attempts));
        Assert.Equal((TaskState.Ready, (string?)null, 1), (h[lostLeast].State, h[lostLeast].WorkerId, h[lostLeast].Attempts));
        Assert.Equal((TaskState.Ready, (string?)null, 0), (h[lostSubmit].State, h[lostSubmit].WorkerId, h[lostSubmit].Attempts));
        Assert.Contains("came back without it", h[lostMost].Reason, StringComparison.Ordinal);
        Assert.Equal([kept], h.State.Workers["w1"].Tasks);
    }

    [Fact]
    public void Reclaim_AfterGrace_HeldTasksDroppedAndNotGivenBack()
    {
        var h = new Harness();
        h.Register("w1", slots: 3);
        var most = h.Running("w1", DeliveryPolicy.AtMostOnce);
        var least = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        h.Disconnect("w1");
        h.Now = T0 + h.Options.Grace;
        h.State.Tick(h.Now);
        Assert.False(h.State.Workers.ContainsKey("w1"));
        var afterPolicy = (h[most], h[least]);

        h.Now += TimeSpan.FromSeconds(1);
        var drop = h.Register("w1", slots: 3, held: [(most, false), (least, false)]);

        Assert.Equal([most, least], drop);
        Assert.Same(afterPolicy.Item1, h[most]);
        Assert.Same(afterPolicy.Item2, h[least]);
        Assert.Empty(h.State.Workers["w1"].Tasks);
        Assert.Equal((TaskState.Pause, (string?)null), (h[most].State, h[most].WorkerId));
        Assert.Equal((TaskState.Ready, (string?)null, 1), (h[least].State, h[least].WorkerId, h[least].Attempts));
        Assert.DoesNotContain(h.Outbox(), m => m.Task?.Id == most || m.Task?.Id == least);
        Assert.DoesNotContain(h.Assign(), a => a.Task == most);
    }

    [Fact]
    public void Reclaim_AfterGraceAtLeastOnceTaskDropped_RunsAgainOnlyAsANewAttempt()
    {
        // The late reclaim is refused (drop); the requeued task is then ordinary ready work, and the
        // assigner may hand it to any worker, this one included, as a fresh attempt.
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        h.Disconnect("w1");
        h.Now = T0 + h.Options.Grace;
        h.State.Tick(h.Now);

        Assert.Equal([id], h.Register("w1", held: [(id, false)]));
        Assert.Equal((TaskState.Ready, (string?)null), (h[id].State, h[id].WorkerId));

        Assert.Equal([("w1", id)], h.Assign());
        Assert.Equal((TaskState.Submit, 1), (h[id].State, h[id].Attempts));
    }

    [Fact]
    public void Reclaim_HeldTaskNowOnAnotherWorker_DroppedAndLeftThere()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        h.Disconnect("w1");
        h.Now = T0 + h.Options.Grace;
        h.State.Tick(h.Now);
        h.Register("w2");
        Assert.Equal([("w2", id)], h.Assign());
        h.Report("w2", id, WorkerReport.Accepted);

        var drop = h.Register("w1", held: [(id, false)]);

        Assert.Equal([id], drop);
        Assert.Equal((TaskState.Run, "w2"), (h[id].State, h[id].WorkerId));
        Assert.Empty(h.State.Workers["w1"].Tasks);
    }

    [Fact]
    public void Reclaim_UnknownOrFinishedTasks_Dropped()
    {
        var h = new Harness();
        h.Register("w1");
        var done = h.Running("w1");
        h.Report("w1", done, WorkerReport.Finished);

        var drop = h.Register("w1", held: [(done, false), (999, false)]);

        Assert.Equal([done, 999], drop);
        Assert.Equal(TaskState.Terminated, h[done].State);
    }

    [Fact]
    public void Reclaim_NewConnectionReplacesOld_OldConnectionClosed()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        var old = h.Connections["w1"];

        h.Register("w1", held: [(id, false)]);

        var close = Assert.Single(h.Outbox());
        Assert.Equal((WorkerMessageKind.Close, (object)old), (close.Kind, close.Connection));
    }

    [Fact]
    public void Reclaim_KillRequestedWhileDisconnected_SentOnceWhenItReclaims()
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        var id = h.Running("w1");
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Kill);
        Assert.Empty(h.Outbox());

        h.Register("w1", slots: 2, held: [(id, false)]);

        var kill = Assert.Single(h.Outbox());
        Assert.Equal((WorkerMessageKind.Kill, id, (object)h.Connections["w1"]), (kill.Kind, kill.Task!.Id, kill.Connection));
        Assert.Equal((TaskState.Run, PendingControl.Kill), (h[id].State, h[id].PendingControl));
    }

    [Fact]
    public void Reclaim_KillRequestedOnSubmitTaskWhileDisconnected_SentExactlyOnce()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Submitted("w1");
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Kill);

        h.Register("w1", held: [(id, false)]);

        var kill = Assert.Single(h.Outbox());
        Assert.Equal((WorkerMessageKind.Kill, id), (kill.Kind, kill.Task!.Id));
    }

    [Fact]
    public void Reclaim_PauseRequestedWhileDisconnected_SentWhenItReclaimsAndConfirmed()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Pause);
        Assert.Empty(h.Outbox());

        h.Register("w1", held: [(id, false)]);

        var pause = Assert.Single(h.Outbox());
        Assert.Equal((WorkerMessageKind.Pause, id), (pause.Kind, pause.Task!.Id));
        h.Report("w1", id, WorkerReport.Paused);
        Assert.Equal((TaskState.Pause, "w1", PendingControl.None), (h[id].State, h[id].WorkerId, h[id].PendingControl));
    }

    [Fact]
    public void Reclaim_PauseRequestedOnSubmitTaskWhileDisconnected_SentExactlyOnce()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Submitted("w1");
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Pause);

        h.Register("w1", held: [(id, false)]);

        var pause = Assert.Single(h.Outbox());
        Assert.Equal((WorkerMessageKind.Pause, id), (pause.Kind, pause.Task!.Id));
    }

    [Fact]
    public void Reclaim_PlayRequestedWhileDisconnected_SentWhenItReclaims()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.Control(id, ControlVerb.Pause);
        h.Report("w1", id, WorkerReport.Paused);
        h.Outbox();
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Play);
        Assert.Empty(h.Outbox());

        h.Register("w1", held: [(id, true)]);

        var play = Assert.Single(h.Outbox());
        Assert.Equal((WorkerMessageKind.Play, id), (play.Kind, play.Task!.Id));
    }

    [Fact]
    public void Control_WorkerLeaseLapsedButConnectionOpen_PauseStillSentOnThatConnection()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.Now = T0 + h.Options.Lease;
        h.State.Tick(h.Now);
        Assert.Equal(WorkerLease.Suspect, h.State.Workers["w1"].Lease);

        h.Control(id, ControlVerb.Pause);
        h.Heartbeat("w1");

        var pause = Assert.Single(h.Outbox());
        Assert.Equal((WorkerMessageKind.Pause, id, (object)h.Connections["w1"]), (pause.Kind, pause.Task!.Id, pause.Connection));
    }

    // ---- after a coordinator restart ------------------------------------------------------------

    private static (StoreSnapshot Snapshot, long Submit, long Most, long Least, long Killing) RunAndSnapshot()
    {
        var h = new Harness();
        h.State.SetTagLimit("g", 7);
        h.Register("w1", slots: 10, types: ["t"]);
        var submit = h.Submitted("w1");
        var most = h.Running("w1", DeliveryPolicy.AtMostOnce);
        var least = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        var killing = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        h.Control(killing, ControlVerb.Kill);
        var waiting = h.Add(type: "nobody-takes-this");
        var done = h.Running("w1");
        h.Report("w1", done, WorkerReport.Finished);
        var batch = h.State.TakeBatch();
        Assert.Contains(batch.Upserts, u => u.Task.Id == waiting);
        return (new StoreSnapshot([.. batch.Upserts.Select(u => u.Task)], h.State.TagLimits.ToDictionary(), batch.LastTaskId), submit, most, least, killing);
    }

    [Fact]
    public void Load_TasksOnWorkers_KeptWithWorkerSuspectFromLoadTime()
    {
        var (snapshot, submit, most, least, killing) = RunAndSnapshot();
        var restart = T0 + TimeSpan.FromHours(1);
        var h = new Harness { Now = restart };

        h.State.Load(snapshot, restart);

        var worker = h.State.Workers["w1"];
        Assert.Equal((WorkerLease.Suspect, restart, false), (worker.Lease, worker.SuspectSince, worker.Registered));
        Assert.Equal([submit, most, least, killing], worker.Tasks.Order());
        Assert.Equal(TaskState.Submit, h[submit].State);
        Assert.Equal(1, h.State.Count(TaskState.Terminated));
        Assert.Equal(1, h.State.ReadyCount);
        Assert.Equal(7, h.State.TagLimits["g"]);
        Assert.True(h.State.TakeBatch().IsEmpty);
        Assert.Empty(h.State.TakeChanges());
        Assert.Equal(restart + h.Options.Grace, h.State.NextDeadline());

        // Ids are never reused.
        Assert.Equal(snapshot.LastTaskId + 1, h.Add());
    }

    [Fact]
    public void Load_WorkerNeverReturns_OneTickBeforeGraceNothingThenPolicyApplies()
    {
        var (snapshot, submit, most, least, killing) = RunAndSnapshot();
        var restart = T0 + TimeSpan.FromHours(1);
        var h = new Harness { Now = restart };
        h.State.Load(snapshot, restart);

        h.State.Tick(restart + h.Options.Grace - OneTick);
        Assert.Equal([TaskState.Submit, TaskState.Run, TaskState.Run, TaskState.Run], new[] { submit, most, least, killing }.Select(id => h[id].State));

        h.State.Tick(restart + h.Options.Grace);

        Assert.False(h.State.Workers.ContainsKey("w1"));
        Assert.Equal(TaskState.Ready, h[submit].State);
        Assert.Equal((TaskState.Pause, 1), (h[most].State, h[most].Attempts));
        Assert.Equal((TaskState.Ready, 1), (h[least].State, h[least].Attempts));
        Assert.Equal((TaskState.Terminated, (int?)ExitCodes.Killed), (h[killing].State, h[killing].ExitCode));
    }

    [Fact]
    public void Load_WorkerReturnsWithinGrace_ReclaimsWithoutAnyChangeAndGetsPendingKill()
    {
        var (snapshot, submit, most, least, killing) = RunAndSnapshot();
        var restart = T0 + TimeSpan.FromHours(1);
        var h = new Harness { Now = restart + CoordinatorOptions.Default.Grace - OneTick };
        h.State.Load(snapshot, restart);
        var before = new[] { most, least, killing }.ToDictionary(id => id, id => h[id]);

        var drop = h.Register("w1", slots: 10, types: ["t"], held: [(submit, false), (most, false), (least, false), (killing, false)]);

        Assert.Empty(drop);
        foreach (var (id, task) in before)
        {
            Assert.Equal((task.State, task.WorkerId, task.Attempts), (h[id].State, h[id].WorkerId, h[id].Attempts));
        }

        Assert.Equal((TaskState.Run, "w1"), (h[submit].State, h[submit].WorkerId));
        Assert.True(h.State.Workers["w1"].Registered);
        var kill = Assert.Single(h.Outbox());
        Assert.Equal((WorkerMessageKind.Kill, killing), (kill.Kind, kill.Task!.Id));
        Assert.Empty(h.Assign());

        h.State.Tick(restart + h.Options.Grace + TimeSpan.FromSeconds(1));
        Assert.Equal(TaskState.Run, h[most].State);
    }

    [Fact]
    public void Load_UnregisteredWorkerFromSnapshot_GetsNoAssignments()
    {
        var (snapshot, _, _, _, _) = RunAndSnapshot();
        var h = new Harness();
        h.State.Load(snapshot, T0);
        h.Add();

        Assert.Empty(h.Assign());
    }
}
