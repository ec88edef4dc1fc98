using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Data.Sqlite;
using Tatzelwurm.Client;
using Tatzelwurm.EndToEnd.Tests.Fixtures;
using Tatzelwurm.Protocol;
using Tatzelwurm.Storage;
using Xunit;
using StoreSnapshot = Tatzelwurm.Core.StoreSnapshot;
using TaskRecord = Tatzelwurm.Core.TaskRecord;
using TaskState = Tatzelwurm.Core.TaskState;

namespace Tatzelwurm.Crash.Tests;

/// <summary>
/// One crash run (issue 3): a real coordinator process on 127.0.0.1:0 with the default store
/// (SQLite, durability full), submitters and workers in this process over real TCP, and a seeded
/// schedule of kill -9s, each followed by a restart on the same data directory.
/// <para>
/// After every kill, with the coordinator dead, a copy of its database is loaded with the store's
/// own loader (exactly what the next incarnation will load) and held against what the clients were
/// told: every acknowledged add is there in its acknowledged state or a later one, every row is an
/// add some submitter sent (payload byte for byte), and no task went backwards since the last kill.
/// After the restart the coordinator must report the same number of tasks recovered and serve them.
/// At the end the load stops, everything drains, and every task must have terminated with exit
/// code 0 after exactly one execution.
/// </para>
/// </summary>
internal sealed partial class CrashRun : IAsyncDisposable
{
    private const string TaskType = "crash";
    private const int MaxProblemsShown = 40;

    private readonly CrashPlan _plan;
    private readonly int _seed;
    private readonly Random _schedule;
    private readonly ITestOutputHelper? _output;
    private readonly string _root;
    private readonly string _dataDirectory;
    private readonly string _snapshotDirectory;
    private readonly Ledger _ledger = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly CancellationTokenSource _abort;
    private readonly CancellationTokenSource _stopAdding = new();
    private readonly CancellationTokenSource _stopWorkers = new();
    private readonly List<ManagedProcess> _coordinators = [];
    private readonly List<Worker> _workers = [];
    private readonly List<Task> _workerRuns = [];
    private readonly List<Task> _submitterRuns = [];
    private readonly Lock _notesLock = new();
    private readonly Queue<string> _notes = new();
    private readonly Dictionary<long, string> _unresolved = [];
    private readonly List<string> _recovered = [];
    private readonly List<double> _restartMs = [];
    private readonly List<double> _storeCheckMs = [];
    private readonly List<double> _listingMs = [];
    private Dictionary<long, TaskRecord> _lastStore = [];
    private ManagedProcess? _coordinator;
    private int _incarnation;
    private int _kills;
    private int _killsBeforeServing;

    private CrashRun(CrashPlan plan, int seed, ITestOutputHelper? output)
    {
        _plan = plan;
        _seed = seed;
        _schedule = new Random(seed);
        _output = output;
        _root = Path.Combine(Path.GetTempPath(), "tatzelwurm-crash-" + Guid.NewGuid().ToString("N")[..12]);
        _dataDirectory = Path.Combine(_root, "data");
        _snapshotDirectory = Path.Combine(_root, "snapshot");
        Directory.CreateDirectory(_dataDirectory);
        _abort = new CancellationTokenSource(plan.TimeLimit);
    }

    /// <summary>Runs <paramref name="plan"/> and fails with every problem found; prints its counts either way.</summary>
    public static async Task RunAsync(CrashPlan plan)
    {
        await using var run = new CrashRun(plan, CrashPlan.Seed(), TestContext.Current.TestOutputHelper);
        try
        {
            await run.ExecuteAsync();
        }
        catch (Exception ex)
        {
            run.Log($"FAILED after {run._clock.Elapsed.TotalSeconds:0.0} s (seed {run._seed}): {ex.GetType().Name}");
            run.PrintCounts();
            run.DumpLogs();
            throw;
        }
    }

