using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>What happens to each kind of task when its worker is declared dead (SPEC §4, issue 4 scope 2).</summary>
public class DeadWorkerPolicyTests
{
    private static readonly DateTimeOffset Death = T0 + CoordinatorOptions.Default.Grace;

    /// <summary>Disconnects w1 at T0 and ticks to the end of its grace period.</summary>
    private static void KillWorker(Harness h, string worker = "w1")
    {
        h.Disconnect(worker);
        h.Now = Death;
        h.State.Tick(Death);
        Assert.False(h.State.Workers.ContainsKey(worker));
    }

    [Fact]
    public void DeadWorker_SubmitTask_BackToReadyWithoutAttempt()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Submitted("w1");

        KillWorker(h);

        Assert.Equal((TaskState.Ready, (string?)null, 0), (h[id].State, h[id].WorkerId, h[id].Attempts));
        Assert.Contains("never started", h[id].Reason, StringComparison.Ordinal);
        Assert.Equal(1, h.State.ReadyCount);
    }

    [Fact]
    public void DeadWorker_RunAtMostOnce_PausedWithReasonAndAttempt()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1", DeliveryPolicy.AtMostOnce);

        KillWorker(h);

        var task = h[id];
        Assert.Equal((TaskState.Pause, (string?)null, 1), (task.State, task.WorkerId, task.Attempts));
        Assert.Contains("at-most-once", task.Reason, StringComparison.Ordinal);
        Assert.Contains("worker w1 declared dead", task.Reason, StringComparison.Ordinal);
        Assert.Equal(new Transition(TaskState.Pause, Death, task.Reason), task.History[^1]);
    }

    [Fact]
    public void DeadWorker_RunWithCoordinatorDefaultPolicy_UsesTheDefault()
    {
        var h = new Harness(CoordinatorOptions.Default with { DefaultPolicy = DeliveryPolicy.AtLeastOnce });
        h.Register("w1");
        var id = h.Running("w1", policy: null);

        KillWorker(h);

        Assert.Equal((TaskState.Ready, 1), (h[id].State, h[id].Attempts));
    }

    [Fact]
    public void DeadWorker_RunAtLeastOnce_RequeuedWithAttemptAndRunsAgainElsewhere()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1", DeliveryPolicy.AtLeastOnce);

        KillWorker(h);

        Assert.Equal((TaskState.Ready, (string?)null, 1), (h[id].State, h[id].WorkerId, h[id].Attempts));
        Assert.Contains("at-least-once", h[id].Reason, StringComparison.Ordinal);
        h.Register("w2");
        Assert.Equal([("w2", id)], h.Assign());
        Assert.Equal(1, h[id].Attempts);
    }

    [Fact]
    public void DeadWorker_PendingKill_TerminatedMinusOne()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Kill);
        Assert.Empty(h.Outbox());

        h.Now = Death;
        h.State.Tick(Death);

        Assert.Equal((TaskState.Terminated, (int?)ExitCodes.Killed, PendingControl.None), (h[id].State, h[id].ExitCode, h[id].PendingControl));
    }

    [Fact]
    public void DeadWorker_PendingPause_Paused()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Pause);

        h.Now = Death;
        h.State.Tick(Death);

        Assert.Equal((TaskState.Pause, (string?)null, PendingControl.None), (h[id].State, h[id].WorkerId, h[id].PendingControl));
    }

    [Fact]
    public void DeadWorker_SubmitWithPendingPause_Paused()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Submitted("w1");
        h.Control(id, ControlVerb.Pause);

        KillWorker(h);

        Assert.Equal((TaskState.Pause, (string?)null), (h[id].State, h[id].WorkerId));
        Assert.Equal(0, h.State.ReadyCount);
    }

    [Fact]
    public void DeadWorker_PausedOnWorker_StaysPausedAndPlayRequeuesIt()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.Control(id, ControlVerb.Pause);
        h.Report("w1", id, WorkerReport.Paused);

        KillWorker(h);

        Assert.Equal((TaskState.Pause, (string?)null, 0), (h[id].State, h[id].WorkerId, h[id].Attempts));
        h.Control(id, ControlVerb.Play);
        Assert.Equal(TaskState.Ready, h[id].State);
    }

    [Fact]
    public void DeadWorker_PausedOnWorkerWithPlayPending_Requeued()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.Control(id, ControlVerb.Pause);
        h.Report("w1", id, WorkerReport.Paused);
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Play);

        h.Now = Death;
        h.State.Tick(Death);

        Assert.Equal((TaskState.Ready, (string?)null), (h[id].State, h[id].WorkerId));
    }

    [Fact]
    public void DeadWorker_ManyTasks_EachFollowsItsOwnRuleAndTagCountsDrop()
    {
        var h = new Harness();
        h.State.SetTagLimit("t", 10);
        h.Register("w1", slots: 10);
        var submit = h.Add(tags: ["t"]);
        var most = h.Add(tags: ["t"], policy: DeliveryPolicy.AtMostOnce);
        var least = h.Add(tags: ["t"], policy: DeliveryPolicy.AtLeastOnce);
        Assert.Equal(3, h.Assign().Count);
        h.Report("w1", most, WorkerReport.Accepted);
        h.Report("w1", least, WorkerReport.Accepted);
        Assert.Equal(3, h.State.TagRunning("t"));

        KillWorker(h);

        Assert.Equal(
            [TaskState.Ready, TaskState.Pause, TaskState.Ready],
            new[] { submit, most, least }.Select(id => h[id].State));
        Assert.Equal(0, h.State.TagRunning("t"));
        Assert.Equal(3, h.State.TakeBatch().Upserts.Count);
    }
}
