using System.Diagnostics;
using System.Globalization;
using Microsoft.Data.Sqlite;
using Tatzelwurm.Core;
using Tatzelwurm.Storage;

// Measures the SQLite store: recovery time and memory, commit throughput per durability mode, and
// a kill -9 check. Prints figures for docs/benchmarks.md; not a test.
//
//   dotnet run -c Release --project bench/Tatzelwurm.StoreBench -- all
//   ... -- recovery 1000000 | commits [seconds] | crash [rounds]
var command = args.Length > 0 ? args[0] : "all";
var dir = Environment.GetEnvironmentVariable("STOREBENCH_DIR") ?? Path.Combine(Path.GetTempPath(), "tatzelwurm-storebench");
switch (command)
{
    case "all":
        Bench.Recovery(dir, 100_000);
        Bench.Recovery(dir, 1_000_000);
        Bench.Commits(dir, seconds: 5);
        Bench.Crash(dir, rounds: 10);
        break;
    case "recovery":
        Bench.Recovery(dir, Arg(1, 1_000_000));
        break;
    case "commits":
        Bench.Commits(dir, Arg(1, 5));
        break;
    case "crash":
        Bench.Crash(dir, Arg(1, 10));
        break;
    case "load-child":
        Bench.LoadChild(args[1]);
        break;
    case "crash-child":
        Bench.CrashChild(args[1], args[2]);
        break;
    default:
        Console.Error.WriteLine("usage: StoreBench [all | recovery N | commits SECONDS | crash ROUNDS]");
        return 2;
}

return 0;

int Arg(int i, int fallback) => args.Length > i ? int.Parse(args[i], CultureInfo.InvariantCulture) : fallback;

