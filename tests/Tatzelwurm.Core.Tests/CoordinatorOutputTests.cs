using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>Commands that name unknown things, bulk control, and what the owner takes out (batch, changes, outbox).</summary>
public class CoordinatorOutputTests
{
    [Fact]
    public void Control_UnknownTask_RejectedAsUnknown()
    {
        var h = new Harness();

        Assert.Equal(RejectionCode.UnknownTask, h.State.Control(404, ControlVerb.Play, h.Now)!.Code);
        Assert.True(h.State.TakeBatch().IsEmpty);
    }

    [Fact]
    public void Control_IllegalVerb_RefusedAndNothingRecorded()
    {
        var h = new Harness();
        var id = h.Add();
        h.State.TakeBatch();
        h.State.TakeChanges();
        var before = h[id];

        var rejection = h.State.Control(id, ControlVerb.Play, h.Now);

        Assert.Equal(RejectionCode.IllegalTransition, rejection!.Code);
        Assert.Same(before, h[id]);
        Assert.True(h.State.TakeBatch().IsEmpty);
        Assert.Empty(h.State.TakeChanges());
        Assert.Empty(h.Outbox());
    }

    [Fact]
    public void WorkerUpdate_UnknownTask_RejectedAsUnknown()
    {
        var h = new Harness();
        h.Register("w1");

        Assert.Equal(RejectionCode.UnknownTask, h.State.WorkerUpdate("w1", 5, WorkerReport.Accepted, 0, null, null, h.Now)!.Code);
    }

    [Fact]
    public void ControlAll_Play_AppliesToCreatedAndPausedOnly()
    {
        var h = new Harness();
        var created = h.Add(ready: false);
        var paused = h.Add();
        h.Control(paused, ControlVerb.Pause);
        h.Add();
        var killed = h.Add();
        h.Control(killed, ControlVerb.Kill);

        var applied = h.State.ControlAll(ControlVerb.Play, h.Now);

        Assert.Equal([created, paused], applied);
        Assert.Equal(3, h.State.ReadyCount);
    }

    [Fact]
    public void ControlAll_Pause_AppliesToCreatedAndReadyButNotToRunningTasks()
    {
        var h = new Harness();
        h.Register("w1");
        var running = h.Running("w1");
        var ready = h.Add();
        var created = h.Add(ready: false);

        var applied = h.State.ControlAll(ControlVerb.Pause, h.Now);

        Assert.Equal([ready, created], applied);
        Assert.Equal((TaskState.Run, PendingControl.None), (h[running].State, h[running].PendingControl));
    }

    [Fact]
    public void ControlAll_Kill_NeverAppliedInBulk()
    {
        var h = new Harness();
        h.Add();
        h.Add(ready: false);

        Assert.Empty(h.State.ControlAll(ControlVerb.Kill, h.Now));
        Assert.Equal(0, h.State.Count(TaskState.Terminated));
    }

    [Fact]
    public void TakeBatch_SeveralChangesToOneTask_OneAfterImage()
    {
        var h = new Harness();
        h.Register("w1");
        h.State.TakeBatch();
        var id = h.Running("w1");

        var batch = h.State.TakeBatch();

        var upsert = Assert.Single(batch.Upserts);
        Assert.Same(h[id], upsert.Task);
        Assert.Equal(id, batch.LastTaskId);
        Assert.True(h.State.TakeBatch().IsEmpty);
    }

    [Fact]
    public void TakeBatch_NewTask_IsNotStoredEvenAfterSeveralChanges()
    {
        var h = new Harness();
        h.Register("w1");
        h.State.TakeBatch();
        var id = h.Running("w1");

        var upsert = Assert.Single(h.State.TakeBatch().Upserts);

        Assert.True(upsert.IsNew);
        Assert.Equal(TaskUpsert.NotStored, upsert.StoredHistory);
        Assert.True(upsert.Task.History.Count > 1);
        Assert.Equal(id, upsert.Task.Id);
    }

