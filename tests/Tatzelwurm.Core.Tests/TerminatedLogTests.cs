using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>
/// <see cref="TerminatedLog"/>: every field of a terminated task comes back as it went in, entries
/// leave oldest first across chunk boundaries, and the filters read the entries in place.
/// </summary>
public class TerminatedLogTests
{
    private static readonly TimeSpan East = TimeSpan.FromMinutes(90);
    private static readonly TimeSpan West = TimeSpan.FromHours(-7);

    private static TaskRecord Full(long id = 11) => new()
    {
        Id = id,
        Type = "aiida.calculations:quantumespresso.pw",
        Priority = -4,
        Tags = ["computer:daint", "big", "ünïcode"],
        Payload = new byte[] { 1, 2, 3, 4, 5 },
        Policy = DeliveryPolicy.AtLeastOnce,
        NoReply = true,
        State = TaskState.Terminated,
        ExitCode = ExitCodes.Killed,
        Result = [0, 255, 7],
        Error = "Traceback: ✗ failed",
        WorkerId = "worker-id-1",
        Attempts = 2,
        Layers = 3,
        PendingControl = PendingControl.Kill,
        KillRequestedAt = new DateTimeOffset(2025, 3, 4, 5, 6, 7, West).AddTicks(8),
        Reason = "killed by actioner",
        CreatedAt = new DateTimeOffset(2025, 1, 2, 3, 4, 5, East).AddTicks(123),
        UpdatedAt = new DateTimeOffset(2025, 3, 4, 5, 6, 9, West),
        History =
        [
            new Transition(TaskState.Created, T0, null),
            new Transition(TaskState.Ready, T0.AddSeconds(1).ToOffset(East), "played"),
            new Transition(TaskState.Terminated, T0.AddDays(2), "killed by actioner"),
        ],
    };

    // A terminated task with every optional field left out.
    private static TaskRecord Bare(long id, string type = "t", string[]? tags = null, string? worker = null, DateTimeOffset? at = null) => new()
    {
        Id = id,
        Type = type,
        Tags = tags ?? [],
        State = TaskState.Terminated,
        WorkerId = worker,
        CreatedAt = T0,
        UpdatedAt = at ?? T0,
    };

    [Fact]
    public void TryGet_FullRecord_EveryFieldBackWithoutThePayloadBytes()
    {
        var log = new TerminatedLog();
        var task = Full();

        log.Append(task);

        Assert.True(log.TryGet(task.Id, out var back));
        AssertSame(task with { Payload = default, PayloadSize = task.PayloadSize }, back);
        Assert.Equal(5, back.PayloadSize);
    }

    [Fact]
    public void TryGet_BareRecord_NullsStayNull()
    {
        var log = new TerminatedLog();
        var task = Bare(3) with { ExitCode = null };

        log.Append(task);

        Assert.True(log.TryGet(3, out var back));
        AssertSame(task, back);
        Assert.Null(back.ExitCode);
        Assert.Null(back.Result);
        Assert.Null(back.KillRequestedAt);
    }

    [Fact]
    public void TryGet_ResultLargerThanAChunk_GetsAChunkOfItsOwn()
    {
        var log = new TerminatedLog();
        var big = Bare(2) with { Result = Enumerable.Range(0, 200_000).Select(i => (byte)i).ToArray() };

        log.Append(Bare(1));
        log.Append(big);
        log.Append(Bare(3));

        Assert.True(log.TryGet(2, out var back));
        Assert.Equal(big.Result, back.Result);
        Assert.True(log.TryGet(1, out _));
        Assert.True(log.TryGet(3, out _));
    }

    [Fact]
    public void Append_NotTerminatedOrTwice_Refused()
    {
        var log = new TerminatedLog();
        log.Append(Bare(1));

        Assert.Throws<ArgumentException>(() => log.Append(Task(TaskState.Run, worker: "w", id: 2)));
        Assert.Throws<InvalidOperationException>(() => log.Append(Bare(1)));
        Assert.Equal(1, log.Count);
    }