internal static class Bench
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.FromUnixTimeMilliseconds(1_750_000_000_000);

    /// <summary>The recovery workload: 200-byte payload, 2 tags, 3 transitions; a mix of states.</summary>
    public static TaskRecord MakeTask(long id, Random rng)
    {
        var payload = new byte[200];
        rng.NextBytes(payload);
        var state = (id % 10) switch
        {
            < 6 => TaskState.Terminated,
            < 8 => TaskState.Ready,
            _ => TaskState.Run,
        };
        var at = T0.AddMilliseconds(id);
        return new TaskRecord
        {
            Id = id,
            Type = id % 3 == 0 ? "aiida.workchain" : "aiida.calcjob",
            Priority = (int)(id % 5),
            Tags = [$"site-{id % 7}", $"queue-{id % 13}"],
            Payload = payload,
            Policy = DeliveryPolicy.AtLeastOnce,
            State = state,
            ExitCode = state == TaskState.Terminated ? 0 : null,
            WorkerId = state == TaskState.Run ? $"worker-{id % 64}" : null,
            CreatedAt = at,
            UpdatedAt = at.AddSeconds(2),
            History =
            [
                new Transition(TaskState.Created, at, null),
                new Transition(TaskState.Ready, at.AddSeconds(1), "play"),
                new Transition(state, at.AddSeconds(2), state == TaskState.Terminated ? "completed" : null),
            ],
        };
    }

    public static void Recovery(string dir, int count)
    {
        var path = Path.Combine(dir, $"recovery-{count}", "tatzelwurm.db");
        Fresh(path);
        var sw = Stopwatch.StartNew();
        var rng = new Random(1);
        var store = SqliteTaskStore.Open(new SqliteStoreOptions(path));
        const int batchSize = 10_000;
        for (long next = 1; next <= count; next += batchSize)
        {
            var tasks = new List<TaskRecord>(batchSize);
            for (var id = next; id < next + batchSize && id <= count; id++)
            {
                tasks.Add(MakeTask(id, rng));
            }

            store.CommitAsync(new StoreBatch([.. tasks.Select(TaskUpsert.New)], [], [], tasks[^1].Id), default).GetAwaiter().GetResult();
        }

        store.DisposeAsync().AsTask().GetAwaiter().GetResult();
        var write = sw.Elapsed;
        Console.WriteLine($"recovery {count:N0} tasks: wrote in {write.TotalSeconds:F1} s ({count / write.TotalSeconds:N0} tasks/s in batches of {batchSize:N0}); db {new FileInfo(path).Length / 1048576.0:F0} MiB");

        // A fresh process, so the figures are recovery's alone (the file is in the OS page cache).
        for (var run = 1; run <= 3; run++)
        {
            using var child = Process.Start(Self(["load-child", path]))!;
            var line = child.StandardOutput.ReadToEnd().Trim();
            child.WaitForExit();
            Console.WriteLine($"  load run {run}: {line}");
        }
    }

    public static void LoadChild(string path)
    {
        var baseline = Rss();
        var store = SqliteTaskStore.Open(new SqliteStoreOptions(path));
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var snapshot = store.LoadAsync(default).GetAwaiter().GetResult();
        var elapsed = sw.Elapsed;
        var cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu0;
        // Before the forced collections below, which would count too.
        var gcPause = GC.GetTotalPauseDuration();
        var gcCounts = $"{GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}";
        store.DisposeAsync().AsTask().GetAwaiter().GetResult();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var managed = GC.GetTotalMemory(forceFullCollection: true);
        var rss = Rss();
        Console.WriteLine(
            $"{snapshot.Tasks.Count:N0} tasks in {elapsed.TotalMilliseconds:N0} ms (CPU {cpu.TotalMilliseconds:N0} ms); RSS {baseline / 1048576.0:N0} -> {rss / 1048576.0:N0} MiB (peak {PeakRss() / 1048576.0:N0} MiB); managed heap {managed / 1048576.0:N0} MiB ({managed / Math.Max(1, snapshot.Tasks.Count):N0} B/task); GC pauses during load {gcPause.TotalMilliseconds:N0} ms, collections gen0/1/2 {gcCounts}");
        GC.KeepAlive(snapshot);
    }

    public static void Commits(string dir, int seconds)
    {
        Console.WriteLine($"commits: batches of new 200-byte tasks, {seconds} s per row, one writer; rates count time inside CommitAsync");
        Console.WriteLine($"  {"durability",-10} {"batch",5} {"commits/s",10} {"tasks/s",10} {"p50 ms",8} {"p99 ms",8} {"max ms",8}");
        foreach (var durability in new[] { Durability.Full, Durability.Interval, Durability.None })
        {
            foreach (var batchSize in new[] { 1, 16, 256 })
            {
                var path = Path.Combine(dir, "commits", "tatzelwurm.db");
                Fresh(path);
                var rng = new Random(2);
                var store = SqliteTaskStore.Open(new SqliteStoreOptions(path) { Durability = durability });
                var latencies = new List<double>();
                long next = 1;
                var total = Stopwatch.StartNew();
                while (total.Elapsed.TotalSeconds < seconds)
                {
                    var tasks = new List<TaskRecord>(batchSize);
                    for (var i = 0; i < batchSize; i++)
                    {
                        tasks.Add(MakeTask(next++, rng));
                    }

                    var batch = new StoreBatch([.. tasks.Select(TaskUpsert.New)], [], [], next - 1);
                    var sw = Stopwatch.StartNew();
                    store.CommitAsync(batch, default).GetAwaiter().GetResult();
                    latencies.Add(sw.Elapsed.TotalMilliseconds);
                }

                // Time inside CommitAsync only, not building the batches: the store's capacity.
                var elapsed = latencies.Sum() / 1000;
                store.DisposeAsync().AsTask().GetAwaiter().GetResult();
                latencies.Sort();
                Console.WriteLine(
                    $"  {durability.ToString().ToLowerInvariant(),-10} {batchSize,5} {latencies.Count / elapsed,10:N0} {latencies.Count * batchSize / elapsed,10:N0} " +
                    $"{latencies[latencies.Count / 2],8:F2} {latencies[(int)(latencies.Count * 0.99)],8:F2} {latencies[^1],8:F2}");
            }
        }
    }

    /// <summary>Kills a committing child with SIGKILL at random moments and checks every acknowledged task survived.</summary>
    public static void Crash(string dir, int rounds)
    {
        var rng = new Random(3);
        foreach (var mode in new[] { "full", "interval", "none" })
        {
            var path = Path.Combine(dir, "crash-" + mode, "tatzelwurm.db");
            Fresh(path);
            long acked = 0;
            for (var round = 0; round < rounds; round++)
            {
                var psi = Self(["crash-child", path, mode]);
                using var child = Process.Start(psi)!;
                var target = rng.Next(20, 400);
                var seen = 0;
                string? line;
                while (seen < target && (line = child.StandardOutput.ReadLine()) is not null)
                {
                    acked = Math.Max(acked, long.Parse(line, CultureInfo.InvariantCulture));
                    seen++;
                }

                child.Kill(); // SIGKILL on Unix
                // Anything printed before death was acknowledged too.
                while ((line = child.StandardOutput.ReadLine()) is not null)
                {
                    if (long.TryParse(line, CultureInfo.InvariantCulture, out var id))
                    {
                        acked = Math.Max(acked, id);
                    }
                }

                child.WaitForExit();
                Verify(path, acked);
            }

            Console.WriteLine($"crash ({mode}): {rounds} rounds of SIGKILL during commits; all {acked:N0} acknowledged tasks recovered intact, integrity_check ok");
        }
    }

    private static void Verify(string path, long acked)
    {
        using (var c = new SqliteConnection($"Data Source={path};Pooling=false"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "PRAGMA integrity_check";
            if (cmd.ExecuteScalar() as string != "ok")
            {
                throw new InvalidOperationException("integrity_check failed");
            }
        }

        var store = SqliteTaskStore.Open(new SqliteStoreOptions(path));
        var snapshot = store.LoadAsync(default).GetAwaiter().GetResult();
        store.DisposeAsync().AsTask().GetAwaiter().GetResult();
        var byId = snapshot.Tasks.ToDictionary(t => t.Id);
        if (snapshot.LastTaskId < acked)
        {
            throw new InvalidOperationException($"last_task_id {snapshot.LastTaskId} < acknowledged {acked}");
        }

        for (long id = 1; id <= acked; id++)
        {
            if (!byId.TryGetValue(id, out var task) || !task.Payload.Span.SequenceEqual(CrashPayload(id)))
            {
                throw new InvalidOperationException($"acknowledged task {id} lost or damaged");
            }
        }
    }

    public static void CrashChild(string path, string mode)
    {
        var options = new SqliteStoreOptions(path).WithDurability(mode);
        var store = SqliteTaskStore.Open(options);
        var next = store.LoadAsync(default).GetAwaiter().GetResult().LastTaskId + 1;
        var stdout = Console.Out;
        while (true)
        {
            var tasks = new List<TaskRecord>(16);
            for (var i = 0; i < 16; i++, next++)
            {
                tasks.Add(new TaskRecord { Id = next, Type = "crash", Payload = CrashPayload(next), CreatedAt = T0, UpdatedAt = T0 });
            }

            store.CommitAsync(new StoreBatch([.. tasks.Select(TaskUpsert.New)], [], [], next - 1), default).GetAwaiter().GetResult();
            stdout.WriteLine((next - 1).ToString(CultureInfo.InvariantCulture));
            stdout.Flush();
        }
    }

    private static byte[] CrashPayload(long id) => BitConverter.GetBytes(unchecked((ulong)id * 0x9E3779B97F4A7C15UL)).Concat(new byte[100]).ToArray();

    // Runs this program again, whether started as an apphost or as "dotnet StoreBench.dll".
    private static ProcessStartInfo Self(string[] args)
    {
        var host = Environment.ProcessPath!;
        var viaDotnet = Path.GetFileNameWithoutExtension(host) == "dotnet";
        return new ProcessStartInfo(host, viaDotnet ? [typeof(Bench).Assembly.Location, .. args] : args) { RedirectStandardOutput = true };
    }

    private static void Fresh(string path)
    {
        var d = Path.GetDirectoryName(path)!;
        if (Directory.Exists(d))
        {
            Directory.Delete(d, recursive: true);
        }

        Directory.CreateDirectory(d);
    }

    private static long Rss() => ReadStatus("VmRSS:");

    private static long PeakRss() => ReadStatus("VmHWM:");

    private static long ReadStatus(string key)
    {
        var line = File.ReadLines("/proc/self/status").First(l => l.StartsWith(key, StringComparison.Ordinal));
        return long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
    }
}
