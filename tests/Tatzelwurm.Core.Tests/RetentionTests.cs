using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>Purge of terminated tasks after retention (SPEC §7) and the loop's next wake-up.</summary>
public class RetentionTests
{
    [Fact]
    public void Purge_TerminatedTask_KeptUntilRetentionThenDeleted()
    {
        var h = new Harness();
        var id = h.Add();
        h.Now = T0 + TimeSpan.FromMinutes(1);
        h.Control(id, ControlVerb.Kill);
        h.State.TakeBatch();
        var expires = h.Now + h.Options.Retention;

        Assert.Equal(0, h.State.Purge(expires - OneTick));
        Assert.True(h.State.Tasks.ContainsKey(id));

        Assert.Equal(1, h.State.Purge(expires));
        Assert.False(h.State.Tasks.ContainsKey(id));
        Assert.Equal(0, h.State.Count(TaskState.Terminated));
        var batch = h.State.TakeBatch();
        Assert.Equal([id], batch.Deletes);
        Assert.Empty(batch.Upserts);
    }

    [Fact]
    public void Purge_LiveTasks_NeverDeletedHoweverOld()
    {
        var h = new Harness();
        h.Register("w1");
        var running = h.Running("w1");
        var created = h.Add(ready: false);
        var paused = h.Add();
        h.Control(paused, ControlVerb.Pause);
        var ready = h.Add(type: "nobody");
        var years = T0 + TimeSpan.FromDays(3650);
        h.Heartbeat("w1");

        Assert.Equal(0, h.State.Purge(years));

        Assert.All(new[] { running, created, paused, ready }, id => Assert.True(h.State.Tasks.ContainsKey(id)));
    }

    [Fact]
    public void Purge_OldestFirst_OnlyThoseDue()
    {
        var h = new Harness();
        var ids = new List<long>();
        for (var i = 0; i < 5; i++)
        {
            h.Now = T0 + TimeSpan.FromHours(i);
            var id = h.Add();
            h.Control(id, ControlVerb.Kill);
            ids.Add(id);
        }

        Assert.Equal(3, h.State.Purge(T0 + TimeSpan.FromHours(2) + h.Options.Retention));

        Assert.Equal(ids[3..], h.State.Tasks.Keys.Order());
        Assert.Equal(T0 + TimeSpan.FromHours(3) + h.Options.Retention, h.State.NextDeadline());
    }

    [Fact]
    public void Purge_ManyDue_BoundedPerCallAndResumesNextCall()
    {
        var h = new Harness();
        const int total = 10_000 + 7;
        for (var i = 0; i < total; i++)
        {
            h.Control(h.Add(), ControlVerb.Kill);
        }

        var due = T0 + h.Options.Retention;
        var first = h.State.Purge(due);

        Assert.Equal(10_000, first);
        Assert.Equal(7, h.State.Purge(due));
        Assert.Equal(0, h.State.Purge(due));
        Assert.Empty(h.State.Tasks);
    }

    [Fact]
    public void Purge_AfterLoad_RetentionCountsFromTermination()
    {
        var h = new Harness();
        var old = h.Add();
        h.Control(old, ControlVerb.Kill);
        h.Now = T0 + TimeSpan.FromDays(3);
        var recent = h.Add();
        h.Control(recent, ControlVerb.Kill);
        var batch = h.State.TakeBatch();

        // The store may return tasks in any order.
        var restarted = new CoordinatorState(CoordinatorOptions.Default);
        restarted.Load(new StoreSnapshot([.. batch.Upserts.Select(u => u.Task).Reverse()], new Dictionary<string, int>(), batch.LastTaskId), T0 + TimeSpan.FromDays(4));

        Assert.Equal(T0 + restarted.Options.Retention, restarted.NextDeadline());
        Assert.Equal(1, restarted.Purge(T0 + restarted.Options.Retention));
        Assert.Equal([recent], restarted.Tasks.Keys);
    }

    // ---- next deadline --------------------------------------------------------------------------