    [Fact]
    public void RemoveOldest_ManyChunks_LeaveInAppendOrderAndTheRestStayReadable()
    {
        // Enough entries for far more than 64 chunks, so that used-up chunks are also compacted away.
        const int n = 60_000;
        var log = new TerminatedLog();
        for (var i = 1; i <= n; i++)
        {
            log.Append(Bare(i, at: T0.AddSeconds(i)) with { Reason = $"reason {i}" });
        }

        for (var i = 1; i <= n; i++)
        {
            Assert.True(log.TryPeekOldest(out var at, out var id));
            Assert.Equal((T0.AddSeconds(i), (long)i), (at, id));
            log.RemoveOldest();
            Assert.False(log.TryGet(i, out _));
            if (i % 997 == 0)
            {
                Assert.True(log.TryGet(n, out var last));
                Assert.Equal($"reason {n}", last.Reason);
                Assert.True(log.TryGet(i + 1, out var next));
                Assert.Equal($"reason {i + 1}", next.Reason);
            }
        }

        Assert.Equal(0, log.Count);
        Assert.False(log.TryPeekOldest(out _, out _));
        Assert.Empty(log.Records());
    }

    [Fact]
    public void Append_AfterEverythingWasRemoved_ReusesTheLog()
    {
        var log = new TerminatedLog();
        log.Append(Bare(1));
        log.Append(Bare(2));
        log.RemoveOldest();
        log.RemoveOldest();

        log.Append(Bare(3, type: "u"));
        log.Append(Bare(4));

        Assert.Equal([3L, 4], log.Records().Select(t => t.Id));
        Assert.True(log.TryPeekOldest(out _, out var oldest));
        Assert.Equal(3, oldest);
        Assert.Equal([("t", 1), ("u", 1)], log.CountsByType().OrderBy(c => c.Type));
    }

    [Fact]
    public void Append_LargeEntryAfterEverythingWasRemoved_OldestIsTheNewEntry()
    {
        // The emptied head chunk is too small for the next entry: the log must not keep reading it.
        var log = new TerminatedLog();
        log.Append(Bare(1, type: "old"));
        log.RemoveOldest();

        log.Append(Bare(2) with { Result = new byte[100_000] });

        Assert.True(log.TryPeekOldest(out _, out var oldest));
        Assert.Equal(2, oldest);
        Assert.Equal([("t", 1)], log.CountsByType());
        log.RemoveOldest();
        Assert.Equal(0, log.Count);
        Assert.False(log.TryPeekOldest(out _, out _));
        Assert.Empty(log.CountsByType());
    }

    [Fact]
    public void AppendAndRemoveInterleaved_ManyChunks_FifoAndEveryKeptEntryReadable()
    {
        // Appends and removals take turns, with results that sometimes need a chunk of their own, so
        // the head catches up with the tail, chunks are dropped and compacted while others are written.
        var log = new TerminatedLog();
        var kept = new Queue<long>();
        var next = 1L;
        for (var round = 0; round < 400; round++)
        {
            for (var i = 0; i < 150 + (round % 7 * 40); i++, next++)
            {
                var result = next % 997 == 0 ? new byte[70_000 + (int)(next % 5)] : new byte[(int)(next % 40)];
                log.Append(Bare(next, at: T0.AddTicks(next)) with { Result = result, Reason = $"r{next}" });
                kept.Enqueue(next);
            }

            for (var i = 0; i < 150 + ((round + 3) % 7 * 40) && kept.Count > 0; i++)
            {
                Assert.True(log.TryPeekOldest(out var at, out var id));
                Assert.Equal((T0.AddTicks(kept.Peek()), kept.Dequeue()), (at, id));
                log.RemoveOldest();
            }

            foreach (var id in new[] { kept.FirstOrDefault(), kept.LastOrDefault() }.Where(id => id > 0))
            {
                Assert.True(log.TryGet(id, out var task));
                Assert.Equal(($"r{id}", (int)(id % 997 == 0 ? 70_000 + (id % 5) : id % 40)), (task.Reason, task.Result!.Length));
            }

            Assert.Equal(kept.Count, log.Count);
        }

        Assert.Equal(kept, log.Records().Select(t => t.Id));
    }

    [Fact]
    public void TryGet_EmptyValues_StayEmptyNotNull()
    {
        var log = new TerminatedLog();
        var task = Bare(5, tags: [""]) with { Result = [], Error = "", Reason = "", ExitCode = 0 };

        log.Append(task);

        Assert.True(log.TryGet(5, out var back));
        AssertSame(task, back);
        Assert.Equal((0, "", "", 0), (back.Result!.Length, back.Error, back.Reason, back.ExitCode));
        Assert.Equal([""], back.Tags);
    }

