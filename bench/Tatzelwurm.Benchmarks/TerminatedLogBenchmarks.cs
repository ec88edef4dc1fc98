using BenchmarkDotNet.Attributes;
using Tatzelwurm.Core;

namespace Tatzelwurm.Benchmarks;

/// <summary>
/// What keeping a terminated task in the <see cref="TerminatedLog"/> costs: appending one as it
/// terminates (encode, index), purging it, and decoding it again for a read (show, wait). The task
/// is shaped like a finished benchmark task: four transitions, a 16-byte result, a worker.
/// </summary>
[MemoryDiagnoser]
public class TerminatedLogBenchmarks
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UnixEpoch.AddYears(56);
    private readonly TerminatedLog _log = new();
    private TaskRecord _finished = null!;
    private long _nextId;

    [GlobalSetup]
    public void Setup()
    {
        var ready = TaskTransitions.Create(1, new NewTask(new byte[200], "bench", 0, [], null, true, false), DeliveryPolicy.AtMostOnce, Now);
        var submitted = TaskTransitions.Assign(ready, "worker-1", Now.AddMilliseconds(1)).Task!;
        var running = TaskTransitions.Accept(submitted, "worker-1", Now.AddMilliseconds(2)).Task!;
        _finished = TaskTransitions.WorkerFinished(running, "worker-1", 0, new byte[16], null, Now.AddMilliseconds(3)).Task!;
        // A log of 100,000 entries to read from, kept at that size by AppendThenPurge.
        for (_nextId = 1; _nextId <= 100_000; _nextId++)
        {
            _log.Append(_finished with { Id = _nextId });
        }
    }

    /// <summary>One task terminates and the oldest is purged: the log's steady state.</summary>
    [Benchmark]
    public int AppendThenPurge()
    {
        _log.Append(_finished with { Id = _nextId++ });
        _log.RemoveOldest();
        return _log.Count;
    }

    /// <summary>Decoding one entry back into a record.</summary>
    [Benchmark]
    public TaskRecord Read() => _log.TryGet(_nextId - 50_000, out var task) ? task : throw new InvalidOperationException();
}