    private async Task ExecuteAsync()
    {
        Log($"crash run '{_plan.Name}': seed {_seed} (TATZELWURM_CRASH_SEED={_seed} repeats the schedule), {_plan.Kills} kills, " +
            $"{_plan.Submitters} submitters, {_plan.Workers} workers x {_plan.Slots} slots, data in {_dataDirectory}");
        StartCoordinator();
        await WaitUntilServingAsync();
        var since = Stopwatch.GetTimestamp();
        StartWorkers();
        StartSubmitters();

        var early = false;
        for (var k = 1; k <= _plan.Kills; k++)
        {
            // The schedule, not a wait for a condition: the coordinator dies whatever it is doing.
            // An early kill counts from the process start, so it may land before the coordinator
            // serves (runtime start, store open, recovery) or just after; the others count from
            // when it started serving, whatever the recovery check took of that time.
            var uptime = early ? TimeSpan.FromMilliseconds(_schedule.Next(0, 400)) : Between(_plan.MinUptime, _plan.MaxUptime);
            var wait = uptime - Stopwatch.GetElapsedTime(since);
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, _abort.Token);
            }

            var served = DataDirectory.ReadAddress(_dataDirectory) is not null;
            uptime = Stopwatch.GetElapsedTime(since);
            await KillAsync();
            _kills++;
            _killsBeforeServing += served ? 0 : 1;
            var phase = Stopwatch.GetTimestamp();
            var store = await CheckStoreAsync($"kill {k} {uptime.TotalMilliseconds:0} ms after {(early ? "the start" : "it served")}{(served ? "" : ", before it served")}");
            _storeCheckMs.Add(Stopwatch.GetElapsedTime(phase).TotalMilliseconds);

