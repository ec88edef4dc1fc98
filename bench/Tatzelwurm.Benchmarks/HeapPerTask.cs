using System.Globalization;
using System.Runtime.CompilerServices;
using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using Tatzelwurm.Storage;
using CoreDeliveryPolicy = Tatzelwurm.Core.DeliveryPolicy;
using WireDeliveryPolicy = Tatzelwurm.Protocol.DeliveryPolicy;

namespace Tatzelwurm.Benchmarks;

/// <summary>
/// Managed heap retained per queued task, and where it goes (docs/benchmarks.md, "Scale"); then per
/// terminated task (assigned, finished with a small result, kept until the retention purge). Tasks
/// shaped like the scale run's prefill (200-byte payload, type "bench", priority 0, no tags) reach
/// <see cref="CoordinatorState"/> the way the coordinator's do: encoded and decoded as
/// <see cref="AddTasks"/> frames of 1,000, or written to and recovered from the SQLite store. Each
/// structure is then rebuilt on its own to split the total. GC.GetTotalMemory(true) around each
/// step; not a BenchmarkDotNet benchmark because it measures what stays, not what is allocated.
///
///   dotnet run -c Release --project bench/Tatzelwurm.Benchmarks -- heap [N]
/// </summary>
public static class HeapPerTask
{
    private const int Batch = 1000;
    private const int ResultBytes = 16;
    private static readonly DateTimeOffset Now = DateTimeOffset.FromUnixTimeMilliseconds(1_750_000_000_000);

    public static async Task RunAsync(int n)
    {
        Console.WriteLine($"managed heap retained per task, N = {n:N0} (bytes per task)");

        var (total, records) = FillAndDropState(n);
        var indexes = total - (GC.GetTotalMemory(true) - ArrayBytes(n) - Baseline);
        Row("CoordinatorState after AddTasks frames (total)", total, n);
        Row("  task table and ready index (total minus the records)", indexes, n);
        Row("    Dictionary<long, TaskRecord> (task table), alone", Retained(() => TaskTable(records[0], n)), n);
        Row("    ReadySet (ready index of the type), alone", Retained(() => ReadyIndex(n)), n);

        // Each part of a record: its size alone (N built) times the share of tasks with their own.
        var first = records[0];
        Row("  TaskRecord objects (shallow)", Retained(() => Records(first, n)) - ArrayBytes(n), n);
        Part("payload arrays", records, r => MemoryOwner(r.Payload), () => Payloads(n));
        Part($"History ({first.History.GetType().Name} of {nameof(Transition)})", records, r => r.History, () => Histories(n));
        Part("Type strings", records, r => r.Type, () => Strings(first.Type, n));
        Part($"Tags ({first.Tags.GetType().Name})", records, r => r.Tags, () => EmptyTags(n));
        GC.KeepAlive(records);

        var recovered = await RecoverFromSqliteAsync(n, finish: false);
        Row("CoordinatorState after recovery from SQLite (total)", recovered, n);

        Console.WriteLine($"terminated tasks (assigned, finished with a {ResultBytes}-byte result, kept for retention)");
        Row("CoordinatorState after AddTasks frames and finishing (total)", FillAndDropTerminated(n), n);
        Row("CoordinatorState after recovery from SQLite (total)", await RecoverFromSqliteAsync(n, finish: true), n);
    }

    private static long Baseline { get; set; }

