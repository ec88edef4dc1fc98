using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>Kill of a running task, and its escalation to abandon when the worker does not confirm in time.</summary>
public class KillEscalationTests
{
    // A long lease so the worker stays connected across the kill timeout without heartbeats.
    private static readonly CoordinatorOptions Options = CoordinatorOptions.Default with { Lease = TimeSpan.FromHours(1) };

    // A grace period longer than the kill timeout, so a kill can be overdue while its worker is away.
    private static readonly CoordinatorOptions LongGrace = Options with { Grace = TimeSpan.FromMinutes(5) };

    private static (Harness H, long Id, DateTimeOffset KilledAt) KilledRunningTask()
    {
        var h = new Harness(Options);
        h.Register("w1");
        var id = h.Running("w1");
        h.Now = T0 + TimeSpan.FromSeconds(5);
        h.Control(id, ControlVerb.Kill);
        return (h, id, h.Now);
    }

    [Fact]
    public void Kill_RunningTask_SendsKillToItsWorker()
    {
        var (h, id, killedAt) = KilledRunningTask();

        var kill = Assert.Single(h.Outbox());

        Assert.Equal((WorkerMessageKind.Kill, id, (object)h.Connections["w1"]), (kill.Kind, kill.Task!.Id, kill.Connection));
        Assert.Equal((TaskState.Run, PendingControl.Kill, (DateTimeOffset?)killedAt), (h[id].State, h[id].PendingControl, h[id].KillRequestedAt));
    }

    [Fact]
    public void Kill_NotConfirmedOneTickBeforeTimeout_NoAbandon()
    {
        var (h, _, killedAt) = KilledRunningTask();
        h.Outbox();

        h.State.Tick(killedAt + Options.KillTimeout - OneTick);

        Assert.Empty(h.Outbox());
    }

    [Fact]
    public void Kill_NotConfirmedByTimeout_AbandonSentExactlyOnce()
    {
        var (h, id, killedAt) = KilledRunningTask();
        h.Outbox();

        h.State.Tick(killedAt + Options.KillTimeout);
        var abandon = Assert.Single(h.Outbox());
        h.State.Tick(killedAt + Options.KillTimeout + TimeSpan.FromSeconds(1));
        h.State.Tick(killedAt + Options.KillTimeout + TimeSpan.FromMinutes(10));

        Assert.Equal((WorkerMessageKind.Abandon, id), (abandon.Kind, abandon.Task!.Id));
        Assert.Empty(h.Outbox());
        Assert.Equal(T0 + Options.Lease, h.State.NextDeadline());
    }

    [Fact]
    public void Kill_AbandonedThenReported_TerminatedMinusOne()
    {
        var (h, id, killedAt) = KilledRunningTask();
        h.State.Tick(killedAt + Options.KillTimeout);
        h.Now = killedAt + Options.KillTimeout;

        h.Report("w1", id, WorkerReport.Finished, ExitCodes.Killed);

        Assert.Equal((TaskState.Terminated, (int?)ExitCodes.Killed, "killed by actioner"), (h[id].State, h[id].ExitCode, h[id].Reason));
        Assert.Empty(h.State.Workers["w1"].Tasks);
    }

    [Fact]
    public void Kill_ConfirmedBeforeTimeout_NoAbandonEver()
    {
        var (h, id, killedAt) = KilledRunningTask();
        h.Outbox();
        h.Now = killedAt + Options.KillTimeout - OneTick;
        h.Report("w1", id, WorkerReport.Finished, ExitCodes.Killed);

        h.State.Tick(killedAt + Options.KillTimeout);
        h.State.Tick(killedAt + Options.KillTimeout + TimeSpan.FromMinutes(10));

        Assert.Empty(h.Outbox());
        Assert.Equal((TaskState.Terminated, (int?)ExitCodes.Killed), (h[id].State, h[id].ExitCode));
    }

    [Fact]
    public void Kill_TaskFinishesNormallyBeforeTimeout_NoAbandonAndExitCodeKept()
    {
        var (h, id, killedAt) = KilledRunningTask();
        h.Outbox();
        h.Report("w1", id, WorkerReport.Finished, exitCode: 0);

        h.State.Tick(killedAt + Options.KillTimeout);

        Assert.Empty(h.Outbox());
        Assert.Equal((int?)0, h[id].ExitCode);
    }

