using System.Buffers.Binary;
using System.Diagnostics;

namespace Tatzelwurm.LoadGen;

/// <summary>What one run does, the same for every target.</summary>
public sealed record Workload
{
    public string Name { get; init; } = "custom";

    /// <summary>Tasks submitted and measured.</summary>
    public int Tasks { get; init; } = 20_000;

    public int Submitters { get; init; } = 1;

    public int Workers { get; init; } = 2;

    /// <summary>Requests (tatzelwurm) or unconfirmed publishes (RabbitMQ) in flight per submitter; 1 = one at a time.</summary>
    public int Window { get; init; } = 100;

    /// <summary>Slots per worker (tatzelwurm) = prefetch (RabbitMQ).</summary>
    public int Prefetch { get; init; } = 100;

    public int PayloadBytes { get; init; } = 200;

    /// <summary>Task duration: 0 returns at once; otherwise an async sleep.</summary>
    public int TaskMs { get; init; }

    /// <summary>Priorities 0..n-1 drawn at random (1 = all equal).</summary>
    public int Priorities { get; init; } = 1;

    /// <summary>Tags t0..t(n-1), one per task round-robin (0 = none).</summary>
    public int Tags { get; init; }

    /// <summary>The submitter waits for every task's result (always in the round-trip workload).</summary>
    public bool WaitResults { get; init; }

    /// <summary>Result payload bytes the worker returns.</summary>
    public int ResultBytes { get; init; } = 16;

    /// <summary>Tasks queued before the measured run starts (not measured; workers process them too).</summary>
    public int Prefill { get; init; }

    /// <summary>
    /// If positive, the submitter does not add <see cref="Tasks"/> measured tasks: after the warm-up
    /// it tops the ready queue up to this many, then adds one unmeasured task per task the workers
    /// finish (in batches), so the queue stays this deep, and the run ends at the workers'
    /// <see cref="Tasks"/>-th completion in the window (tatzelwurm only).
    /// </summary>
    public int KeepQueued { get; init; }

    /// <summary>
    /// Tasks run through the same path before measuring (not with a prefill), so that a fresh
    /// coordinator's JIT (tiered compilation) is not billed to the measured run. The defaults are
    /// what it takes here: after 50,000 throughput or 1,000 round-trip tasks the coordinator's
    /// tiered-compilation thread still used 0.2–0.4 s and 0.4–0.8 s of the measured run.
    /// </summary>
    public int Warmup { get; init; }

    /// <summary>Warm-up tasks: their payload carries sequence -1, so a late one never marks a measured task as run.</summary>
    public bool Unmeasured { get; init; }

    /// <summary>Added to every priority: warm-up tasks run ahead of a prefilled backlog (tatzelwurm only).</summary>
    public int PriorityBoost { get; init; }

    /// <summary>Give up after this long.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);

    public static Workload Throughput => new() { Name = "throughput", Tasks = 20_000, Submitters = 1, Workers = 2, Window = 100, PayloadBytes = 200, Warmup = 200_000 };

    public static Workload RoundTrip => new() { Name = "roundtrip", Tasks = 2_000, Submitters = 1, Workers = 2, Window = 1, PayloadBytes = 200, WaitResults = true, Warmup = 10_000 };

    /// <summary>A payload carrying the task's sequence number (-1 for prefill) in its first 4 bytes.</summary>
    public byte[] Payload(int seq)
    {
        var payload = new byte[Math.Max(4, PayloadBytes)];
        BinaryPrimitives.WriteInt32LittleEndian(payload, Unmeasured ? -1 : seq);
        return payload;
    }

    public static int SeqOf(ReadOnlySpan<byte> payload) => payload.Length >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(payload) : -1;

    public int PriorityOf(int seq) => PriorityBoost + (Priorities <= 1 ? 0 : (int)((uint)(seq * 2654435761u) % (uint)Priorities));

    public IReadOnlyList<string> TagsOf(int seq) => Tags <= 0 ? [] : [$"t{seq % Tags}"];

    /// <summary>
    /// Submitter <paramref name="index"/>'s share of the tasks (every <see cref="Submitters"/>-th
    /// sequence number from its index), <see cref="Window"/> at a time: that many lanes, each sending
    /// its next task as soon as its previous one is done. A lane needs no semaphore or wake-up to
    /// start the next task, so the harness adds as little as it can to what it measures, the same for
    /// every target.
    /// </summary>
    public Task LanesAsync(int index, Func<int, Task> one)
    {
        var next = index - Submitters;
        return Task.WhenAll(Enumerable.Range(0, Math.Max(1, Window)).Select(_ => LaneAsync()));

        async Task LaneAsync()
        {
            for (var seq = Interlocked.Add(ref next, Submitters); seq < Tasks; seq = Interlocked.Add(ref next, Submitters))
            {
                await one(seq);
            }
        }
    }
}