    [Fact]
    public void Matching_TypeTagWorkerAndState_ReadFromTheEntries()
    {
        var log = new TerminatedLog();
        log.Append(Bare(1, type: "sync", tags: ["big"], worker: "id-a"));
        log.Append(Bare(2, type: "async", tags: ["small", "big"], worker: "id-b"));
        log.Append(Bare(3, type: "sync", tags: ["small"]));
        var workers = new Dictionary<string, WorkerRecord> { ["id-a"] = new() { Id = "id-a", Name = "alpha" } };

        long[] Ids(TaskFilter filter) => log.Matching(filter, workers).Order().ToArray();

        Assert.Equal([1L, 2, 3], Ids(new TaskFilter()));
        Assert.Equal([1L, 2, 3], Ids(new TaskFilter(State: TaskState.Terminated)));
        Assert.Empty(Ids(new TaskFilter(State: TaskState.Ready)));
        Assert.Equal([1L, 3], Ids(new TaskFilter(Type: "sync")));
        Assert.Equal([1L, 2], Ids(new TaskFilter(Tag: "big")));
        Assert.Equal([3L], Ids(new TaskFilter(Type: "sync", Tag: "small")));
        Assert.Equal([1L], Ids(new TaskFilter(Worker: "alpha")));
        Assert.Equal([2L], Ids(new TaskFilter(Worker: "id-b")));
        Assert.Empty(Ids(new TaskFilter(Type: "never-seen")));
        Assert.Empty(Ids(new TaskFilter(Tag: "never-seen")));
        Assert.Empty(Ids(new TaskFilter(Worker: "never-seen")));
    }

    [Fact]
    public void CountsByType_FollowAppendsAndRemovals()
    {
        var log = new TerminatedLog();
        log.Append(Bare(1, type: "a", tags: ["a"]));
        log.Append(Bare(2, type: "b"));
        log.Append(Bare(3, type: "a"));

        log.RemoveOldest();

        // A tag named like a type is not counted as one.
        Assert.Equal([("a", 1), ("b", 1)], log.CountsByType().OrderBy(c => c.Type));
    }

    [Fact]
    public void State_FinishedTask_MovesToTheLogAndTheTableStillShowsIt()
    {
        var h = new Harness();
        h.Register("w1");
        var id = h.Running("w1");

        h.Report("w1", id, WorkerReport.Finished, result: [7]);

        Assert.False(h.State.LiveTasks.ContainsKey(id));
        Assert.True(h.State.Terminated.Contains(id));
        Assert.True(h.State.Tasks.ContainsKey(id));
        Assert.Single(h.State.Tasks);
        Assert.Equal([id], h.State.Tasks.Keys);
        Assert.Equal([7], h[id].Result);
        Assert.Equal([TaskState.Ready, TaskState.Submit, TaskState.Run, TaskState.Terminated], h[id].History.Select(t => t.State));
        Assert.Equal(1, h.State.CountsByType()["t"][(int)TaskState.Terminated]);
        Assert.NotNull(h.State.Control(id, ControlVerb.Kill, h.Now));
    }

    [Fact]
    public void State_PurgedThenALargeResult_PurgesNothingTwiceAndKeepsTheCount()
    {
        var h = new Harness(CoordinatorOptions.Default with { Retention = TimeSpan.FromHours(1) });
        h.Register("w1");
        var first = h.Running("w1");
        h.Report("w1", first, WorkerReport.Finished);
        h.Now += TimeSpan.FromHours(1);
        Assert.Equal(1, h.State.Purge(h.Now));
        h.State.TakeBatch();

        var second = h.Running("w1");
        h.Report("w1", second, WorkerReport.Finished, result: new byte[100_000]);

        Assert.Equal(0, h.State.Purge(h.Now));
        Assert.Equal(1, h.State.Count(TaskState.Terminated));
        Assert.True(h.State.Terminated.TryPeekOldest(out var at, out var oldest));
        Assert.Equal((h.Now, second), (at, oldest));
        Assert.DoesNotContain(h.State.TakeBatch().Upserts, u => u.Task.Id == first);
    }

    private static void AssertSame(TaskRecord expected, TaskRecord actual)
    {
        Assert.Equivalent(expected, actual, strict: true);
        // Equivalent compares instants; the offsets must come back too.
        Assert.True(expected.CreatedAt.EqualsExact(actual.CreatedAt));
        Assert.True(expected.UpdatedAt.EqualsExact(actual.UpdatedAt));
        Assert.Equal(expected.KillRequestedAt?.Offset, actual.KillRequestedAt?.Offset);
        Assert.Equal(expected.History.Select(t => t.At.Offset), actual.History.Select(t => t.At.Offset));
    }
}