    [Fact]
    public void Kill_SecondKillWhilePending_RefusedAndTimeoutNotReset()
    {
        var (h, id, killedAt) = KilledRunningTask();
        h.Outbox();

        var again = h.State.Control(id, ControlVerb.Kill, killedAt + TimeSpan.FromSeconds(10));

        Assert.Equal(RejectionCode.IllegalTransition, again!.Code);
        Assert.Equal(killedAt, h[id].KillRequestedAt);
        h.State.Tick(killedAt + Options.KillTimeout);
        Assert.Equal(WorkerMessageKind.Abandon, Assert.Single(h.Outbox()).Kind);
    }

    [Fact]
    public void Kill_WorkerPausedReportArrivesAfterKill_KillStillPendingAndEscalates()
    {
        var h = new Harness(Options);
        h.Register("w1");
        var id = h.Running("w1");
        h.Control(id, ControlVerb.Pause);
        h.Control(id, ControlVerb.Kill);
        h.Outbox();

        // The worker handles the earlier pause first and reports it.
        h.Report("w1", id, WorkerReport.Paused);

        Assert.Equal((TaskState.Pause, PendingControl.Kill), (h[id].State, h[id].PendingControl));
        h.State.Tick(T0 + Options.KillTimeout);
        Assert.Equal(WorkerMessageKind.Abandon, Assert.Single(h.Outbox()).Kind);
    }

    [Fact]
    public void Kill_SubmitTaskThenWorkerRejectsIt_TerminatedInsteadOfRunningElsewhere()
    {
        var h = new Harness(Options);
        h.Register("w1");
        h.Register("w2");
        var id = h.Add();
        var (worker, _) = Assert.Single(h.Assign());
        h.Control(id, ControlVerb.Kill);

        h.Report(worker, id, WorkerReport.Rejected);
        h.State.Tick(T0 + Options.KillTimeout);

        Assert.Equal((TaskState.Terminated, (int?)ExitCodes.Killed), (h[id].State, h[id].ExitCode));
        Assert.Empty(h.Assign());
    }

    [Fact]
    public void Kill_OverdueWhileWorkerDisconnected_NoAbandonAndNoPastDeadline()
    {
        var h = new Harness(LongGrace);
        h.Register("w1");
        var id = h.Running("w1");
        h.Control(id, ControlVerb.Kill);
        h.Outbox();
        h.Disconnect("w1");
        var late = T0 + Options.KillTimeout + TimeSpan.FromSeconds(1);

        h.State.Tick(late);

        Assert.Empty(h.Outbox());

        // Nothing can be done before the grace period ends, so the loop must not be woken earlier
        // (a deadline in the past would make the coordinator's timer spin).
        Assert.Equal(T0 + LongGrace.Grace, h.State.NextDeadline());
        Assert.Equal(TaskState.Run, h[id].State);
    }

    [Fact]
    public void Kill_OverdueKillOnReclaim_KillResentWithAFreshEscalationDeadline()
    {
        var h = new Harness(LongGrace);
        h.Register("w1");
        var id = h.Running("w1");
        h.Disconnect("w1");
        h.Control(id, ControlVerb.Kill);
        h.Now = T0 + Options.KillTimeout + TimeSpan.FromSeconds(1);
        h.State.Tick(h.Now);
        var reclaimedAt = h.Now;

        h.Register("w1", held: [(id, false)]);
        Assert.Equal(WorkerMessageKind.Kill, Assert.Single(h.Outbox()).Kind);
        Assert.Equal(reclaimedAt, h[id].KillRequestedAt);

        h.State.Tick(reclaimedAt + Options.KillTimeout - OneTick);
        Assert.Empty(h.Outbox());

        h.State.Tick(reclaimedAt + Options.KillTimeout);
        Assert.Equal(WorkerMessageKind.Abandon, Assert.Single(h.Outbox()).Kind);
    }
}