            early = k < _plan.Kills && _schedule.NextDouble() < _plan.EarlyKillChance;
            StartCoordinator();
            since = Stopwatch.GetTimestamp();
            if (!early)
            {
                await WaitUntilServingAsync();
                _restartMs.Add(Stopwatch.GetElapsedTime(since).TotalMilliseconds);
                since = Stopwatch.GetTimestamp();

                // The listing is left out of one restart in three, so that kills also land while the
                // workers reclaim, before the (slow, cold) first listing would have finished.
                await CheckRecoveryAsync(store, listing: _schedule.Next(3) != 0);
            }
        }

        Log($"{_kills} kills done at {_clock.Elapsed.TotalSeconds:0.0} s: {_ledger.Acked.Count} adds acknowledged, {_ledger.Executions.Count} tasks executed; stopping the load");
        Assert.True(!_ledger.Acked.IsEmpty && !_ledger.Executions.IsEmpty, "the load made no progress between the kills");
        await DrainAsync();

        // One more kill with everything terminated: the final state must be durable too.
        await KillAsync();
        var final = await CheckStoreAsync("final kill after the drain");
        StartCoordinator();
        await WaitUntilServingAsync();
        await CheckRecoveryAsync(final, listing: true);
        CheckFinal(final);
        PrintCounts();
    }

    // ---- the coordinator ------------------------------------------------------------------------

    private void StartCoordinator()
    {
        _incarnation++;
        _coordinator = ManagedProcess.Start($"coordinator #{_incarnation}", Apps.Coordinator,
        [
            "--listen", "127.0.0.1:0",
            "--data", _dataDirectory,
            // Workers reclaim across restarts: the grace far exceeds a restart, so no task is ever
            // declared lost (at-most-once would pause it; that would be a finding).
            "--heartbeat", "200ms",
            "--lease", "2s",
            "--grace", "60s",
            "--log-level", "information",
        ]);
        _coordinators.Add(_coordinator);

        // Keep the output of the last few incarnations for a failure report.
        while (_coordinators.Count > 4)
        {
            var old = _coordinators[0];
            _coordinators.RemoveAt(0);
            _ = old.DisposeAsync().AsTask();
        }
    }

    private async Task WaitUntilServingAsync()
    {
        var coordinator = _coordinator!;
        await Eventually.WaitAsync($"{coordinator.Name} to write its address file", () =>
        {
            if (coordinator.HasExited)
            {
                throw new InvalidOperationException($"{coordinator.Name} exited with {coordinator.ExitCode} during start-up\n{coordinator.Stdout}\n{coordinator.Stderr}");
            }

            return Task.FromResult(DataDirectory.ReadAddress(_dataDirectory));
        }, timeout: TimeSpan.FromSeconds(30));
    }

    private async Task KillAsync()
    {
        var coordinator = _coordinator!;
        coordinator.Kill();
        if (!await coordinator.WaitForExitAsync(TimeSpan.FromSeconds(10)))
        {
            throw new TimeoutException($"{coordinator.Name} did not die within 10 s of kill -9");
        }

        // The next incarnation listens on another port: without this, clients would keep trying
        // the dead one, and the test could not tell when the new one serves.
        File.Delete(Path.Combine(_dataDirectory, DataDirectory.AddressFile));
    }

    // ---- checks ---------------------------------------------------------------------------------

    /// <summary>
    /// With the coordinator dead: loads a copy of its database and holds it against the ledger.
    /// Every acknowledgement in the ledger now came from a dead coordinator, so the store must
    /// honour it.
    /// </summary>
    private async Task<Dictionary<long, TaskRecord>> CheckStoreAsync(string label)
    {
        var store = await LoadStoreCopyAsync();
        var acked = _ledger.Acked.ToArray();
        var problems = new List<string>();
        var byKey = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var task in store.Values)
        {
            var what = $"task {task.Id} ({States(task)})";
            if (!Enum.IsDefined(task.State))
            {
                problems.Add($"{what}: state {(int)task.State} is no task state");
            }

            if (task.Type != TaskType)
            {
                problems.Add($"{what}: type '{task.Type}', but every submitter adds '{TaskType}'");
            }

            var key = Payloads.Key(task.Payload.Span);
            if (key is null || !_ledger.Sent.TryGetValue(key, out var sent))
            {
                problems.Add($"{what}: its payload ({task.Payload.Length} bytes, key {key ?? "none"}) is no payload a submitter sent");
                continue;
            }

            if (!task.Payload.Span.SequenceEqual(sent))
            {
                problems.Add($"{what}: its payload differs from what the submitter sent for {key} ({task.Payload.Length} bytes stored, {sent.Length} sent)");
            }

            if (byKey.TryGetValue(key, out var other))
            {
                problems.Add($"{what}: carries the payload of {key}, like task {other}: one add stored twice");
            }

            byKey[key] = task.Id;
            if (_ledger.Acked.TryGetValue(task.Id, out var ack))
            {
                if (ack.Key != key)
                {
                    problems.Add($"{what}: acknowledged as the add of {ack.Key} but holds the payload of {key}");
                }
            }
            else
            {
                // Not acknowledged (yet): an add in flight at a kill, or a reply still on its way to
                // the submitter. Resolved at the end, when every submitter knows what it was told.
                _unresolved.TryAdd(task.Id, key);
            }

            switch (task.State)
            {
                case TaskState.Pause:
                    problems.Add($"{what}: paused ({task.Reason}); with a 60 s grace no worker should have been declared lost");
                    break;
                case TaskState.Terminated when task.ExitCode != 0:
                    problems.Add($"{what}: terminated with exit code {task.ExitCode} ({task.Error}); every handler returns 0");
                    break;
            }

            if (_lastStore.TryGetValue(task.Id, out var before) && Regressed(before, task))
            {
                problems.Add($"{what}: went back from {States(before)} at the previous kill");
            }
        }

        foreach (var (id, ack) in acked)
        {
            if (!store.TryGetValue(id, out var task))
            {
                problems.Add($"acknowledged task {id} ({ack.Key}) is not in the store");
            }
            else if (ack.Ready && task.State == TaskState.Created)
            {
                problems.Add($"task {id} ({ack.Key}): acknowledged as ready (added ready or played) but stored as created");
            }
        }

        foreach (var id in _lastStore.Keys.Where(id => !store.ContainsKey(id)))
        {
            problems.Add($"task {id} was in the store at the previous kill and is gone (retention is 7 days)");
        }

        problems.AddRange(_ledger.Violations);
        problems.AddRange(ClientFailures());
        Fail(label, problems);
        _lastStore = store;
        var counts = Enum.GetValues<TaskState>().Select(s => $"{store.Values.Count(t => t.State == s)} {s.ToString().ToLowerInvariant()}");
        Log($"{label} at {_clock.Elapsed.TotalSeconds:0.0} s: store holds {store.Count} tasks ({string.Join(", ", counts)}); " +
            $"{acked.Length} acknowledged, {_ledger.Executions.Count} executed");
        return store;
    }

    /// <summary>A copy of the database files, read with the store's own loader (the coordinator's recovery path).</summary>
    private async Task<Dictionary<long, TaskRecord>> LoadStoreCopyAsync()
    {
        const string Database = "tatzelwurm.db";
        if (Directory.Exists(_snapshotDirectory))
        {
            Directory.Delete(_snapshotDirectory, recursive: true);
        }

        Directory.CreateDirectory(_snapshotDirectory);
        if (!File.Exists(Path.Combine(_dataDirectory, Database)))
        {
            return [];
        }

        // The -shm index is not copied: SQLite rebuilds it from the WAL, as after any crash.
        foreach (var name in new[] { Database, Database + "-wal" })
        {
            var source = Path.Combine(_dataDirectory, name);
            if (File.Exists(source))
            {
                File.Copy(source, Path.Combine(_snapshotDirectory, name));
            }
        }

        var path = Path.Combine(_snapshotDirectory, Database);
        StoreSnapshot snapshot;
        await using (var store = SqliteTaskStore.Open(new SqliteStoreOptions(path)))
        {
            snapshot = await store.LoadAsync(_abort.Token);
        }

        // Recovery leaves out the payload bytes of terminated tasks; the checks need every stored
        // payload, so those come straight from the rows.
        var stored = StoredPayloads(path);
        var tasks = new Dictionary<long, TaskRecord>();
        foreach (var loaded in snapshot.Tasks)
        {
            var task = loaded;
            if (task.State == TaskState.Terminated && task.Payload.IsEmpty && stored.TryGetValue(task.Id, out var payload))
            {
                if (payload.Length != task.PayloadSize)
                {
                    Fail("loading the store", [$"task {task.Id} loaded with a payload size of {task.PayloadSize}; its row holds {payload.Length} bytes"]);
                }

                task = task with { Payload = payload };
            }

            if (!tasks.TryAdd(task.Id, task))
            {
                Fail("loading the store", [$"task {task.Id} loaded twice"]);
            }
        }

        if (tasks.Count > 0 && snapshot.LastTaskId < tasks.Keys.Max())
        {
            Fail("loading the store", [$"last_task_id {snapshot.LastTaskId} is below the largest id {tasks.Keys.Max()}: ids could be reused"]);
        }

        return tasks;
    }

    private static Dictionary<long, byte[]> StoredPayloads(string path)
    {
        using var connection = new SqliteConnection($"Data Source={path};Mode=ReadOnly;Pooling=false");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT id, payload FROM tasks";
        using var reader = command.ExecuteReader();
        var payloads = new Dictionary<long, byte[]>();
        while (reader.Read())
        {
            payloads[reader.GetInt64(0)] = reader.IsDBNull(1) ? [] : (byte[])reader.GetValue(1);
        }

        return payloads;
    }

    /// <summary>
    /// With the restarted coordinator serving: it recovered what the store holds, and serves every
    /// task there in the same state or a later one (the load is already running again).
    /// </summary>
    private async Task CheckRecoveryAsync(Dictionary<long, TaskRecord> store, bool listing)
    {
        var started = Stopwatch.GetTimestamp();
        var coordinator = _coordinator!;
        var logged = await Eventually.WaitAsync($"{coordinator.Name} to log what it recovered",
            () => Task.FromResult(coordinator.StdoutLines.Select(l => RecoveredLine().Match(l)).FirstOrDefault(m => m.Success)),
            () => coordinator.Stdout, TimeSpan.FromSeconds(10));
        var recovered = int.Parse(logged.Groups[1].Value, CultureInfo.InvariantCulture);
        _recovered.Add(recovered.ToString(CultureInfo.InvariantCulture));
        var problems = new List<string>();
        if (recovered != store.Count)
        {
            problems.Add($"{coordinator.Name} recovered {recovered} tasks; the store holds {store.Count}");
        }

        if (!listing)
        {
            Fail($"restart of {coordinator.Name}", problems);
            return;
        }

        await using var observer = await TatzelwurmClient.ConnectAsync(Options("crash-observer"), _abort.Token);
        var served = new Dictionary<long, TaskInfo>();
        await foreach (var task in observer.ListAllAsync(cancellationToken: _abort.Token))
        {
            served[task.Id] = task;
        }

        foreach (var task in store.Values)
        {
            if (!served.TryGetValue(task.Id, out var info))
            {
                problems.Add($"task {task.Id} ({States(task)}) is in the store but {coordinator.Name} does not list it");
                continue;
            }

            if (info.PayloadSize != task.Payload.Length || info.Type != task.Type)
            {
                problems.Add($"task {task.Id}: served as {info.Type} with {info.PayloadSize} payload bytes, stored as {task.Type} with {task.Payload.Length}");
            }

            if (Rank((TaskState)info.State) < Rank(task.State) || (task.State == TaskState.Terminated && info.ExitCode != task.ExitCode))
            {
                problems.Add($"task {task.Id}: stored as {States(task)}, served as {(TaskState)info.State} exit {info.ExitCode}");
            }
        }

        Fail($"restart of {coordinator.Name}", problems);
        _listingMs.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    private void CheckFinal(Dictionary<long, TaskRecord> store)
    {
        var problems = new List<string>();
        foreach (var task in store.Values)
        {
            if (task.State != TaskState.Terminated || task.ExitCode != 0)
            {
                problems.Add($"task {task.Id} ended as {States(task)}, not terminated with exit code 0");
            }

            var runs = _ledger.Executions.GetValueOrDefault(task.Id);
            if (runs != 1)
            {
                problems.Add($"task {task.Id} ({Payloads.Key(task.Payload.Span)}) was executed {runs} times");
            }
        }

        foreach (var id in _ledger.Executions.Keys.Where(id => !store.ContainsKey(id)))
        {
            problems.Add($"task {id} was executed but is not in the store");
        }

        // Every add got an answer or was lost with a coordinator; every task nobody saw acknowledged
        // must be one of the lost ones.
        var ackedKeys = _ledger.Acked.Values.Select(a => a.Key).ToHashSet(StringComparer.Ordinal);
        var unaccounted = _ledger.Sent.Keys.Where(k => !ackedKeys.Contains(k) && !_ledger.LostAdds.ContainsKey(k)).ToList();
        if (unaccounted.Count > 0)
        {
            problems.Add($"{unaccounted.Count} adds were neither acknowledged nor lost with a coordinator, e.g. {string.Join(", ", unaccounted.Take(5))}");
        }

        foreach (var (id, key) in _unresolved)
        {
            if (_ledger.Acked.TryGetValue(id, out var ack))
            {
                if (ack.Key != key)
                {
                    problems.Add($"task {id} held {key} in the store but was acknowledged as {ack.Key}");
                }
            }
            else if (!_ledger.LostAdds.ContainsKey(key))
            {
                problems.Add($"task {id} ({key}) is in the store, but its add was neither acknowledged nor in flight at a kill");
            }
        }

        problems.AddRange(_ledger.Violations);
        problems.AddRange(ClientFailures());
        Fail("final check", problems);
    }

    // ---- the drain ------------------------------------------------------------------------------

    private async Task DrainAsync()
    {
        await _stopAdding.CancelAsync();
        await Task.WhenAll(_submitterRuns).WaitAsync(TimeSpan.FromSeconds(60), _abort.Token);

        // Adds in flight at a kill that landed 'created' have nobody to play them: play them here.
        await using var observer = await TatzelwurmClient.ConnectAsync(Options("crash-drain"), _abort.Token);
        var created = new List<long>();
        await foreach (var task in observer.ListAllAsync(state: (int)TaskState.Created, cancellationToken: _abort.Token))
        {
            created.Add(task.Id);
        }

        var stillCreated = created.Where(_ledger.Acked.ContainsKey).ToList();
        Fail("drain", stillCreated.Select(id => $"task {id} ({_ledger.Acked[id].Key}) is still created after its submitter's play was acknowledged").ToList());
        if (created.Count > 0)
        {
            var played = await observer.ControlAsync(TaskAction.Play, created, cancellationToken: _abort.Token);
            Fail("playing the landed created tasks", played.Failed.Select(f => $"task {f.TaskId}: {f.Code} {f.Message}").ToList());
        }

        Log($"load stopped at {_clock.Elapsed.TotalSeconds:0.0} s; played {created.Count} landed created tasks; waiting for every task to terminate");
        TaskList? last = null;
        await Eventually.UntilAsync("every task to terminate", async () =>
        {
            last = await observer.ListAsync(limit: 1, cancellationToken: _abort.Token);
            return last.Counts.Where(kv => kv.Key != (int)TaskState.Terminated).All(kv => kv.Value == 0);
        }, () => last is null ? "nothing" : string.Join(", ", last.Counts.Select(kv => $"{(TaskState)kv.Key} {kv.Value}")),
            _plan.DrainTimeout, TimeSpan.FromMilliseconds(100));

        await _stopWorkers.CancelAsync();
        await Task.WhenAll(_workerRuns).WaitAsync(TimeSpan.FromSeconds(30), _abort.Token);
        Log($"drained at {_clock.Elapsed.TotalSeconds:0.0} s");
    }

    // ---- the load -------------------------------------------------------------------------------

    private ConnectionOptions Options(string name) => new()
    {
        DataDirectory = _dataDirectory,
        ClientName = name,
        ConnectTimeout = TimeSpan.FromSeconds(5),
    };

    private void StartWorkers()
    {
        for (var i = 0; i < _plan.Workers; i++)
        {
            var id = $"crash-w{i}";
            var worker = new Worker(new WorkerOptions
            {
                Connection = Options(id),
                WorkerId = id,
                Name = id,
                Types = [TaskType],
                Slots = _plan.Slots,
                MaxReconnectDelay = TimeSpan.FromMilliseconds(250),
                Log = line => Note($"{id}: {line}"),
            }, (task, control) => HandleAsync(id, task, control));
            _workers.Add(worker);
            _workerRuns.Add(Task.Run(() => worker.RunAsync(_stopWorkers.Token)));
        }
    }

    private async Task<TaskOutcomeReport> HandleAsync(string worker, AssignedTask task, TaskControl control)
    {
        _ledger.Executing(task, worker);
        await Task.Delay(TimeSpan.FromMilliseconds(Random.Shared.Next(1, (int)_plan.MaxTaskTime.TotalMilliseconds + 1)), control.Killed);
        return TaskOutcomeReport.Completed();
    }

    private void StartSubmitters()
    {
        for (var i = 0; i < _plan.Submitters; i++)
        {
            var index = i;
            _submitterRuns.Add(Task.Run(() => SubmitAsync(index)));
        }
    }

    /// <summary>
    /// Adds batches of 1–4 tasks (about a third created, the rest ready) and plays its created ones
    /// later, reconnecting whenever the coordinator dies. After the load stops it keeps going until
    /// every created task it was told about has been played.
    /// </summary>
    private async Task SubmitAsync(int index)
    {
        var rng = new Random(unchecked((_seed * 31) + index + 1));
        var name = $"crash-s{index}";
        var next = 0;
        var toPlay = new List<long>();
        TatzelwurmClient? client = null;
        try
        {
            while (!_stopAdding.IsCancellationRequested || toPlay.Count > 0)
            {
                client ??= await ConnectAsync(name);
                try
                {
                    // Pacing: the load is steady, not a flood; about AddsPerSecond over all submitters.
                    var pause = TimeSpan.FromMilliseconds(rng.Next(1, 10));
                    if (toPlay.Count > 0 && (_stopAdding.IsCancellationRequested || rng.Next(3) == 0))
                    {
                        await PlayAsync(client, toPlay);
                    }
                    else if (!_stopAdding.IsCancellationRequested && _ledger.Backlog < _plan.MaxBacklog)
                    {
                        var count = rng.Next(1, 5);
                        var adds = Enumerable.Range(0, count).Select(_ => $"s{index}-{++next}").Select(key => (Key: key, Payload: Payloads.Make(key, rng), Ready: rng.Next(3) != 0)).ToList();
                        await AddAsync(client, adds, toPlay);
                        pause = TimeSpan.FromSeconds(count * _plan.Submitters * (0.5 + rng.NextDouble()) / _plan.AddsPerSecond);
                    }

                    await Task.Delay(pause, _abort.Token);
                }
                catch (ConnectionLostException ex)
                {
                    Note($"{name}: {ex.Message}; reconnecting");
                    await client.DisposeAsync();
                    client = null;
                }
            }
        }
        finally
        {
            if (client is not null)
            {
                await client.DisposeAsync();
            }
        }
    }

    private async Task AddAsync(TatzelwurmClient client, List<(string Key, byte[] Payload, bool Ready)> adds, List<long> toPlay)
    {
        _ledger.Sending(adds.Select(a => (a.Key, a.Payload)).ToList());
        IReadOnlyList<long> ids;
        var sent = Stopwatch.GetTimestamp();
        try
        {
            ids = await client.AddAsync(adds.Select(a => new TaskSpec(a.Payload, TaskType, 0, [], DeliveryPolicy.Default, a.Ready, NoReply: false)).ToList(), _abort.Token);
        }
        catch (ConnectionLostException)
        {
            // No reply: these may or may not have landed.
            foreach (var add in adds)
            {
                _ledger.LostAdds[add.Key] = 0;
            }

            throw;
        }
        catch (TatzelwurmException ex)
        {
            foreach (var add in adds)
            {
                _ledger.LostAdds[add.Key] = 0;
            }

            _ledger.Violations.Enqueue($"add of {string.Join(", ", adds.Select(a => a.Key))} refused: {ex.Code} {ex.Message}");
            return;
        }

        _ledger.AddReplied(Stopwatch.GetElapsedTime(sent));
        if (ids.Count != adds.Count)
        {
            _ledger.Violations.Enqueue($"add of {adds.Count} tasks answered with {ids.Count} ids");
        }

        foreach (var (add, id) in adds.Zip(ids))
        {
            if (!_ledger.Acked.TryAdd(id, new AckedTask(add.Key, add.Ready)))
            {
                _ledger.Violations.Enqueue($"id {id} acknowledged for {add.Key} and for {_ledger.Acked[id].Key}");
            }

            if (!add.Ready)
            {
                toPlay.Add(id);
            }
        }
    }

    private async Task PlayAsync(TatzelwurmClient client, List<long> toPlay)
    {
        ControlResult result;
        try
        {
            result = await client.ControlAsync(TaskAction.Play, toPlay, cancellationToken: _abort.Token);
        }
        catch (ConnectionLostException)
        {
            // Played again after the reconnect; a refusal then means this one landed.
            _ledger.PlaysWithoutReply(toPlay);
            throw;
        }
        catch (TatzelwurmException ex)
        {
            _ledger.Violations.Enqueue($"play of {string.Join(", ", toPlay)} refused: {ex.Code} {ex.Message}");
            return;
        }

        foreach (var id in result.Applied)
        {
            _ledger.PlayAcknowledged(id);
        }

        foreach (var failure in result.Failed)
        {
            if (failure.Code == ErrorCode.IllegalTransition && _ledger.Acked[failure.TaskId].PlayLost)
            {
                _ledger.PlayLandedEarlier(failure.TaskId);
            }
            else
            {
                _ledger.Violations.Enqueue($"play of task {failure.TaskId} ({_ledger.Acked[failure.TaskId].Key}) refused: {failure.Code} {failure.Message}");
            }
        }

        toPlay.Clear();
    }

    /// <summary>Connects, retrying while the coordinator is down (no address file, refused, died in the handshake).</summary>
    private async Task<TatzelwurmClient> ConnectAsync(string name)
    {
        while (true)
        {
            try
            {
                return await TatzelwurmClient.ConnectAsync(Options(name), _abort.Token);
            }
            catch (Exception ex) when (!_abort.IsCancellationRequested && ex is InvalidOperationException or SocketException or IOException
                or ConnectionLostException or OperationCanceledException or TatzelwurmException { Code: not (ErrorCode.AuthFailed or ErrorCode.UnsupportedVersion) })
            {
            }

            await Task.Delay(50, _abort.Token);
        }
    }

    /// <summary>Submitters and workers run until told to stop; one that ended early is a finding.</summary>
    private IEnumerable<string> ClientFailures() =>
        _submitterRuns.Select((run, i) => (Run: run, Name: $"submitter crash-s{i}", Stopped: _stopAdding.IsCancellationRequested))
            .Concat(_workerRuns.Select((run, i) => (Run: run, Name: $"worker crash-w{i}", Stopped: _stopWorkers.IsCancellationRequested)))
            .Where(c => c.Run.IsFaulted || (c.Run.IsCompleted && !c.Stopped))
            .Select(c => $"{c.Name} ended: {c.Run.Exception?.InnerException?.ToString() ?? "returned before it was stopped"}");

    // ---- reporting ------------------------------------------------------------------------------

    private void PrintCounts()
    {
        var ackedKeys = _ledger.Acked.Values.Select(a => a.Key).ToHashSet(StringComparer.Ordinal);
        var landed = _unresolved.Count(u => !_ledger.Acked.ContainsKey(u.Key) && _ledger.LostAdds.ContainsKey(u.Value));
        var duplicates = _ledger.Executions.Count(e => e.Value > 1);
        var lines = new[]
        {
            $"seed {_seed}, run time {_clock.Elapsed.TotalSeconds:0.0} s",
            $"kills: {_kills} under load ({_killsBeforeServing} before the coordinator served), plus 1 after the drain; {_incarnation} coordinator starts",
            $"tasks added: {_ledger.AddsSent}; acknowledged: {_ledger.Acked.Count}; adds without reply: {_ledger.LostAdds.Count} " +
                $"(in-flight adds that landed: {landed}, not landed: {_ledger.LostAdds.Keys.Count(k => !ackedKeys.Contains(k)) - landed})",
            $"add round trip (send to acknowledgement), mean/max ms: {_ledger.AddReplyTimes.Mean.TotalMilliseconds:0}/{_ledger.AddReplyTimes.Max.TotalMilliseconds:0}",
            $"plays acknowledged: {_ledger.PlaysAcknowledged}; play requests without reply: {_ledger.PlaysLost} (tasks found already played when retried: {_ledger.PlaysLandedEarlier})",
            $"recovered per restart: {string.Join(" ", _recovered)}",
            $"executions: {_ledger.Executions.Values.Sum()} of {_ledger.Executions.Count} tasks; duplicates: {duplicates}; tasks in the store at the end: {_lastStore.Count}",
            $"phases, mean/max ms: restart until serving {Stats(_restartMs)}, store check {Stats(_storeCheckMs)}, recovery check with listing {Stats(_listingMs)}",
        };
        foreach (var line in lines)
        {
            Log(line);
        }
    }

    private static string Stats(List<double> ms) => ms.Count == 0 ? "-" : $"{ms.Average():0}/{ms.Max():0}";

    private void DumpLogs()
    {
        foreach (var coordinator in _coordinators.TakeLast(2))
        {
            _output?.WriteLine($"===== {coordinator.Name} (pid {coordinator.Id})");
            foreach (var line in coordinator.StdoutLines.TakeLast(100).Concat(coordinator.StderrLines.TakeLast(50)))
            {
                _output?.WriteLine("| " + line);
            }
        }

        _output?.WriteLine("===== clients (last notes)");
        lock (_notesLock)
        {
            foreach (var note in _notes)
            {
                _output?.WriteLine("| " + note);
            }
        }
    }

    private void Log(string line)
    {
        _output?.WriteLine(line);
    }

    private void Note(string line)
    {
        lock (_notesLock)
        {
            _notes.Enqueue($"{_clock.Elapsed.TotalSeconds:0.000} {line}");
            while (_notes.Count > 200)
            {
                _notes.Dequeue();
            }
        }
    }

    private static void Fail(string label, List<string> problems)
    {
        if (problems.Count > 0)
        {
            var text = new StringBuilder($"{label}: {problems.Count} problems");
            foreach (var problem in problems.Take(MaxProblemsShown))
            {
                text.Append("\n  ").Append(problem);
            }

            throw new Xunit.Sdk.XunitException(text.ToString());
        }
    }

    // created < ready, submit (a submit whose assignment never arrived goes back to ready) < run < terminated.
    private static int Rank(TaskState state) => state switch
    {
        TaskState.Created => 0,
        TaskState.Ready or TaskState.Submit => 1,
        TaskState.Run or TaskState.Pause => 2,
        _ => 3,
    };

    private static bool Regressed(TaskRecord before, TaskRecord now) =>
        Rank(now.State) < Rank(before.State) || (before.State == TaskState.Terminated && now.ExitCode != before.ExitCode);

    private static string States(TaskRecord task) =>
        task.State.ToString().ToLowerInvariant() + (task.ExitCode is { } code ? $" exit {code}" : "") + (task.WorkerId is { } w ? $" on {w}" : "");

    private TimeSpan Between(TimeSpan min, TimeSpan max) => TimeSpan.FromMilliseconds(_schedule.Next((int)min.TotalMilliseconds, (int)max.TotalMilliseconds + 1));

    [GeneratedRegex(@"recovered (\d+) tasks")]
    private static partial Regex RecoveredLine();

    public async ValueTask DisposeAsync()
    {
        // Kill first, unconditionally: nothing below may leave a process running if it throws.
        _coordinator?.Kill();
        await _abort.CancelAsync();
        await _stopAdding.CancelAsync();
        await _stopWorkers.CancelAsync();
        try
        {
            await Task.WhenAll(_submitterRuns.Concat(_workerRuns)).WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception)
        {
            // Cancelled runs end with OperationCanceledException; the test's outcome is decided above.
        }

        foreach (var coordinator in _coordinators)
        {
            await coordinator.DisposeAsync();
        }

        foreach (var worker in _workers)
        {
            worker.Dispose();
        }

        _abort.Dispose();
        _stopAdding.Dispose();
        _stopWorkers.Dispose();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
