using BenchmarkDotNet.Attributes;
using Tatzelwurm.Core;
using Tatzelwurm.Storage;

namespace Tatzelwurm.Benchmarks;

/// <summary>
/// One group commit of <see cref="BatchSize"/> task after-images, as the writer hands it to the store
/// (SQLite: one transaction and, durability full, one fsync): new ready tasks with 200-byte payloads
/// (<see cref="Commit"/>), or one more transition of stored tasks (<see cref="Transition"/>).
/// </summary>
[MemoryDiagnoser]
public class StoreBenchmarks
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UnixEpoch.AddYears(56);
    private ITaskStore _store = null!;
    // Tasks stored at setup, which Transition cycles through.
    private const int IdWindow = 100_000;
    private long _nextId;
    private long _nextTransition;
    private TaskRecord[] _stored = [];

    [Params(1, 100, 1000)]
    public int BatchSize { get; set; }

    /// <summary>memory, or sqlite with the default durability (full: fsync in every commit) in a temporary directory.</summary>
    [Params("memory", "sqlite")]
    public string Store { get; set; } = "memory";

    private string? _directory;

    [GlobalSetup]
    public void Setup()
    {
        _store = Store switch
        {
            "memory" => new InMemoryTaskStore(),
            "sqlite" => SqliteTaskStore.Open(new SqliteStoreOptions(Path.Combine(_directory = Directory.CreateTempSubdirectory("tw-bench-").FullName, "tatzelwurm.db"))),
            _ => throw new ArgumentException(Store),
        };
        _stored = new TaskRecord[IdWindow];
        for (var i = 0; i < IdWindow; i++)
        {
            _stored[i] = TaskTransitions.Create(i + 1, new NewTask(new byte[200], "bench", 0, ["gpu"], null, true, false), DeliveryPolicy.AtMostOnce, Now);
        }

        foreach (var chunk in _stored.Chunk(10_000))
        {
            _store.CommitAsync(new StoreBatch([.. chunk.Select(TaskUpsert.New)], [], [], IdWindow), CancellationToken.None).GetAwaiter().GetResult();
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _store.DisposeAsync().AsTask().GetAwaiter().GetResult();
        if (_directory is not null)
        {
            Directory.Delete(_directory, recursive: true);
        }
    }

    [Benchmark]
    public Task Commit()
    {
        var tasks = new List<TaskUpsert>(BatchSize);
        for (var i = 0; i < BatchSize; i++)
        {
            // Fresh ids after the transition window: the table grows as with a backlog of adds
            // (new tasks are never rewritten whole; transitions are the other benchmark).
            var id = IdWindow + ++_nextId;
            tasks.Add(TaskUpsert.New(TaskTransitions.Create(id, new NewTask(new byte[200], "bench", 0, [], null, true, false), DeliveryPolicy.AtMostOnce, Now)));
        }

        return _store.CommitAsync(new StoreBatch(tasks, [], [], IdWindow + _nextId), CancellationToken.None);
    }

    [Benchmark]
    public Task Transition()
    {
        var tasks = new List<TaskUpsert>(BatchSize);
        for (var i = 0; i < BatchSize; i++)
        {
            // Ready <-> pause and back: a state change with one history entry more, every task in
            // the window in turn (histories grow by one per pass over the window).
            var slot = (int)(_nextTransition++ % IdWindow);
            var prev = _stored[slot];
            var to = prev.State == TaskState.Ready ? TaskState.Pause : TaskState.Ready;
            var next = prev with { State = to, UpdatedAt = Now, History = [.. prev.History, new Transition(to, Now, "bench")] };
            _stored[slot] = next;
            tasks.Add(new TaskUpsert(next, prev.History.Count));
        }

        return _store.CommitAsync(new StoreBatch(tasks, [], [], IdWindow), CancellationToken.None);
    }
}