    // Not inlined, so that no stack slot keeps the state alive once it returns.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static (long Total, TaskRecord[] Records) FillAndDropState(int n)
    {
        Baseline = GC.GetTotalMemory(true);
        var state = new CoordinatorState(CoordinatorOptions.Default);
        AddThroughFrames(state, n);
        var total = GC.GetTotalMemory(true) - Baseline;
        return (total, state.Tasks.Values.ToArray());
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long FillAndDropTerminated(int n)
    {
        var before = GC.GetTotalMemory(true);
        var state = new CoordinatorState(CoordinatorOptions.Default);
        AddThroughFrames(state, n, finish: true);
        var after = GC.GetTotalMemory(true);
        GC.KeepAlive(state);
        return after - before;
    }

    private static void Part<T>(string what, TaskRecord[] records, Func<TaskRecord, T> select, Func<object> buildN)
        where T : class?
    {
        var distinct = records.Select(select).Distinct(ReferenceEqualityComparer.Instance).Count();
        var alone = Retained(buildN) - ArrayBytes(records.Length);
        Row($"  {what}: {distinct:N0} distinct ({(double)alone / records.Length:0.0} each)", alone * distinct / records.Length, records.Length);
    }

    private static void AddThroughFrames(CoordinatorState state, int n, bool finish = false)
    {
        if (finish)
        {
            Register(state);
        }

        var payload = new byte[200];
        for (var start = 0; start < n; start += Batch)
        {
            var specs = Enumerable.Range(start, Math.Min(Batch, n - start))
                .Select(_ => new TaskSpec(payload, "bench", 0, [], WireDeliveryPolicy.Default, true, false))
                .ToList();
            var frame = FrameCodec.EncodeFrame(new AddTasks(1, specs));
            var decoded = (AddTasks)FrameCodec.DecodeFrame(frame);
            foreach (var spec in decoded.Tasks)
            {
                // As Tatzelwurm.Server's Mapping.ToNewTask.
                state.AddTask(new NewTask(spec.Payload ?? [], spec.Type, spec.Priority, spec.Tags ?? [], null, spec.Ready, spec.NoReply), Now);
            }

            if (finish)
            {
                RunToEnd(state);
            }

            // The coordinator takes these after every loop iteration.
            state.TakeBatch();
            state.TakeChanges();
            state.TakeOutbox();
        }
    }

    // One worker with a slot per task of a batch, so that every batch runs to its end.
    private static void Register(CoordinatorState state) =>
        state.RegisterWorker("heap-worker", "heap-worker", [], Batch, [], new object(), Now);

    // Assigns the ready tasks and finishes each with its own result array, as a worker's report
    // decoded off the wire would.
    private static void RunToEnd(CoordinatorState state)
    {
        state.Assign(Now);
        foreach (var message in state.TakeOutbox())
        {
            var id = message.Task!.Id;
            Check(state.WorkerUpdate("heap-worker", id, WorkerReport.Accepted, 0, null, null, Now));
            Check(state.WorkerUpdate("heap-worker", id, WorkerReport.Finished, ExitCodes.Completed, new byte[ResultBytes], null, Now));
        }

        static void Check(Rejection? rejection)
        {
            if (rejection is not null)
            {
                throw new InvalidOperationException(rejection.Message);
            }
        }
    }

    private static async Task<long> RecoverFromSqliteAsync(int n, bool finish)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"tw-heap-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            var options = new SqliteStoreOptions(Path.Combine(dir, "tasks.db")) { Durability = Durability.None };
            var writer = new CoordinatorState(CoordinatorOptions.Default);
            if (finish)
            {
                Register(writer);
            }

            await using (var store = SqliteTaskStore.Open(options))
            {
                var payload = new byte[200];
                for (var start = 0; start < n; start += Batch)
                {
                    for (var i = start; i < Math.Min(n, start + Batch); i++)
                    {
                        writer.AddTask(new NewTask(payload, "bench", 0, [], null, true, false), Now);
                    }

                    if (finish)
                    {
                        RunToEnd(writer);
                    }

                    await store.CommitAsync(writer.TakeBatch(), CancellationToken.None);
                    writer.TakeChanges();
                    writer.TakeOutbox();
                }
            }

            writer = null;
            GC.KeepAlive(writer);
            var before = GC.GetTotalMemory(true);
            var state = await LoadAsync(options);
            var after = GC.GetTotalMemory(true);
            GC.KeepAlive(state);
            return after - before;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // In a method of its own: the awaited Task<StoreSnapshot> (and with it every loaded record)
    // stays referenced from the awaiting method's state machine until that method returns.
    private static async Task<CoordinatorState> LoadAsync(SqliteStoreOptions options)
    {
        var state = new CoordinatorState(CoordinatorOptions.Default);
        await using var store = SqliteTaskStore.Open(options);
        state.Load(await store.LoadAsync(CancellationToken.None), Now);
        return state;
    }

    private static TaskRecord[] Records(TaskRecord template, int n)
    {
        var records = new TaskRecord[n];
        for (var i = 0; i < n; i++)
        {
            records[i] = template with { Id = i + 1 };
        }

        return records;
    }

    private static byte[][] Payloads(int n)
    {
        var payloads = new byte[n][];
        for (var i = 0; i < n; i++)
        {
            payloads[i] = new byte[200];
        }

        return payloads;
    }

    private static IReadOnlyList<Transition>[] Histories(int n)
    {
        var spec = new NewTask(Array.Empty<byte>(), "bench", 0, [], null, true, false);
        var histories = new IReadOnlyList<Transition>[n];
        for (var i = 0; i < n; i++)
        {
            histories[i] = TaskTransitions.Create(i + 1, spec, CoreDeliveryPolicy.AtMostOnce, Now).History;
        }

        return histories;
    }

    private static string[] Strings(string s, int n)
    {
        var strings = new string[n];
        for (var i = 0; i < n; i++)
        {
            strings[i] = new string(s.AsSpan());
        }

        return strings;
    }

    private static IReadOnlyList<string>[] EmptyTags(int n)
    {
        // What the decoder yields for an empty tag array, once per task.
        var frame = FrameCodec.EncodeFrame(new AddTasks(1, [new TaskSpec([], "bench", 0, [], WireDeliveryPolicy.Default, true, false)]));
        var tags = new IReadOnlyList<string>[n];
        for (var i = 0; i < n; i++)
        {
            tags[i] = ((AddTasks)FrameCodec.DecodeFrame(frame)).Tasks[0].Tags;
        }

        return tags;
    }

    private static Dictionary<long, TaskRecord> TaskTable(TaskRecord record, int n)
    {
        var table = new Dictionary<long, TaskRecord>();
        for (var i = 0; i < n; i++)
        {
            table[i + 1] = record;
        }

        return table;
    }

    private static ReadySet ReadyIndex(int n)
    {
        var set = new ReadySet();
        for (var i = 0; i < n; i++)
        {
            set.Add(new ReadyQueue.Entry(0, i + 1));
        }

        return set;
    }

    private static object? MemoryOwner(ReadOnlyMemory<byte> memory) =>
        System.Runtime.InteropServices.MemoryMarshal.TryGetArray(memory, out var segment) ? segment.Array : null;

    private static long ArrayBytes(int n) => 24 + (8L * n);

    // Bytes that stay reachable from what build returns.
    private static long Retained(Func<object?> build)
    {
        var before = GC.GetTotalMemory(true);
        var built = build();
        var after = GC.GetTotalMemory(true);
        GC.KeepAlive(built);
        return after - before;
    }

    private static void Row(string what, long bytes, int n) =>
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{(double)bytes / n,8:0.0}  {what}"));
}
