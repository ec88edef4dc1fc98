using Tatzelwurm.Client;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.LoadGen;

/// <summary>
/// tatzelwurm: a fresh coordinator process per run (its own data directory, the store given or the
/// coordinator's default), workers are <see cref="Worker"/> runners of the C# client library and
/// submitters <see cref="TatzelwurmClient"/>s, each on its own TCP connection.
/// </summary>
public sealed class TatzelwurmTarget(string dll, string? store, IReadOnlyList<string> coordinatorArgs, CoordinatorProcess? existing = null) : ITarget
{
    private const string TaskType = "bench";
    private const int ReadyState = 1; // TaskState.Ready on the wire (docs/protocol.md)
    private readonly List<Worker> _workers = [];
    private readonly List<Task> _workerRuns = [];
    private readonly CancellationTokenSource _stopWorkers = new();
    private CoordinatorProcess? _coordinator;
    private Workload _workload = Workload.Throughput;
    private Timeline _timeline = new(0);
    private string _dataDirectory = "";
    private byte[] _result = [];
    private long _completedBase;
    private Task? _refill;

    public string Name => "tatzelwurm";

    public string Store { get; private set; } = store ?? "default";

    public int ServerPid => _coordinator?.Pid ?? 0;

    public CoordinatorProcess? Coordinator => _coordinator;

    public ConnectionOptions Connection => new()
    {
        Server = _coordinator!.Server,
        Token = _coordinator.Token,
        ClientName = "loadgen",
        ConnectTimeout = TimeSpan.FromSeconds(30),
    };

    public async Task PrepareAsync(Workload workload, Timeline timeline, CancellationToken cancellationToken)
    {
        _workload = workload;
        _timeline = timeline;
        _result = new byte[workload.ResultBytes];
        if (existing is not null)
        {
            // A coordinator the caller started and filled (scale runs); the caller owns and stops it.
            _coordinator = existing;
        }
        else
        {
            _dataDirectory = Path.Combine(Path.GetTempPath(), $"tw-loadgen-{Environment.ProcessId}-{Guid.NewGuid():N}");
            _coordinator = await CoordinatorProcess.StartAsync(dll, _dataDirectory, store, coordinatorArgs, TimeSpan.FromSeconds(60));
        }

        Store = DescribeStore(_coordinator.Log) ?? Store;
        if (workload.Prefill > 0 && existing is null)
        {
            await PrefillAsync(Connection, workload, cancellationToken);
        }

        await StartWorkersAsync(workload.Workers, workload.Prefetch, cancellationToken);
    }

    public async Task StartWorkersAsync(int count, int slots, CancellationToken cancellationToken)
    {
        var baseIndex = _workers.Count;
        for (var i = 0; i < count; i++)
        {
            var worker = new Worker(
                new WorkerOptions
                {
                    Connection = Connection with { ClientName = "loadgen-worker" },
                    WorkerId = $"loadgen-{Environment.ProcessId}-{baseIndex + i}",
                    Name = $"loadgen-{baseIndex + i}",
                    Types = [TaskType],
                    Slots = slots,
                },
                HandleAsync);
            _workers.Add(worker);
            _workerRuns.Add(Task.Run(() => worker.RunAsync(_stopWorkers.Token), CancellationToken.None));
        }

        await using var admin = await TatzelwurmClient.ConnectAsync(Connection, cancellationToken);
        while ((await admin.WorkersAsync(cancellationToken)).Count(w => w.State == "connected") < _workers.Count)
        {
            await Task.Delay(20, cancellationToken);
        }
    }

    /// <summary>Adds prefill tasks (sequence -1: not measured) in batches of 1,000, 8 batches in flight.</summary>
    public static async Task PrefillAsync(ConnectionOptions connection, Workload workload, CancellationToken cancellationToken, Action<long>? progress = null)
    {
        await using var client = await TatzelwurmClient.ConnectAsync(connection, cancellationToken);
        const int Batch = 1000;
        using var window = new SemaphoreSlim(8);
        var pending = new List<Task>();
        long added = 0;
        for (var start = 0; start < workload.Prefill; start += Batch)
        {
            var specs = Unmeasured(workload, start, Math.Min(Batch, workload.Prefill - start));
            await window.WaitAsync(cancellationToken);
            pending.Add(AddAsync(specs));
        }

        await Task.WhenAll(pending);

        async Task AddAsync(List<TaskSpec> specs)
        {
            try
            {
                await client.AddAsync(specs, cancellationToken);
                progress?.Invoke(Interlocked.Add(ref added, specs.Count));
            }
            finally
            {
                window.Release();
            }
        }
    }