/// <summary>Per-task timestamps (Stopwatch ticks, one clock: submitters and workers share the process).</summary>
public sealed class Timeline(int tasks)
{
    public long[] Sent { get; } = new long[tasks];
    public long[] Acked { get; } = new long[tasks];
    public long[] Run { get; } = new long[tasks];
    public long[] Result { get; } = new long[tasks];

    private long _acked;
    private long _completed;
    private long _results;

    public long AckedCount => Interlocked.Read(ref _acked);

    /// <summary>Tasks a worker finished (including prefill tasks).</summary>
    public long CompletedCount => Interlocked.Read(ref _completed);

    public long ResultCount => Interlocked.Read(ref _results);

    public static long Now => Stopwatch.GetTimestamp();

    public void MarkAcked(int seq)
    {
        Acked[seq] = Now;
        Interlocked.Increment(ref _acked);
    }

    public void MarkRun(int seq)
    {
        if (seq >= 0 && seq < Run.Length)
        {
            Run[seq] = Now;
        }
    }

    public void MarkCompleted() => Interlocked.Increment(ref _completed);

    public void MarkResult(int seq)
    {
        Result[seq] = Now;
        Interlocked.Increment(ref _results);
    }

    public Dictionary<string, Percentiles> Phases(bool results)
    {
        var phases = new Dictionary<string, Percentiles>
        {
            ["add→ack"] = Percentiles.Of(Sent, Acked),
            ["ack→run"] = Percentiles.Of(Acked, Run),
        };
        if (results)
        {
            phases["run→result"] = Percentiles.Of(Run, Result);
            phases["add→result"] = Percentiles.Of(Sent, Result);

            // The round trip ends when the submitter has both the durable acknowledgement and the
            // result (RabbitMQ may deliver the reply before the publisher confirm).
            var done = new long[Result.Length];
            for (var i = 0; i < done.Length; i++)
            {
                done[i] = Acked[i] == 0 || Result[i] == 0 ? 0 : Math.Max(Acked[i], Result[i]);
            }

            phases["round trip"] = Percentiles.Of(Sent, done);
        }

        return phases;
    }
}

/// <summary>Latency percentiles of one phase, in milliseconds.</summary>
public sealed record Percentiles(int Count, double Mean, double P50, double P90, double P99, double Max)
{
    public static Percentiles Of(long[] from, long[] to)
    {
        var values = new List<double>(from.Length);
        for (var i = 0; i < from.Length; i++)
        {
            if (from[i] != 0 && to[i] != 0)
            {
                values.Add((to[i] - from[i]) * 1000.0 / Stopwatch.Frequency);
            }
        }

        if (values.Count == 0)
        {
            return new Percentiles(0, 0, 0, 0, 0, 0);
        }

        values.Sort();
        double At(double q) => values[Math.Min(values.Count - 1, (int)Math.Ceiling(q * values.Count) - 1)];
        return new Percentiles(values.Count, values.Average(), At(0.50), At(0.90), At(0.99), values[^1]);
    }
}

/// <summary>Everything one run measured.</summary>
public sealed record RunResult
{
    public required string Target { get; init; }
    public required string Workload { get; init; }
    public required int Tasks { get; init; }
    public required double Seconds { get; init; }
    public double TasksPerSecond => Tasks / Seconds;

    /// <summary>Tasks the workers finished in the measured window, prefilled ones included (with a backlog more than <see cref="Tasks"/>).</summary>
    public long Completions { get; init; }
    public double CompletionsPerSecond => Completions / Seconds;
    public required Dictionary<string, Percentiles> Latency { get; init; }
    public double ServerCpuSeconds { get; init; }
    public long ServerPeakRssBytes { get; init; }
    public long? ServerFsyncs { get; init; }
    public long ServerWriteBytes { get; init; }
    public double ClientCpuSeconds { get; init; }

    /// <summary>Bytes the load generator allocated in the window (its clients' garbage, a driver of their CPU).</summary>
    public long ClientAllocatedBytes { get; init; }
    public string Store { get; init; } = "";
    public Dictionary<string, double>? ServerCpuByThread { get; init; }

    /// <summary>
    /// CPU of a .NET server's tiered-compilation thread during the measured run (null for RabbitMQ,
    /// whose BEAM compiles at load): near 0 when the warm-up did its job.
    /// </summary>
    public double? ServerJitCpuSeconds => Target == "tatzelwurm" ? ServerCpuByThread?.GetValueOrDefault(".NET Tiered Com") ?? 0 : null;
}
