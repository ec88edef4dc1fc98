namespace Tatzelwurm.Core.Tests;

/// <summary>The assigner through <see cref="CoordinatorState"/> (SPEC §5): order, routing, load, slots, tag limits, rejection, draining.</summary>
public class AssignerTests
{
    [Fact]
    public void Assign_MixedPriorities_HighestFirstFifoWithin()
    {
        var h = new Harness();
        var low = h.Add(priority: 1);
        var high1 = h.Add(priority: 9);
        var mid = h.Add(priority: 5);
        var high2 = h.Add(priority: 9);
        var negative = h.Add(priority: -3);
        h.Register("w1", slots: 10);

        var order = h.Assign().Select(a => a.Task).ToList();

        Assert.Equal([high1, high2, mid, low, negative], order);
    }

    [Fact]
    public void Assign_OneSlotFreedAtATime_AlwaysTakesBestRemaining()
    {
        var h = new Harness();
        h.Register("w1", slots: 1);
        var first = h.Add(priority: 0);
        Assert.Equal([("w1", first)], h.Assign());
        h.Report("w1", first, WorkerReport.Accepted);

        var a = h.Add(priority: 2);
        var b = h.Add(priority: 7);
        var c = h.Add(priority: 2);
        Assert.Empty(h.Assign());

        var order = new List<long>();
        var running = first;
        for (var i = 0; i < 3; i++)
        {
            h.Report("w1", running, WorkerReport.Finished);
            var assigned = Assert.Single(h.Assign());
            running = assigned.Task;
            h.Report("w1", running, WorkerReport.Accepted);
            order.Add(running);
        }

        Assert.Equal([b, a, c], order);
    }

    [Fact]
    public void Assign_PriorityAcrossTypes_HigherPriorityTypeFirst()
    {
        var h = new Harness();
        var a = h.Add(type: "a", priority: 1);
        var b = h.Add(type: "b", priority: 8);
        var c = h.Add(type: "c", priority: 4);
        h.Register("any", slots: 3);

        Assert.Equal([b, c, a], h.Assign().Select(x => x.Task));
    }

    [Fact]
    public void Assign_TypedWorkers_OnlyGetTypesTheyAccept()
    {
        var h = new Harness();
        h.Register("sync", slots: 5, types: ["sync"]);
        h.Register("async", slots: 5, types: ["async", "calc"]);
        var s = h.Add(type: "sync");
        var a = h.Add(type: "async");
        var c = h.Add(type: "calc");
        var orphan = h.Add(type: "gpu");

        var assigned = h.Assign().ToHashSet();

        Assert.Equal([("sync", s), ("async", a), ("async", c)], assigned);
        Assert.Equal(TaskState.Ready, h[orphan].State);
    }

    [Fact]
    public void Assign_WorkerWithNoTypes_AcceptsAnyType()
    {
        var h = new Harness();
        h.Register("any", slots: 3, types: []);
        var ids = new[] { h.Add(type: "x"), h.Add(type: "y"), h.Add(type: "z") };

        Assert.Equal(ids.Select(id => ("any", id)), h.Assign());
    }

    [Fact]
    public void Assign_TaskOfTypeNobodyTakes_DoesNotBlockOthersAndWaitsForAWorker()
    {
        var h = new Harness();
        h.Register("w1", slots: 5, types: ["a"]);
        var gpu = h.Add(type: "gpu", priority: 100);
        var a = h.Add(type: "a");

        Assert.Equal([("w1", a)], h.Assign());

        h.Register("g", slots: 1, types: ["gpu"]);
        Assert.Equal([("g", gpu)], h.Assign());
    }

    [Fact]
    public void Assign_UnevenLoad_LeastLoadedWorkerFirst()
    {
        var h = new Harness();
        h.Register("w1", slots: 4);
        h.Running("w1");
        h.Running("w1");
        h.Register("w2", slots: 4);
        h.Register("w3", slots: 4);
        h.Running("w2");

        // Loads 2/1/0: w3, then w2 (tied with w3 at 1, lower id), w3, and w1 once all hold 2.
        var ids = Enumerable.Range(0, 4).Select(_ => h.Add()).ToList();
        var assigned = h.Assign();

        Assert.Equal(["w3", "w2", "w3", "w1"], assigned.Select(a => a.Worker));
        Assert.Equal([3, 2, 2], h.State.Workers.Values.OrderBy(w => w.Id, StringComparer.Ordinal).Select(w => w.Load));
        Assert.Equal(ids, assigned.Select(a => a.Task));
    }