    [Fact]
    public void NextDeadline_NothingToDo_Null()
    {
        var h = new Harness();
        h.Add();
        h.Add(ready: false);

        Assert.Null(h.State.NextDeadline());
    }

    [Fact]
    public void NextDeadline_ConnectedWorker_ItsLeaseDeadline()
    {
        var h = new Harness();
        h.Register("w1");
        h.Now = T0 + TimeSpan.FromSeconds(4);
        h.Register("w2");
        h.Heartbeat("w2");

        Assert.Equal(T0 + h.Options.Lease, h.State.NextDeadline());
    }

    [Fact]
    public void NextDeadline_SuspectWorker_EndOfGrace()
    {
        var h = new Harness();
        h.Register("w1");
        h.Running("w1");
        h.Now = T0 + TimeSpan.FromSeconds(2);
        h.Disconnect("w1");

        Assert.Equal(h.Now + h.Options.Grace, h.State.NextDeadline());
    }

    [Fact]
    public void NextDeadline_PendingKill_KillTimeoutWhenEarliest()
    {
        var options = CoordinatorOptions.Default with { Lease = TimeSpan.FromMinutes(5), KillTimeout = TimeSpan.FromSeconds(20) };
        var h = new Harness(options);
        h.Register("w1");
        var id = h.Running("w1");
        h.Now = T0 + TimeSpan.FromSeconds(3);
        h.Control(id, ControlVerb.Kill);

        Assert.Equal(h.Now + options.KillTimeout, h.State.NextDeadline());

        h.State.Tick(h.Now + options.KillTimeout);
        Assert.Equal(T0 + options.Lease, h.State.NextDeadline());
    }

    [Fact]
    public void NextDeadline_TerminatedTask_RetentionWhenEarliest()
    {
        var options = CoordinatorOptions.Default with { Retention = TimeSpan.FromSeconds(3) };
        var h = new Harness(options);
        h.Register("w1");
        var id = h.Running("w1");
        h.Now = T0 + TimeSpan.FromSeconds(1);
        h.Report("w1", id, WorkerReport.Finished);

        Assert.Equal(h.Now + options.Retention, h.State.NextDeadline());
        Assert.Equal(1, h.State.Purge(h.Now + options.Retention));
        Assert.Equal(T0 + options.Lease, h.State.NextDeadline());
    }

    [Fact]
    public void NextDeadline_Everything_IsTheMinimumAndTickAtItDoesSomething()
    {
        var options = CoordinatorOptions.Default with
        {
            Lease = TimeSpan.FromSeconds(50),
            Grace = TimeSpan.FromSeconds(40),
            KillTimeout = TimeSpan.FromSeconds(30),
            Retention = TimeSpan.FromSeconds(20),
        };
        var h = new Harness(options);
        h.Register("w1", slots: 2);
        h.Register("w2", slots: 2);
        var killed = h.Running("w1");
        var done = h.Running("w2");
        h.Control(killed, ControlVerb.Kill);
        h.Report("w2", done, WorkerReport.Finished);
        h.Now = T0 + TimeSpan.FromSeconds(5);
        h.Heartbeat("w1");
        h.Heartbeat("w2");
        h.Outbox();

        // Retention at 20 s comes first, then the kill at 30 s, then the leases at 55 s.
        Assert.Equal(T0 + TimeSpan.FromSeconds(20), h.State.NextDeadline());
        Assert.Equal(1, h.State.Purge(T0 + TimeSpan.FromSeconds(20)));
        Assert.Equal(T0 + TimeSpan.FromSeconds(30), h.State.NextDeadline());
        h.State.Tick(T0 + TimeSpan.FromSeconds(30));
        Assert.Equal(WorkerMessageKind.Abandon, Assert.Single(h.Outbox()).Kind);
        Assert.Equal(T0 + TimeSpan.FromSeconds(55), h.State.NextDeadline());
        h.State.Tick(T0 + TimeSpan.FromSeconds(55));
        Assert.All(h.State.Workers.Values, w => Assert.Equal(WorkerLease.Suspect, w.Lease));
        Assert.Equal(T0 + TimeSpan.FromSeconds(95), h.State.NextDeadline());
    }
}
