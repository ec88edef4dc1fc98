using BenchmarkDotNet.Attributes;
using Tatzelwurm.Core;
using Tatzelwurm.Storage;

namespace Tatzelwurm.Benchmarks;

/// <summary>
/// One group commit of <see cref="BatchSize"/> task after-images (new ready tasks, 200-byte payloads),
/// as the writer hands it to the store (SQLite: one transaction and, durability full, one fsync).
/// </summary>
[MemoryDiagnoser]
public class StoreBenchmarks
{
    private static readonly DateTimeOffset Now = DateTimeOffset.UnixEpoch.AddYears(56);
    private ITaskStore _store = null!;
    private const int IdWindow = 100_000;
    private long _nextId;

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
            // Ids cycle through a window so the store stays bounded: later commits replace earlier rows,
            // as state changes do in the coordinator.
            var id = (_nextId++ % IdWindow) + 1;
            tasks.Add(TaskUpsert.New(TaskTransitions.Create(id, new NewTask(new byte[200], "bench", 0, [], null, true, false), DeliveryPolicy.AtMostOnce, Now)));
        }

        return _store.CommitAsync(new StoreBatch(tasks, [], [], IdWindow), CancellationToken.None);
    }
}