    [Fact]
    public void Assign_MoreTasksThanSlots_NeverPastSlots()
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        h.Register("w2", slots: 3);
        for (var i = 0; i < 20; i++)
        {
            h.Add();
        }

        var assigned = h.Assign();

        Assert.Equal(5, assigned.Count);
        Assert.Equal(2, assigned.Count(a => a.Worker == "w1"));
        Assert.Equal(3, assigned.Count(a => a.Worker == "w2"));
        Assert.Equal(15, h.State.ReadyCount);
        Assert.Empty(h.Assign());
    }

    [Fact]
    public void Assign_ZeroSlots_GetsNothing()
    {
        var h = new Harness();
        h.Register("w0", slots: 0);
        h.Add();

        Assert.Empty(h.Assign());
    }

    [Fact]
    public void Assign_PausedOnWorker_StillOccupiesASlot()
    {
        var h = new Harness();
        h.Register("w1", slots: 1);
        var id = h.Running("w1");
        h.Control(id, ControlVerb.Pause);
        h.Report("w1", id, WorkerReport.Paused);
        h.Add();

        Assert.Empty(h.Assign());
    }

    [Fact]
    public void Assign_CreatedOrPausedTasks_AreNotAssigned()
    {
        var h = new Harness();
        h.Register("w1", slots: 5);
        var created = h.Add(ready: false);
        var paused = h.Add();
        h.Control(paused, ControlVerb.Pause);

        Assert.Empty(h.Assign());

        h.Control(created, ControlVerb.Play);
        h.Control(paused, ControlVerb.Play);
        Assert.Equal([("w1", created), ("w1", paused)], h.Assign());
    }

    [Fact]
    public void Assign_AssignedTask_IsSubmitOnItsWorkerAndDirty()
    {
        var h = new Harness();
        h.Register("w1", slots: 1);
        var id = h.Add();
        h.State.TakeBatch();

        h.Assign();

        Assert.Equal((TaskState.Submit, "w1"), (h[id].State, h[id].WorkerId));
        Assert.Contains(id, h.State.Workers["w1"].Tasks);
        Assert.Equal([id], h.State.TakeBatch().Upserts.Select(u => u.Task.Id));
        Assert.False(h.State.AssignNeeded);
    }

    // ---- tag limits -------------------------------------------------------------------------------

    [Fact]
    public void Assign_TagLimit_NeverMoreThanLimitWithTagOnWorkers()
    {
        var h = new Harness();
        h.Register("w1", slots: 10);
        h.Register("w2", slots: 10);
        Assert.Null(h.State.SetTagLimit("computer:daint", 2));
        var tagged = Enumerable.Range(0, 5).Select(_ => h.Add(tags: ["computer:daint"])).ToList();
        var free = h.Add(tags: ["computer:other"]);

        var assigned = h.Assign().Select(a => a.Task).ToList();

        Assert.Equal([tagged[0], tagged[1], free], assigned);
        Assert.Equal(2, h.State.TagRunning("computer:daint"));
        Assert.Empty(h.Assign());
    }

    [Fact]
    public void Assign_TagLimitPlaceFrees_ParkedTaskComesBack()
    {
        var h = new Harness();
        h.Register("w1", slots: 10);
        h.State.SetTagLimit("x", 1);
        var first = h.Add(tags: ["x"]);
        var second = h.Add(tags: ["x"]);
        Assert.Equal([("w1", first)], h.Assign());
        Assert.Empty(h.Assign());

        h.Report("w1", first, WorkerReport.Accepted);
        h.Report("w1", first, WorkerReport.Finished);

        Assert.True(h.State.AssignNeeded);
        Assert.Equal([("w1", second)], h.Assign());
    }

    [Fact]
    public void Assign_TagLimitRaised_ParkedTasksComeBack()
    {
        var h = new Harness();
        h.Register("w1", slots: 10);
        h.State.SetTagLimit("x", 1);
        var ids = Enumerable.Range(0, 4).Select(_ => h.Add(tags: ["x"])).ToList();
        Assert.Single(h.Assign());

        Assert.Null(h.State.SetTagLimit("x", 3));

        Assert.True(h.State.AssignNeeded);
        Assert.Equal([ids[1], ids[2]], h.Assign().Select(a => a.Task));
    }

    [Fact]
    public void Assign_TagLimitRemoved_AllParkedTasksComeBack()
    {
        var h = new Harness();
        h.Register("w1", slots: 10);
        h.State.SetTagLimit("x", 0);
        var ids = Enumerable.Range(0, 3).Select(_ => h.Add(tags: ["x"])).ToList();
        Assert.Empty(h.Assign());

        h.State.SetTagLimit("x", null);

        Assert.Equal(ids, h.Assign().Select(a => a.Task));
        Assert.False(h.State.TagLimits.ContainsKey("x"));
    }

    [Fact]
    public void Assign_TwoTagsBothLimited_BothLimitsHold()
    {
        var h = new Harness();
        h.Register("w1", slots: 10);
        h.State.SetTagLimit("a", 2);
        h.State.SetTagLimit("b", 1);
        var ab = h.Add(tags: ["a", "b"]);
        var b = h.Add(tags: ["b"]);
        var a = h.Add(tags: ["a"]);
        var a2 = h.Add(tags: ["a"]);

        Assert.Equal([ab, a], h.Assign().Select(x => x.Task));

        h.Report("w1", ab, WorkerReport.Finished);
        Assert.Equal([b, a2], h.Assign().Select(x => x.Task).Order());
    }

    [Fact]
    public void Assign_ParkedTaskKilled_IsNotAssignedLater()
    {
        var h = new Harness();
        h.Register("w1", slots: 10);
        h.State.SetTagLimit("x", 1);
        var first = h.Add(tags: ["x"]);
        var parked = h.Add(tags: ["x"]);
        h.Assign();

        h.Control(parked, ControlVerb.Kill);
        h.Report("w1", first, WorkerReport.Finished);

        Assert.Empty(h.Assign());
        Assert.Equal(TaskState.Terminated, h[parked].State);
    }

    [Fact]
    public void Assign_ParkedTaskPausedAndPlayedAgain_AssignedOnce()
    {
        var h = new Harness();
        h.Register("w1", slots: 10);
        h.State.SetTagLimit("x", 1);
        var first = h.Add(tags: ["x"]);
        var parked = h.Add(tags: ["x"]);
        h.Assign();
        h.Control(parked, ControlVerb.Pause);
        h.Control(parked, ControlVerb.Play);

        h.State.SetTagLimit("x", 5);

        Assert.Equal([("w1", parked)], h.Assign());
        Assert.Empty(h.Assign());
        Assert.Equal(TaskState.Submit, h[first].State);
    }

    [Fact]
    public void SetTagLimit_NegativeOrNoTag_IsRefused()
    {
        var h = new Harness();

        Assert.Equal(RejectionCode.InvalidRequest, h.State.SetTagLimit("x", -1)!.Code);
        Assert.Equal(RejectionCode.InvalidRequest, h.State.SetTagLimit("", 1)!.Code);
        Assert.Empty(h.State.TagLimits);
    }

    [Fact]
    public void SetTagLimit_Changes_GoToTheStoreBatch()
    {
        var h = new Harness();
        h.State.SetTagLimit("x", 4);
        h.State.SetTagLimit("x", null);

        Assert.Equal([new KeyValuePair<string, int?>("x", 4), new KeyValuePair<string, int?>("x", null)], h.State.TakeBatch().TagLimits);
        Assert.Empty(h.State.TakeBatch().TagLimits);
    }

    // ---- rejection ------------------------------------------------------------------------------

    [Fact]
    public void Reject_AnotherWorkerEligible_TaskGoesThere()
    {
        var h = new Harness();
        h.Register("w1", slots: 1);
        var id = h.Add();
        Assert.Equal([("w1", id)], h.Assign());
        h.Register("w2", slots: 1);

        h.Report("w1", id, WorkerReport.Rejected);

        Assert.Equal([("w2", id)], h.Assign());
    }

    [Fact]
    public void Reject_ByEveryEligibleWorker_WaitsThenRunsOnNewWorker()
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        h.Register("w2", slots: 2);
        var id = h.Add();
        var first = Assert.Single(h.Assign());
        h.Report(first.Worker, id, WorkerReport.Rejected);
        var second = Assert.Single(h.Assign());
        Assert.NotEqual(first.Worker, second.Worker);
        h.Report(second.Worker, id, WorkerReport.Rejected);

        Assert.Empty(h.Assign());
        Assert.Equal((TaskState.Ready, (string?)null), (h[id].State, h[id].WorkerId));

        // Other tasks still flow to the workers that rejected this one.
        var other = h.Add();
        Assert.Single(h.Assign(), a => a.Task == other);

        h.Register("w3", slots: 1);
        Assert.Equal([("w3", id)], h.Assign());
    }

    [Fact]
    public void Reject_ByOnlyWorker_RunsWhenThatWorkerRegistersAgain()
    {
        var h = new Harness();
        h.Register("w1", slots: 1);
        var id = h.Add();
        h.Assign();
        h.Report("w1", id, WorkerReport.Rejected);
        Assert.Empty(h.Assign());

        // Re-registering (e.g. with new types) clears its earlier refusals.
        h.Register("w1", slots: 1);

        Assert.Equal([("w1", id)], h.Assign());
    }

    [Fact]
    public void Reject_ByAll_HigherPriorityRejectedTaskDoesNotBlockLowerOnes()
    {
        var h = new Harness();
        h.Register("w1", slots: 1);
        var hot = h.Add(priority: 9);
        h.Assign();
        h.Report("w1", hot, WorkerReport.Rejected);
        var cold = h.Add(priority: 0);

        Assert.Equal([("w1", cold)], h.Assign());
    }

    [Fact]
    public void Reject_ByWrongWorker_IsRefusedAndChangesNothing()
    {
        var h = new Harness();
        h.Register("w1", slots: 1);
        h.Register("w2", slots: 1);
        var id = h.Add();
        var (worker, _) = Assert.Single(h.Assign());
        var other = worker == "w1" ? "w2" : "w1";
        var before = h[id];

        var rejection = h.State.WorkerUpdate(other, id, WorkerReport.Rejected, 0, null, null, h.Now);

        Assert.Equal(RejectionCode.IllegalTransition, rejection!.Code);
        Assert.Same(before, h[id]);
    }

    [Fact]
    public void Reject_ByAllThenADrainedWorkerIsUndrained_TaskGoesToIt()
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        h.Register("w2", slots: 2);
        h.State.CommandWorker("w2", WorkerAction.Drain);
        var id = h.Add();
        Assert.Equal([("w1", id)], h.Assign());
        h.Report("w1", id, WorkerReport.Rejected);
        Assert.Empty(h.Assign());

        h.State.CommandWorker("w2", WorkerAction.Undrain);

        Assert.Equal([("w2", id)], h.Assign());
    }

    [Fact]
    public void Reject_ByAllThenASuspectWorkerHeartbeatsAgain_TaskGoesToIt()
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        h.Now += h.Options.Lease - TimeSpan.FromSeconds(1);
        h.Register("w2", slots: 2);
        h.Now += TimeSpan.FromSeconds(1);
        h.State.Tick(h.Now);
        Assert.Equal(WorkerLease.Suspect, h.State.Workers["w1"].Lease);
        var id = h.Add();
        Assert.Equal([("w2", id)], h.Assign());
        h.Report("w2", id, WorkerReport.Rejected);
        Assert.Empty(h.Assign());

        h.Heartbeat("w1");

        Assert.Equal(WorkerLease.Connected, h.State.Workers["w1"].Lease);
        Assert.Equal([("w1", id)], h.Assign());
    }

    // ---- draining -----------------------------------------------------------------------------

    [Fact]
    public void Drain_Worker_GetsNothingNewButRunningTasksFinish()
    {
        var h = new Harness();
        h.Register("w1", slots: 4);
        var running = h.Running("w1");

        Assert.Null(h.State.CommandWorker("w1", WorkerAction.Drain));
        var message = Assert.Single(h.Outbox());
        Assert.Equal(WorkerMessageKind.Drain, message.Kind);

        var queued = h.Add();
        Assert.Empty(h.Assign());
        h.Report("w1", running, WorkerReport.Finished);
        Assert.Equal(TaskState.Terminated, h[running].State);
        Assert.Empty(h.Assign());

        h.Register("w2", slots: 1);
        Assert.Equal([("w2", queued)], h.Assign());
    }

    [Fact]
    public void Drain_ByName_FindsTheWorker()
    {
        var h = new Harness();
        h.State.RegisterWorker("id-1", "nice-name", [], 1, [], new Conn("id-1"), h.Now);

        Assert.Null(h.State.CommandWorker("nice-name", WorkerAction.Drain));
        Assert.True(h.State.Workers["id-1"].Draining);
        Assert.Equal(RejectionCode.UnknownWorker, h.State.CommandWorker("nobody", WorkerAction.Drain)!.Code);
    }

    [Fact]
    public void Stop_Worker_DrainsAndTellsItToStop()
    {
        var h = new Harness();
        h.Register("w1", slots: 4);

        h.State.CommandWorker("w1", WorkerAction.Stop);

        Assert.Equal(WorkerMessageKind.Stop, Assert.Single(h.Outbox()).Kind);
        Assert.True(h.State.Workers["w1"].Draining);
        Assert.True(h.State.Workers["w1"].Stopping);
        h.Add();
        Assert.Empty(h.Assign());
    }

    [Theory]
    [InlineData(WorkerAction.Drain, WorkerMessageKind.Drain)]
    [InlineData(WorkerAction.Stop, WorkerMessageKind.Stop)]
    public void Drain_WhileWorkerDisconnected_NoticeSentWhenItRegistersAgain(WorkerAction action, WorkerMessageKind kind)
    {
        var h = new Harness();
        h.Register("w1", slots: 2);
        var running = h.Running("w1");
        h.Disconnect("w1");

        h.State.CommandWorker("w1", action);
        Assert.Empty(h.Outbox());
        h.Register("w1", slots: 2, held: [(running, false)]);

        var notice = Assert.Single(h.Outbox());
        Assert.Equal((kind, (object)h.Connections["w1"]), (notice.Kind, notice.Connection));
        h.Add();
        Assert.Empty(h.Assign());
    }

    [Fact]
    public void Drain_ReRegisterOnSameConnection_NoticeNotRepeated()
    {
        var h = new Harness();
        var conn = new Conn("w1");
        h.State.RegisterWorker("w1", "w1", [], 2, [], conn, h.Now);
        h.State.CommandWorker("w1", WorkerAction.Drain);
        Assert.Single(h.Outbox());

        h.State.RegisterWorker("w1", "w1", ["new-type"], 3, [], conn, h.Now);

        Assert.Empty(h.Outbox());
        Assert.True(h.State.Workers["w1"].Draining);
    }

    [Fact]
    public void Undrain_Worker_GetsTasksAgain()
    {
        var h = new Harness();
        h.Register("w1", slots: 4);
        h.State.CommandWorker("w1", WorkerAction.Drain);
        var id = h.Add();
        Assert.Empty(h.Assign());

        h.State.CommandWorker("w1", WorkerAction.Undrain);

        Assert.Equal([("w1", id)], h.Assign());
    }

    // ---- property: random operations keep every invariant ----------------------------------------

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(42)]
    [InlineData(1234)]
    [InlineData(98765)]
    public void Assign_RandomOperations_SlotsTagLimitsRoutingAndOrderAlwaysHold(int seed)
    {
        var rng = new Random(seed);
        var h = new Harness();
        var types = new[] { "a", "b", "c" };
        var tagNames = new[] { "x", "y", "z" };
        var rejected = new Dictionary<long, HashSet<string>>();
        var workerCount = 0;
        h.State.SetTagLimit("x", 2);
        h.State.SetTagLimit("y", 5);

        for (var step = 0; step < 3000; step++)
        {
            h.Now += TimeSpan.FromMilliseconds(rng.Next(1, 50));
            foreach (var id in h.State.Workers.Values.Where(w => w.Connection is not null).Select(w => w.Id).ToList())
            {
                h.Heartbeat(id);
            }

            var op = rng.Next(100);
            var tasks = h.State.Tasks.Values.ToList();
            TaskRecord? Pick(Func<TaskRecord, bool> where)
            {
                var candidates = tasks.Where(where).ToList();
                return candidates.Count == 0 ? null : candidates[rng.Next(candidates.Count)];
            }

            if (op < 30)
            {
                var tags = tagNames.Where(_ => rng.Next(3) == 0).ToArray();
                h.Add(types[rng.Next(types.Length)], rng.Next(-2, 4), tags, ready: rng.Next(10) > 0);
            }
            else if (op < 34 && workerCount < 8)
            {
                var id = $"w{++workerCount}";
                var accepts = types.Where(_ => rng.Next(2) == 0).ToArray();
                h.Register(id, rng.Next(0, 5), accepts);
            }
            else if (op < 50 && Pick(t => t.State == TaskState.Submit) is { } submitted)
            {
                h.Report(submitted.WorkerId!, submitted.Id, WorkerReport.Accepted);
            }
            else if (op < 55 && Pick(t => t.State == TaskState.Submit) is { } refused)
            {
                h.Report(refused.WorkerId!, refused.Id, WorkerReport.Rejected);
                rejected.TryAdd(refused.Id, []);
                rejected[refused.Id].Add(refused.WorkerId!);
            }
            else if (op < 70 && Pick(t => t.OnWorker) is { } done)
            {
                h.Report(done.WorkerId!, done.Id, WorkerReport.Finished, exitCode: rng.Next(-1, 2));
            }
            else if (op < 73 && Pick(t => t.State == TaskState.Run && t.PendingControl == PendingControl.Pause) is { } pausing)
            {
                h.Report(pausing.WorkerId!, pausing.Id, WorkerReport.Paused);
            }
            else if (op < 76 && Pick(t => t.State == TaskState.Pause && t.WorkerId is not null && t.PendingControl == PendingControl.Play) is { } resuming)
            {
                h.Report(resuming.WorkerId!, resuming.Id, WorkerReport.Resumed);
            }
            else if (op < 82 && Pick(t => t.State != TaskState.Terminated) is { } controlled)
            {
                // Refusals are fine here; the invariants are what matter.
                h.State.Control(controlled.Id, (ControlVerb)rng.Next(1, 4), h.Now);
            }
            else if (op < 84)
            {
                var tag = tagNames[rng.Next(tagNames.Length)];
                h.State.SetTagLimit(tag, rng.Next(4) == 0 ? null : rng.Next(0, 6));
            }
            else if (op < 86 && h.State.Workers.Count > 0)
            {
                var worker = h.State.Workers.Keys.ElementAt(rng.Next(h.State.Workers.Count));
                h.State.CommandWorker(worker, rng.Next(2) == 0 ? WorkerAction.Drain : WorkerAction.Undrain);
            }
            else if (op < 88 && h.State.Workers.Values.FirstOrDefault(w => w.Connection is not null && rng.Next(3) == 0) is { } reclaiming)
            {
                // Reconnect with everything it holds: a reclaim changes no task.
                var held = reclaiming.Tasks.Select(id => (id, h[id].State == TaskState.Pause)).ToArray();
                var before = reclaiming.Tasks.ToDictionary(id => id, id => h[id].State);
                Assert.Empty(h.Register(reclaiming.Id, reclaiming.Slots, [.. reclaiming.Types], held));
                foreach (var (id, state) in before)
                {
                    Assert.Equal((state == TaskState.Submit ? TaskState.Run : state, reclaiming.Id), (h[id].State, h[id].WorkerId));
                }

                foreach (var set in rejected.Values)
                {
                    set.Remove(reclaiming.Id);
                }
            }
            else if (op < 90 && h.State.Workers.Values.FirstOrDefault(w => w.Connection is not null && rng.Next(3) == 0) is { } dying)
            {
                // Dies: disconnect, then grace passes while everyone else keeps heartbeating.
                h.Disconnect(dying.Id);
                h.Now += h.Options.Grace;
                foreach (var id in h.State.Workers.Values.Where(w => w.Connection is not null).Select(w => w.Id).ToList())
                {
                    h.Heartbeat(id);
                }

                h.State.Tick(h.Now);
                Assert.False(h.State.Workers.ContainsKey(dying.Id));
            }

            // Terminated tasks lose their refusals, as in Core.
            foreach (var id in rejected.Keys.Where(id => h[id].State == TaskState.Terminated).ToList())
            {
                rejected.Remove(id);
            }

            var runningBefore = tagNames.ToDictionary(t => t, h.State.TagRunning);
            var assigned = h.Assign();
            CheckInvariants(h, rejected, runningBefore, assigned);
        }

        Assert.True(h.State.Count(TaskState.Terminated) > 100, "the random walk should have finished many tasks");
    }

    private static void CheckInvariants(
        Harness h, Dictionary<long, HashSet<string>> rejected, Dictionary<string, int> runningBefore, List<(string Worker, long Task)> assigned)
    {
        var state = h.State;

        // Slots and worker holdings.
        foreach (var worker in state.Workers.Values)
        {
            Assert.True(worker.Load <= worker.Slots, $"{worker.Id} holds {worker.Load} tasks with {worker.Slots} slots");
            var holds = state.Tasks.Values.Where(t => t.OnWorker && t.WorkerId == worker.Id).Select(t => t.Id).ToHashSet();
            Assert.True(holds.SetEquals(worker.Tasks), $"{worker.Id}: table and worker disagree");
        }

        Assert.All(state.Tasks.Values.Where(t => t.OnWorker), t => Assert.True(state.Workers.ContainsKey(t.WorkerId!)));
        Assert.All(state.Tasks.Values.Where(t => t.State is TaskState.Submit or TaskState.Run), t => Assert.NotNull(t.WorkerId));

        // Counters.
        foreach (var s in Enum.GetValues<TaskState>())
        {
            Assert.Equal(state.Tasks.Values.Count(t => t.State == s), state.Count(s));
        }

        Assert.Equal(state.Count(TaskState.Ready), state.ReadyCount);
        foreach (var tag in new[] { "x", "y", "z" })
        {
            var onWorkers = state.Tasks.Values.Count(t => t.OnWorker && t.Tags.Contains(tag));
            Assert.Equal(onWorkers, state.TagRunning(tag));

            // Assignment never pushes a tag past its limit (a limit lowered below the current count only blocks).
            if (state.TagLimits.TryGetValue(tag, out var limit))
            {
                Assert.True(onWorkers <= Math.Max(limit, runningBefore[tag]), $"tag {tag}: {onWorkers} on workers, limit {limit}");
            }
        }

        // Each assignment respects routing and refusals, and they come out best first.
        ReadyQueue.Entry? previous = null;
        foreach (var (workerId, taskId) in assigned)
        {
            var task = state.Tasks[taskId];
            Assert.True(state.Workers[workerId].Accepts(task.Type));
            Assert.False(rejected.GetValueOrDefault(taskId)?.Contains(workerId) ?? false, $"task {taskId} went back to {workerId}, which rejected it");
            var entry = new ReadyQueue.Entry(task.Priority, task.Id);
            Assert.True(previous is null || previous.Value.CompareTo(entry) < 0, $"task {taskId} assigned out of order");
            previous = entry;
        }

        // Work-conserving: after a pass, no ready task could go to a worker with room.
        foreach (var task in state.Tasks.Values.Where(t => t.State == TaskState.Ready))
        {
            var blocked = task.Tags.Any(tag => state.TagLimits.TryGetValue(tag, out var l) && state.TagRunning(tag) >= l);
            if (blocked)
            {
                continue;
            }

            var refusedBy = rejected.GetValueOrDefault(task.Id);
            var taker = state.Workers.Values.FirstOrDefault(w => w.CanTake(task.Type) && !(refusedBy?.Contains(w.Id) ?? false));
            Assert.True(taker is null, $"ready task {task.Id} ({task.Type}) left unassigned while {taker?.Id} could take it");
        }
    }
}
