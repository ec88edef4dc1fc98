using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>
/// The table keeps a terminated task without its payload bytes (only their size), while the store
/// still gets the full record: it may be the image a new task is inserted from.
/// </summary>
public class TerminatedPayloadTests
{
    private static readonly byte[] SpecPayload = [1, 2, 3];

    [Fact]
    public void Finished_TableDropsThePayloadBytes_StoreChangeKeepsThem()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.State.TakeBatch();

        h.Report("w1", id, WorkerReport.Finished, result: [7]);

        AssertPayloadLess(h[id]);
        Assert.Equal([7], h[id].Result);
        AssertStoredWithPayload(h, id, isNew: false);
    }

    [Fact]
    public void KilledOnItsWorker_TableDropsThePayloadBytes_StoreChangeKeepsThem()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");
        h.Control(id, ControlVerb.Kill);
        Assert.Equal(SpecPayload, h[id].Payload.ToArray());
        h.State.TakeBatch();

        h.Report("w1", id, WorkerReport.Finished, exitCode: ExitCodes.Killed);

        AssertPayloadLess(h[id]);
        AssertStoredWithPayload(h, id, isNew: false);
    }

    [Theory]
    [InlineData(TaskState.Created)]
    [InlineData(TaskState.Ready)]
    [InlineData(TaskState.Pause)]
    public void CancelledBeforeItRan_TableDropsThePayloadBytes_StoreChangeKeepsThem(TaskState from)
    {
        var h = new Harness();
        var id = h.Add(ready: from != TaskState.Created);
        if (from == TaskState.Pause)
        {
            h.Control(id, ControlVerb.Pause);
        }

        Assert.Equal(from, h[id].State);
        h.State.TakeBatch();

        h.Control(id, ControlVerb.Kill);

        AssertPayloadLess(h[id]);
        AssertStoredWithPayload(h, id, isNew: false);
    }

    [Fact]
    public void AddedAndKilledBeforeAnyCommit_InsertedWithItsPayload()
    {
        var h = new Harness();
        var id = h.Add();

        h.Control(id, ControlVerb.Kill);

        AssertPayloadLess(h[id]);
        AssertStoredWithPayload(h, id, isNew: true);
    }

    [Fact]
    public void NotTerminated_TableKeepsThePayload()
    {
        var h = new Harness();
        h.Register("w1");
        var running = h.Running("w1");
        var ready = h.Add();

        Assert.Equal(SpecPayload, h[running].Payload.ToArray());
        Assert.Equal(SpecPayload, h[ready].Payload.ToArray());
        Assert.Equal(SpecPayload.Length, h[ready].PayloadSize);
    }

    [Fact]
    public void Load_FullTerminatedRecord_TableKeepsItWithoutPayloadBytes()
    {
        var done = Task(TaskState.Terminated, id: 1) with { Payload = new byte[] { 4, 5, 6, 7 } };
        var queued = Task(TaskState.Ready, id: 2) with { Payload = new byte[] { 8, 9 } };
        var h = new Harness();

        h.State.Load(new StoreSnapshot([done, queued], new Dictionary<string, int>(), 2), T0);

        Assert.True(h[1].Payload.IsEmpty);
        Assert.Equal(4, h[1].PayloadSize);
        Assert.Equal([8, 9], h[2].Payload.ToArray());
        Assert.True(h.State.TakeBatch().IsEmpty);
    }

    [Fact]
    public void PayloadSize_SetByThePayloadAndKeptApartFromIt()
    {
        var task = Task(TaskState.Terminated) with { Payload = new byte[] { 1, 2, 3, 4, 5 } };

        var stripped = task with { Payload = default, PayloadSize = task.PayloadSize };

        Assert.Equal(5, task.PayloadSize);
        Assert.Equal((true, 5), (stripped.Payload.IsEmpty, stripped.PayloadSize));
        Assert.Throws<ArgumentOutOfRangeException>(() => task with { PayloadSize = -1 });
    }

    private static void AssertPayloadLess(TaskRecord task)
    {
        Assert.Equal(TaskState.Terminated, task.State);
        Assert.True(task.Payload.IsEmpty);
        Assert.Equal(SpecPayload.Length, task.PayloadSize);
    }

    private static void AssertStoredWithPayload(Harness h, long id, bool isNew)
    {
        var upsert = Assert.Single(h.State.TakeBatch().Upserts, u => u.Task.Id == id);
        Assert.Equal(TaskState.Terminated, upsert.Task.State);
        Assert.Equal(SpecPayload, upsert.Task.Payload.ToArray());
        Assert.Equal(isNew, upsert.IsNew);
    }
}