    [Fact]
    public void TakeBatch_TaskChangedAgain_CarriesTheHistoryCountOfThePreviousBatch()
    {
        var h = new Harness();
        var id = h.Add(ready: false);
        var stored = h[id].History.Count;
        h.State.TakeBatch();
        Assert.Null(h.State.Control(id, ControlVerb.Play, h.Now));
        Assert.Null(h.State.Control(id, ControlVerb.Pause, h.Now));

        var upsert = Assert.Single(h.State.TakeBatch().Upserts);

        Assert.Equal(stored, upsert.StoredHistory);
        Assert.True(upsert.Task.History.Count > stored + 1, "two changes in one batch still name the first base");
    }

    [Fact]
    public void TakeBatch_TaskAddedAndPurgedInOneBatch_IsOnlyADelete()
    {
        var h = new Harness(CoordinatorOptions.Default with { Retention = TimeSpan.Zero });
        var id = h.Add(ready: false);
        Assert.Null(h.State.Control(id, ControlVerb.Kill, h.Now));
        Assert.Equal(1, h.State.Purge(h.Now));

        var batch = h.State.TakeBatch();

        Assert.Empty(batch.Upserts);
        Assert.Equal([id], batch.Deletes);
    }

    [Fact]
    public void TakeChanges_Lifecycle_FlagsStateChangesAndLayers()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.State.TakeChanges();

        h.Report("w1", id, WorkerReport.Pending);
        h.Report("w1", id, WorkerReport.Finished);

        var changes = h.State.TakeChanges();
        Assert.Equal([(false, true), (true, false)], changes.Select(c => (c.StateChanged, c.LayerAdded)));
        Assert.Equal(TaskState.Terminated, changes[^1].Task.State);
        Assert.Empty(h.State.TakeChanges());
    }

    [Fact]
    public void AddTask_Ids_IncreaseFromOneAndHistoryStartsAtNow()
    {
        var h = new Harness { Now = T0 + TimeSpan.FromSeconds(3) };

        var first = h.State.AddTask(Spec(), h.Now);
        var second = h.State.AddTask(Spec(ready: false), h.Now);

        Assert.Equal((1L, 2L), (first.Id, second.Id));
        Assert.Equal([new Transition(TaskState.Created, h.Now, null)], second.History);
        Assert.True(h.State.AssignNeeded);
    }

    [Fact]
    public void AddTask_SameStateAtSameInstant_SharesTheFirstHistory()
    {
        var h = new Harness();

        var first = h.State.AddTask(Spec(), h.Now);
        var second = h.State.AddTask(Spec(), h.Now);
        var created = h.State.AddTask(Spec(ready: false), h.Now);
        h.Now += OneTick;
        var later = h.State.AddTask(Spec(), h.Now);

        Assert.Same(first.History, second.History);
        Assert.Equal([new Transition(TaskState.Created, T0, null)], created.History);
        Assert.Equal([new Transition(TaskState.Ready, T0 + OneTick, null)], later.History);
        Assert.NotSame(second.History, later.History);
    }

    [Fact]
    public void AddTask_SharedHistory_AMoveLeavesTheOtherTaskUnchanged()
    {
        var h = new Harness();
        h.Register("w1");
        var first = h.Add();
        var second = h.Add();

        h.Assign();

        Assert.Equal([TaskState.Ready, TaskState.Submit], h[first].History.Select(t => t.State));
        Assert.Equal([new Transition(TaskState.Ready, T0, null)], h[second].History);
    }

    [Fact]
    public void Register_SameWorkerWithNewTypesAndSlots_Updated()
    {
        var h = new Harness();
        h.Register("w1", slots: 1, types: ["a"]);

        h.Register("w1", slots: 3, types: ["b"]);

        var worker = h.State.Workers["w1"];
        Assert.Equal((3, true), (worker.Slots, worker.Types.SetEquals(["b"])));
        var id = h.Add(type: "b");
        Assert.Equal([("w1", id)], h.Assign());
    }
}
