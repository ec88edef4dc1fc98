using BenchmarkDotNet.Attributes;
using Tatzelwurm.Core;

namespace Tatzelwurm.Benchmarks;

/// <summary>
/// The assigner with <see cref="Queued"/> ready tasks: one measured call of
/// <see cref="CoordinatorState.Assign"/> hands out <see cref="Batch"/> tasks to a worker with that many
/// free slots. Between iterations the worker finishes them and as many new tasks are added, so the
/// queue depth stays at <see cref="Queued"/>. The cost per assignment should grow like log n.
/// </summary>
// One invocation per iteration (the queue is refilled between iterations), so the short job's two
// warmups would leave the first parameter values running tier-0 code: warm up longer here.
[MemoryDiagnoser]
[WarmupCount(25)]
[IterationCount(15)]
public class AssignBenchmarks
{
    private const int Batch = 1000;
    private static readonly DateTimeOffset Now = DateTimeOffset.UnixEpoch.AddYears(56);
    private readonly NewTask _spec = new(new byte[200], "bench", 0, [], null, true, false);
    private readonly object _connection = new();
    private CoordinatorState _state = null!;
    private List<long> _held = [];

    [Params(1_000, 10_000, 100_000, 1_000_000)]
    public int Queued { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _state = new CoordinatorState(CoordinatorOptions.Default);
        var random = new Random(7);
        for (var i = 0; i < Queued; i++)
        {
            // A few priorities so the ordered set is not a pure append.
            _state.AddTask(_spec with { Priority = random.Next(4) }, Now);
        }

        _state.RegisterWorker("w1", "w1", [], Batch, [], _connection, Now);
        Drain();
    }

    [IterationSetup]
    public void Refill()
    {
        foreach (var id in _held)
        {
            _state.WorkerUpdate("w1", id, WorkerReport.Accepted, 0, null, null, Now);
            _state.WorkerUpdate("w1", id, WorkerReport.Finished, 0, null, null, Now);
        }

        for (var i = 0; i < _held.Count; i++)
        {
            _state.AddTask(_spec with { Priority = i & 3 }, Now);
        }

        _held = [];
        Drain();
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public int Assign()
    {
        var assigned = _state.Assign(Now);
        foreach (var message in _state.TakeOutbox())
        {
            _held.Add(message.Task!.Id);
        }

        return assigned;
    }

    private void Drain()
    {
        _state.TakeBatch();
        _state.TakeChanges();
        _state.TakeOutbox();
    }
}