    public async Task SubmitAsync(CancellationToken cancellationToken)
    {
        if (_workload.KeepQueued > 0)
        {
            await KeptAsync(cancellationToken);
            return;
        }

        var submitters = Enumerable.Range(0, _workload.Submitters).Select(k => SubmitterAsync(k, cancellationToken)).ToList();
        await Task.WhenAll(submitters);
    }

    // Unmeasured tasks (sequence -1) spread over the workload's priorities and tags by their index.
    private static List<TaskSpec> Unmeasured(Workload workload, long first, int count)
    {
        var payload = workload.Payload(-1);
        return Enumerable.Range(0, count)
            .Select(k => (int)(first + k))
            .Select(i => new TaskSpec(payload, TaskType, workload.PriorityOf(i), workload.TagsOf(i), DeliveryPolicy.Default, true, false))
            .ToList();
    }

    // KeepQueued: from the end of the warm-up until the target is disposed, unmeasured adds, in
    // batches with a few in flight, whenever the queue (read once at the start, plus what was added,
    // less what the workers finished since) is short. Running from before the measured window, the
    // queue is at its depth when the window opens. Polling every millisecond is enough: a queue of
    // KeepQueued tasks lasts far longer than that.
    private async Task RefillAsync(CancellationToken cancellationToken)
    {
        const int Batch = 500;
        const int InFlight = 8;
        var threshold = Math.Clamp(_workload.KeepQueued / 2, 1, Batch / 2);
        await using var client = await TatzelwurmClient.ConnectAsync(Connection with { ClientName = "loadgen-refill" }, cancellationToken);
        var finishedBefore = _timeline.CompletedCount;
        long queuedBefore = await ReadyAsync(client, cancellationToken);
        var added = 0L;
        var pending = new List<Task>();
        try
        {
            while (true)
            {
                foreach (var done in pending.Where(t => t.IsCompleted).ToList())
                {
                    await done;
                    pending.Remove(done);
                }

                var owed = _workload.KeepQueued - (queuedBefore + added - (_timeline.CompletedCount - finishedBefore));
                if (owed >= threshold && pending.Count < InFlight)
                {
                    var specs = Unmeasured(_workload, added, (int)Math.Min(owed, Batch));
                    added += specs.Count;
                    pending.Add(client.AddAsync(specs, cancellationToken));
                }
                else
                {
                    await Task.Delay(1, cancellationToken);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The target is done with the queue.
        }
    }

    // The measured part of a KeepQueued run: the refill is already running; wait for N completions.
    private async Task KeptAsync(CancellationToken cancellationToken)
    {
        // Without a warm-up nothing started it, and the queue is filled inside the window.
        _refill ??= Task.Run(() => RefillAsync(_stopWorkers.Token), CancellationToken.None);
        var before = _timeline.CompletedCount;
        while (_timeline.CompletedCount - before < _workload.Tasks)
        {
            if (_refill is { IsCompleted: true })
            {
                await _refill; // a failed add ends the run with its error
                throw new InvalidOperationException("the refill stopped before the run ended");
            }

            await Task.Delay(1, cancellationToken);
        }
    }

    private static async Task<int> ReadyAsync(TatzelwurmClient client, CancellationToken cancellationToken) =>
        (await client.ListAsync(limit: 1, cancellationToken: cancellationToken)).Counts.GetValueOrDefault(ReadyState);

    public async Task WarmupAsync(int tasks, CancellationToken cancellationToken)
    {
        var measured = (_workload, _timeline);
        // Above the measured priorities, so that warm-up tasks run ahead of a prefilled backlog.
        _workload = _workload with { Name = "warmup", Tasks = tasks, PriorityBoost = _workload.Priorities + 1, Unmeasured = true, KeepQueued = 0 };
        _timeline = new Timeline(tasks);
        await SubmitAsync(cancellationToken);
        while (!WorkersDone())
        {
            await Task.Delay(5, cancellationToken);
        }

        (_workload, _timeline) = measured;
        _completedBase = _workers.Sum(w => w.Completed);
        if (_workload.KeepQueued > 0)
        {
            // Up to the depth first, then kept there, all before the measured window opens.
            int ready;
            await using (var client = await TatzelwurmClient.ConnectAsync(Connection, cancellationToken))
            {
                ready = await ReadyAsync(client, cancellationToken);
            }

            await PrefillAsync(Connection, _workload with { Prefill = Math.Max(0, _workload.KeepQueued - ready) }, cancellationToken);

            _refill = Task.Run(() => RefillAsync(_stopWorkers.Token), CancellationToken.None);
        }
    }

    public bool WorkersDone()
    {
        long completed = -_completedBase, running = 0;
        foreach (var worker in _workers)
        {
            completed += worker.Completed;
            running += worker.Running;
        }

        // Worker.Running drops only once the Finished report is acknowledged (durable). With a prefill
        // backlog the queue never empties, so there the measure is the first N completions.
        return _workload.Prefill > 0 ? completed >= _workload.Tasks : completed >= _workload.Tasks && running == 0;
    }

    public async ValueTask DisposeAsync()
    {
        await _stopWorkers.CancelAsync();
        try
        {
            await Task.WhenAll(_workerRuns.Append(_refill ?? Task.CompletedTask)).WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (Exception ex) when (ex is OperationCanceledException or TimeoutException or ConnectionLostException or TatzelwurmException)
        {
        }

        foreach (var worker in _workers)
        {
            worker.Dispose();
        }

        if (_coordinator is not null && existing is null)
        {
            await _coordinator.DisposeAsync();
        }

        _stopWorkers.Dispose();
        try
        {
            if (_dataDirectory.Length > 0)
            {
                Directory.Delete(_dataDirectory, recursive: true);
            }
        }
        catch (IOException)
        {
        }
    }

    /// <summary>The store named in the coordinator's "recovered … from STORE" log line.</summary>
    public static string? DescribeStore(string log)
    {
        foreach (var line in log.Split('\n'))
        {
            var at = line.IndexOf(" from ", StringComparison.Ordinal);
            if (line.Contains("recovered", StringComparison.Ordinal) && at >= 0)
            {
                // "sqlite /tmp/…/tatzelwurm.db (durability full)" → "sqlite (durability full)": the path differs per run.
                var store = line[(at + 6)..].Trim();
                return System.Text.RegularExpressions.Regex.Replace(store, @"\s/\S+", "");
            }
        }

        return null;
    }

    private async Task<TaskOutcomeReport> HandleAsync(AssignedTask task, TaskControl control)
    {
        _timeline.MarkRun(Workload.SeqOf(task.Payload));
        if (_workload.TaskMs > 0)
        {
            await Task.Delay(_workload.TaskMs, control.Killed);
        }

        _timeline.MarkCompleted();
        return TaskOutcomeReport.Completed(_result);
    }

    private async Task SubmitterAsync(int index, CancellationToken cancellationToken)
    {
        await using var client = await TatzelwurmClient.ConnectAsync(Connection with { ClientName = "loadgen-submitter" }, cancellationToken);
        await _workload.LanesAsync(index, OneAsync);

        async Task OneAsync(int seq)
        {
            var payload = _workload.Payload(seq);
            _timeline.Sent[seq] = Timeline.Now;
            var id = await client.AddAsync(payload, TaskType, _workload.PriorityOf(seq), _workload.TagsOf(seq), cancellationToken: cancellationToken);
            _timeline.MarkAcked(seq);
            if (_workload.WaitResults)
            {
                var result = await client.WaitAsync(id, cancellationToken: cancellationToken);
                if (!result.Completed)
                {
                    throw new InvalidOperationException($"task {id} ended with exit code {result.ExitCode}: {result.Error}");
                }

                _timeline.MarkResult(seq);
            }
        }
    }
}
