using BenchmarkDotNet.Attributes;
using Tatzelwurm.Core;

namespace Tatzelwurm.Benchmarks;

/// <summary>
/// The pure state machine, and the same lifecycle through <see cref="CoordinatorState"/> (indexes,
/// counters, dirty tracking): add → assign → accept → finish, the path every task takes.
/// </summary>
[MemoryDiagnoser]
public class TransitionBenchmarks
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UnixEpoch.AddYears(56);
    private readonly NewTask _spec = new(new byte[200], "bench", 0, [], null, true, false);
    private TaskRecord _ready = null!;
    private CoordinatorState _state = null!;
    private readonly object _connection = new();

    [GlobalSetup]
    public void Setup()
    {
        _ready = TaskTransitions.Create(1, _spec, DeliveryPolicy.AtMostOnce, Now);
        // Retention zero and a purge per task keep the table at its steady size; with the default
        // retention every terminated task would stay and the table would grow for the whole run.
        _state = new CoordinatorState(CoordinatorOptions.Default with { Retention = TimeSpan.Zero });
        _state.RegisterWorker("w1", "w1", [], 1, [], _connection, Now);
    }

    /// <summary>Pure transitions only: create, assign, accept, finish.</summary>
    [Benchmark]
    public TaskRecord PureLifecycle()
    {
        var submitted = TaskTransitions.Assign(_ready, "w1", Now).Task!;
        var running = TaskTransitions.Accept(submitted, "w1", Now).Task!;
        return TaskTransitions.WorkerFinished(running, "w1", 0, null, null, Now).Task!;
    }

    /// <summary>One task's whole life in the coordinator's tables (one worker slot, so the queue stays at depth ≤ 1).</summary>
    [Benchmark]
    public int StateLifecycle()
    {
        var task = _state.AddTask(_spec, Now);
        var assigned = _state.Assign(Now);
        _state.WorkerUpdate("w1", task.Id, WorkerReport.Accepted, 0, null, null, Now);
        _state.WorkerUpdate("w1", task.Id, WorkerReport.Finished, 0, null, null, Now);
        _state.Purge(Now);
        _state.TakeBatch();
        _state.TakeChanges();
        _state.TakeOutbox();
        return assigned;
    }
}
