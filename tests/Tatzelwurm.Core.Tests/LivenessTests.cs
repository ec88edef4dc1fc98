using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>Leases, suspicion and death at their exact boundaries (SPEC §4). Time is an explicit argument.</summary>
public class LivenessTests
{
    [Fact]
    public void Lease_OneTickBeforeDeadline_StillHeld()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");

        h.State.Tick(T0 + h.Options.Lease - OneTick);

        Assert.Equal(WorkerLease.Connected, h.State.Workers["w1"].Lease);
        Assert.Equal((TaskState.Run, "w1"), (h[id].State, h[id].WorkerId));
    }

    [Fact]
    public void Lease_AtExactlyTheDeadline_LapsesToSuspectSinceTheDeadline()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        var deadline = T0 + h.Options.Lease;

        h.State.Tick(deadline);

        var worker = h.State.Workers["w1"];
        Assert.Equal(WorkerLease.Suspect, worker.Lease);
        Assert.Equal(deadline, worker.SuspectSince);
        Assert.Equal((TaskState.Run, "w1"), (h[id].State, h[id].WorkerId));
    }

    [Fact]
    public void Lease_TickedLate_SuspectSinceIsTheDeadlineNotTheTick()
    {
        var h = new Harness();
        h.Register("w1");
        h.Running("w1");

        h.State.Tick(T0 + h.Options.Lease + TimeSpan.FromSeconds(7));

        Assert.Equal(T0 + h.Options.Lease, h.State.Workers["w1"].SuspectSince);
    }

    [Fact]
    public void Lease_RenewedByTraffic_DeadlineMovesWithLastSeen()
    {
        var h = new Harness();
        h.Register("w1");
        h.Running("w1");
        h.Now = T0 + TimeSpan.FromSeconds(9);
        h.Heartbeat("w1");

        h.State.Tick(h.Now + h.Options.Lease - OneTick);
        Assert.Equal(WorkerLease.Connected, h.State.Workers["w1"].Lease);
        h.State.Tick(h.Now + h.Options.Lease);
        Assert.Equal(WorkerLease.Suspect, h.State.Workers["w1"].Lease);
    }

    [Fact]
    public void Seen_FromAStaleConnection_DoesNotRenewTheLease()
    {
        var h = new Harness();
        h.Register("w1");
        h.Running("w1");
        var old = h.Connections["w1"];
        h.Register("w1", held: [.. h.State.Workers["w1"].Tasks.Select(id => (id, false))]);

        h.State.Seen("w1", old, T0 + TimeSpan.FromSeconds(9));
        h.State.Tick(T0 + h.Options.Lease);

        Assert.Equal(WorkerLease.Suspect, h.State.Workers["w1"].Lease);
    }

    [Fact]
    public void Suspect_OneTickBeforeGraceEnds_StillSuspectAndTasksUntouched()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        var suspectSince = T0 + h.Options.Lease;
        h.State.Tick(suspectSince);

        h.State.Tick(suspectSince + h.Options.Grace - OneTick);

        Assert.Equal(WorkerLease.Suspect, h.State.Workers["w1"].Lease);
        Assert.Equal((TaskState.Run, "w1", 0), (h[id].State, h[id].WorkerId, h[id].Attempts));
    }

    [Fact]
    public void Suspect_AtExactlySuspectSincePlusGrace_DeadAndTasksFollowPolicy()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        var suspectSince = T0 + h.Options.Lease;
        h.State.Tick(suspectSince);
        h.Outbox();

        h.State.Tick(suspectSince + h.Options.Grace);

        Assert.False(h.State.Workers.ContainsKey("w1"));
        Assert.Equal((TaskState.Pause, (string?)null, 1), (h[id].State, h[id].WorkerId, h[id].Attempts));

        // The lapsed connection is closed: the worker must register again and will be told to drop the task.
        var close = Assert.Single(h.Outbox());
        Assert.Equal(WorkerMessageKind.Close, close.Kind);
    }

    [Fact]
    public void Suspect_HeartbeatWithinGrace_ConnectedAgainAndKeepsTasks()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.State.Tick(T0 + h.Options.Lease);
        h.Now = T0 + h.Options.Lease + h.Options.Grace - OneTick;

        h.Heartbeat("w1");
        h.State.Tick(h.Now + OneTick);

        Assert.Equal(WorkerLease.Connected, h.State.Workers["w1"].Lease);
        Assert.Equal((TaskState.Run, "w1"), (h[id].State, h[id].WorkerId));
    }

    [Fact]
    public void Suspect_OnlyOneTickLate_AssignerSkipsIt()
    {
        var h = new Harness();
        h.Register("w1", slots: 3);
        h.State.Tick(T0 + h.Options.Lease);
        h.Add();

        Assert.Empty(h.Assign());
    }

    [Fact]
    public void Heartbeats_EveryIntervalFor30Days_TaskStaysRunOnItsWorker()
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        var id = h.Running("w1");
        var running = h[id];
        var end = T0 + TimeSpan.FromDays(30);
        var ticks = 0;

        for (h.Now = T0 + h.Options.HeartbeatInterval; h.Now <= end; h.Now += h.Options.HeartbeatInterval)
        {
            h.Heartbeat("w1");
            h.State.Tick(h.Now);
            h.State.Purge(h.Now);
            ticks++;
        }

        Assert.Equal(30 * 24 * 3600 / 2, ticks);
        Assert.Equal(WorkerLease.Connected, h.State.Workers["w1"].Lease);
        Assert.Same(running, h[id]);
        Assert.Equal((TaskState.Run, "w1", 0), (h[id].State, h[id].WorkerId, h[id].Attempts));
        Assert.Empty(h.Outbox());
        Assert.Equal(h.Now - h.Options.HeartbeatInterval + h.Options.Lease, h.State.NextDeadline());
    }

    [Fact]
    public void Heartbeats_JustInsideTheLeaseFor30Days_NeverLapse()
    {
        // The slowest heartbeat that still holds: one every lease − 1 tick.
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        var step = h.Options.Lease - OneTick;

        for (h.Now = T0 + step; h.Now <= T0 + TimeSpan.FromDays(30); h.Now += step)
        {
            h.State.Tick(h.Now);
            Assert.Equal(WorkerLease.Connected, h.State.Workers["w1"].Lease);
            h.Heartbeat("w1");
        }

        Assert.Equal(TaskState.Run, h[id].State);
    }

    [Fact]
    public void Disconnect_WorkerWithTasks_SuspectAtOnceDeadAfterGrace()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        var dropped = T0 + TimeSpan.FromSeconds(3);
        h.Now = dropped;

        h.Disconnect("w1");

        var worker = h.State.Workers["w1"];
        Assert.Equal((WorkerLease.Suspect, dropped), (worker.Lease, worker.SuspectSince));
        Assert.Null(worker.Connection);
        h.State.Tick(dropped + h.Options.Grace - OneTick);
        Assert.Equal((TaskState.Run, "w1"), (h[id].State, h[id].WorkerId));

        h.State.Tick(dropped + h.Options.Grace);

        Assert.False(h.State.Workers.ContainsKey("w1"));
        Assert.Equal((TaskState.Ready, (string?)null, 1), (h[id].State, h[id].WorkerId, h[id].Attempts));
        Assert.Empty(h.Outbox());
    }

    [Fact]
    public void Disconnect_AfterLeaseAlreadyLapsed_GraceStillCountsFromTheLapse()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        var lapsed = T0 + h.Options.Lease;
        h.State.Tick(lapsed);

        // The TCP connection only notices much later; that must not extend the grace period.
        h.Now = lapsed + h.Options.Grace - TimeSpan.FromSeconds(1);
        h.Disconnect("w1");
        h.State.Tick(lapsed + h.Options.Grace);

        Assert.False(h.State.Workers.ContainsKey("w1"));
        Assert.Equal(TaskState.Pause, h[id].State);
    }

    [Fact]
    public void Disconnect_IdleWorker_ForgottenAtOnce()
    {
        var h = new Harness();
        h.Register("w1");

        h.Disconnect("w1");

        Assert.False(h.State.Workers.ContainsKey("w1"));
        Assert.Null(h.State.NextDeadline());
    }

    [Fact]
    public void Disconnect_StaleConnection_Ignored()
    {
        var h = new Harness();
        h.Register("w1");
        h.Running("w1");
        var old = h.Connections["w1"];
        h.Register("w1", held: [.. h.State.Workers["w1"].Tasks.Select(id => (id, false))]);

        h.State.Disconnected("w1", old, T0);

        Assert.Equal(WorkerLease.Connected, h.State.Workers["w1"].Lease);
        Assert.Same(h.Connections["w1"], h.State.Workers["w1"].Connection);
    }

    [Fact]
    public void Dead_WorkerDeclaredDead_ItsReleasedTasksGoToTheOtherWorker()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1", DeliveryPolicy.AtLeastOnce);
        h.Register("w2");
        h.Disconnect("w1");
        h.Now = T0 + h.Options.Grace;
        h.Heartbeat("w2");

        h.State.Tick(h.Now);

        Assert.True(h.State.AssignNeeded);
        Assert.Equal([("w2", id)], h.Assign());
    }
}
