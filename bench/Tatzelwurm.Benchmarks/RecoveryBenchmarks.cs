using BenchmarkDotNet.Attributes;
using Tatzelwurm.Core;

namespace Tatzelwurm.Benchmarks;

/// <summary>
/// The coordinator's share of a restart: <see cref="CoordinatorState.Load"/> of a snapshot with
/// <see cref="Tasks"/> tasks (90% ready, 10% terminated), after the store has read them.
/// </summary>
[MemoryDiagnoser]
public class RecoveryBenchmarks
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UnixEpoch.AddYears(56);
    private StoreSnapshot _snapshot = StoreSnapshot.Empty;

    [Params(100_000, 1_000_000)]
    public int Tasks { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(7);
        var tasks = new List<TaskRecord>(Tasks);
        for (var i = 1; i <= Tasks; i++)
        {
            var task = TaskTransitions.Create(i, new NewTask(new byte[200], "bench", random.Next(4), [], null, true, false), DeliveryPolicy.AtMostOnce, Now.AddMilliseconds(i));
            if (i % 10 == 0)
            {
                task = task with { State = TaskState.Terminated, ExitCode = 0, UpdatedAt = Now.AddMilliseconds(Tasks - i) };
            }

            tasks.Add(task);
        }

        _snapshot = new StoreSnapshot(tasks, new Dictionary<string, int>(), Tasks);
    }

    [Benchmark]
    public int Load()
    {
        var state = new CoordinatorState(CoordinatorOptions.Default);
        state.Load(_snapshot, Now);
        return state.ReadyCount;
    }
}
