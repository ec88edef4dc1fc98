using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;
using Tatzelwurm.Core;
using Xunit;
using static Tatzelwurm.Storage.Tests.TestData;

namespace Tatzelwurm.Storage.Tests;

public sealed class SqliteStoreContractTests : StoreContractTests
{
    private readonly TempDir _dir = new();

    protected override ITaskStore Create() => SqliteTaskStore.Open(Options());

    protected override async Task<ITaskStore> ReopenAsync(ITaskStore store)
    {
        await store.DisposeAsync();
        return SqliteTaskStore.Open(Options());
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        _dir.Dispose();
    }

    private SqliteStoreOptions Options() => new(_dir.File("tatzelwurm.db")) { FailCommit = _ => Failing };
}

public sealed class SqliteTaskStoreTests : IDisposable
{
    private readonly TempDir _dir = new();

    private string DbPath => _dir.File("tatzelwurm.db");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Sqlite_ConfiguredBeforeItsFirstUse_RunsWithoutMutexes() => Assert.True(SqliteTaskStore.MultiThreaded);

    [Theory]
    [InlineData(Durability.Full)]
    [InlineData(Durability.Interval)]
    [InlineData(Durability.None)]
    public async Task Reopen_AfterCrashWithoutCheckpoint_HasExactlyTheCommittedState(Durability durability)
    {
        // A kill -9 leaves the db and WAL files as the kernel has them: copying them while the store
        // is still open, without a checkpoint or close, is that state.
        var options = new SqliteStoreOptions(DbPath) { Durability = durability, SyncInterval = TimeSpan.FromHours(1) };
        var store = SqliteTaskStore.Open(options);
        var memory = new InMemoryTaskStore();
        var ready = Full(1, TaskState.Ready);
        var running = Moved(ready, TaskState.Run);
        StoreBatch[] batches =
        [
            Batch([ready, Minimal(2)], tagLimits: [Limit("gpu", 2)]),
            Batch([Full(3, TaskState.Pause)], tagLimits: [Limit("gpu", 4), Limit("io", 1)], updates: [Updated(ready, running)]),
            Batch(deletes: [2], tagLimits: [Limit("io", null)], lastTaskId: 5, updates: [Updated(running, Moved(running, TaskState.Terminated))]),
        ];
        foreach (var batch in batches)
        {
            await store.CommitAsync(batch, Ct);
            await memory.CommitAsync(batch, Ct);
        }

        var crashed = _dir.File("crashed/tatzelwurm.db");
        Directory.CreateDirectory(Path.GetDirectoryName(crashed)!);
        File.Copy(DbPath, crashed);
        File.Copy(DbPath + "-wal", crashed + "-wal");
        Assert.True(new FileInfo(crashed + "-wal").Length > 0, "the commits should still be in the WAL");
        await store.DisposeAsync();

        await using var reopened = SqliteTaskStore.Open(new SqliteStoreOptions(crashed));
        Same(memory.Snapshot(), await reopened.LoadAsync(Ct));
    }

    [Fact]
    public async Task Load_SparseIdsOverAWideRange_ReadsEverySliceInIdOrder()
    {
        // Wide enough for the parallel scan: slices split the id range, and purged gaps must not matter.
        var tasks = Enumerable.Range(0, 300).Select(i => Full(1 + (i * 997L) % 299_000, (TaskState)(i % 6))).DistinctBy(t => t.Id).OrderBy(t => t.Id).ToList();
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        await store.CommitAsync(Batch(tasks, lastTaskId: 300_000), Ct);

        var snapshot = await store.LoadAsync(Ct);

        Same(new StoreSnapshot(tasks, new Dictionary<string, int>(), 300_000), snapshot);
    }

    [Fact]
    public async Task Commit_RealDiskFull_RollsBackThrowsAndSucceedsOnceSpaceReturns()
    {
        // max_page_count caps the database size: SQLite then fails exactly as on a full disk (SQLITE_FULL).
        var diskFull = false;
        var options = new SqliteStoreOptions(DbPath)
        {
            ConfigureConnection = c =>
            {
                if (diskFull)
                {
                    CapAtCurrentSize(c);
                }
            },
        };
        await using var store = SqliteTaskStore.Open(options);
        var first = Full(1);
        await store.CommitAsync(Batch([first], tagLimits: [Limit("gpu", 1)]), Ct);

        diskFull = true;
        CapAtCurrentSize(store.ConnectionForTests!);
        var big = Batch([Minimal(2) with { Payload = new byte[256 * 1024] }], tagLimits: [Limit("gpu", 9)], updates: [Updated(first, Moved(first, TaskState.Terminated))]);
        var ex = await Assert.ThrowsAsync<StoreException>(() => store.CommitAsync(big, Ct));
        Assert.True(ex.IsDiskFull, ex.ToString());

        // The store reopens its connection and still sees only the first commit; the disk is still full.
        Same(new StoreSnapshot([first], new Dictionary<string, int> { ["gpu"] = 1 }, 1), await store.LoadAsync(Ct));
        Assert.True((await Assert.ThrowsAsync<StoreException>(() => store.CommitAsync(big, Ct))).IsDiskFull);

        diskFull = false; // the failed commit dropped its connection; the next one opens without the cap
        await store.CommitAsync(big, Ct);

        Same(new StoreSnapshot([.. big.Upserts.Select(u => u.Task).OrderBy(t => t.Id)], new Dictionary<string, int> { ["gpu"] = 9 }, 2), await store.LoadAsync(Ct));
    }

    private static void CapAtCurrentSize(SqliteConnection c)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA page_count";
        var pages = (long)cmd.ExecuteScalar()!;
        cmd.CommandText = $"PRAGMA max_page_count = {pages}";
        cmd.ExecuteNonQuery();
    }

    [Fact]
    public void Open_FutureSchemaVersion_IsRefusedWithAClearError()
    {
        using (var c = new SqliteConnection($"Data Source={DbPath};Pooling=false"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = $"PRAGMA application_id = {SqliteSchema.ApplicationId}; PRAGMA user_version = {SqliteSchema.CurrentVersion + 1};";
            cmd.ExecuteNonQuery();
        }

        var ex = Assert.Throws<StoreException>(() => SqliteTaskStore.Open(new SqliteStoreOptions(DbPath)));

        Assert.Contains("newer than this tatzelwurm supports", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_SomeoneElsesDatabase_IsRefused()
    {
        using (var c = new SqliteConnection($"Data Source={DbPath};Pooling=false"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "CREATE TABLE tasks (id INTEGER PRIMARY KEY, what TEXT)";
            cmd.ExecuteNonQuery();
        }

        var ex = Assert.Throws<StoreException>(() => SqliteTaskStore.Open(new SqliteStoreOptions(DbPath)));

        Assert.Contains("not a tatzelwurm database", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("UPDATE task_state SET state = 42", "unknown state 42")]
    // 258 and 259 would wrap to valid byte values (2 and 3) if cast unchecked.
    [InlineData("UPDATE tasks SET policy = 258", "unknown delivery policy 258")]
    [InlineData("UPDATE task_state SET pending_control = 259", "pending control 259")]
    public async Task Load_RowWithUnknownEnumValue_IsRefusedNotGuessed(string tamper, string expected)
    {
        await using var store = await CommitOneAsync();
        using (var c = new SqliteConnection($"Data Source={DbPath};Pooling=false"))
        {
            c.Open();
            Scalar(c, tamper);
        }

        var ex = await Assert.ThrowsAsync<StoreException>(() => store.LoadAsync(Ct));

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_NotASqliteFile_ThrowsStoreException()
    {
        File.WriteAllText(DbPath, new string('x', 4096));

        Assert.Throws<StoreException>(() => SqliteTaskStore.Open(new SqliteStoreOptions(DbPath)));
    }

    [Fact]
    public async Task Open_MissingDirectory_IsCreated()
    {
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(_dir.File("data/sub/tatzelwurm.db")));

        Assert.True(File.Exists(_dir.File("data/sub/tatzelwurm.db")));
    }

    [Fact]
    public async Task Migrate_AppendedMigration_RunsOnceAndBumpsTheVersion()
    {
        await (await CommitOneAsync()).DisposeAsync();
        // Stand-ins for the released migrations, already applied.
        string[] released = [.. Enumerable.Repeat("-- released", SqliteSchema.CurrentVersion)];
        string[] next = [.. released, "ALTER TABLE tasks ADD COLUMN note TEXT; UPDATE tasks SET note = 'migrated';"];

        using var c = new SqliteConnection($"Data Source={DbPath};Pooling=false");
        c.Open();
        SqliteSchema.Migrate(c, DbPath, next);
        SqliteSchema.Migrate(c, DbPath, next); // already there: nothing to do

        Assert.Equal((long)next.Length, Scalar(c, "PRAGMA user_version"));
        Assert.Equal("migrated", Scalar(c, "SELECT note FROM tasks WHERE id = 1"));
    }

    [Fact]
    public async Task Migrate_RealV1FileWithJsonHistory_MovesStateAndHistoryBlobIntoTaskStateAndLoadsTheSame()
    {
        // A file exactly as v1 wrote it: the v1 SQL, rows with the history as JSON text.
        var full = Full(1, TaskState.Terminated);
        var minimal = Minimal(2);
        var oneEntry = Minimal(3) with { History = [new Transition(TaskState.Created, T0, "")] };
        // Reasons whose UTF-8 lengths take 2 and 3 bytes of varint (ü is 2 bytes).
        var longReasons = Minimal(4) with
        {
            History = [new Transition(TaskState.Created, T0, new string('ü', 100)), new Transition(TaskState.Ready, T0.AddSeconds(1), new string('x', 20_000))],
        };
        using (var c = new SqliteConnection($"Data Source={DbPath};Pooling=false"))
        {
            c.Open();
            SqliteSchema.Migrate(c, DbPath, SqliteSchema.Released.Take(1).ToList());
            Scalar(c, "INSERT INTO tasks VALUES (1, 5, 'aiida.calcjob', -7, '[\"gpu\",\"site:cscs\"]', x'000102FF802A', 2, 1, 3, x'090807', "
                + "'boom: \"quoted\"' || char(10) || 'second line', 'worker-7', 2, 4, 3, "
                + $"{T0.AddSeconds(5).ToUnixTimeMilliseconds()}, 'operator said so', {T0.ToUnixTimeMilliseconds()}, {T0.AddSeconds(6).ToUnixTimeMilliseconds()}, "
                + $"'[[0,{T0.ToUnixTimeMilliseconds()}],[1,{T0.AddMilliseconds(1).ToUnixTimeMilliseconds()},\"play\"],"
                + $"[5,{T0.AddSeconds(6).ToUnixTimeMilliseconds()},\"ünïcödé ✓ \\\"and\\\" \\\\ <tags>\"]]')");
            Scalar(c, $"INSERT INTO tasks VALUES (2, 0, 't', 0, '[]', x'', 1, 0, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, {T0.ToUnixTimeMilliseconds()}, {T0.ToUnixTimeMilliseconds()}, '[]')");
            Scalar(c, $"INSERT INTO tasks VALUES (3, 0, 't', 0, '[]', x'', 1, 0, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, {T0.ToUnixTimeMilliseconds()}, {T0.ToUnixTimeMilliseconds()}, '[[0,{T0.ToUnixTimeMilliseconds()},\"\"]]')");
            Scalar(c, $"INSERT INTO tasks VALUES (4, 0, 't', 0, '[]', x'', 1, 0, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, {T0.ToUnixTimeMilliseconds()}, {T0.ToUnixTimeMilliseconds()}, "
                + $"json_array(json_array(0, {T0.ToUnixTimeMilliseconds()}, '{new string('ü', 100)}'), json_array(1, {T0.AddSeconds(1).ToUnixTimeMilliseconds()}, '{new string('x', 20_000)}')))");
            Scalar(c, "UPDATE meta SET value = 4");
            Assert.Equal(1L, Scalar(c, "PRAGMA user_version"));
        }

        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));

        Same(new StoreSnapshot([full, minimal, oneEntry, longReasons], new Dictionary<string, int>(), 4), await store.LoadAsync(Ct));
        using var check = new SqliteConnection($"Data Source={DbPath};Mode=ReadOnly;Pooling=false");
        check.Open();
        Assert.Equal((long)SqliteSchema.CurrentVersion, Scalar(check, "PRAGMA user_version"));
        Assert.Equal("id,type,priority,tags,payload,policy,no_reply,created_at", Scalar(check, "SELECT group_concat(name, ',') FROM pragma_table_info('tasks')"));
        Assert.Equal(6L, Scalar(check, "SELECT sum(history_count) FROM task_state"));
        Assert.Equal(0L, Scalar(check, "SELECT count(*) FROM sqlite_schema WHERE name IN ('tasks_v2', 'task_history')"));
    }

    [Fact]
    public async Task Load_TerminatedTask_ComesWithItsPayloadSizeButNotItsBytes()
    {
        // Recovery skips the blob the coordinator's table would drop anyway; the row keeps it.
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        var running = Full(1, TaskState.Run);
        var done = Full(2, TaskState.Ready);
        await store.CommitAsync(Batch([running, done]), Ct);
        var terminated = Moved(done, TaskState.Terminated, "done");
        await store.CommitAsync(Batch(updates: [Updated(done, terminated)]), Ct);

        var loaded = (await store.LoadAsync(Ct)).Tasks;

        Assert.Equal(running.Payload.ToArray(), loaded[0].Payload.ToArray());
        Assert.Equal(running.PayloadSize, loaded[0].PayloadSize);
        Assert.Equal(TaskState.Terminated, loaded[1].State);
        Assert.True(loaded[1].Payload.IsEmpty);
        Assert.Equal(done.Payload.Length, loaded[1].PayloadSize);
        using var c = new SqliteConnection($"Data Source={DbPath};Mode=ReadOnly;Pooling=false");
        c.Open();
        Assert.Equal(done.Payload.ToArray(), Scalar(c, "SELECT payload FROM tasks WHERE id = 2"));
    }

    [Fact]
    public async Task Commit_NewTaskWithoutItsPayloadBytes_IsRefusedAndNothingWritten()
    {
        // Only the table's copy of a terminated task lacks its bytes; inserting it would lose them.
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        var full = Full(1, TaskState.Terminated);
        var bare = full with { Payload = default, PayloadSize = full.PayloadSize };

        var ex = await Assert.ThrowsAsync<StoreException>(() => store.CommitAsync(Batch([bare]), Ct));

        Assert.Contains("payload", ex.Message, StringComparison.Ordinal);
        Assert.Empty((await store.LoadAsync(Ct)).Tasks);
    }

    [Fact]
    public async Task Delete_Task_RemovesItsStateRowToo()
    {
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        await store.CommitAsync(Batch([Full(1), Full(2)]), Ct);

        await store.CommitAsync(Batch(deletes: [1], lastTaskId: 2), Ct);

        using var c = new SqliteConnection($"Data Source={DbPath};Mode=ReadOnly;Pooling=false");
        c.Open();
        Assert.Equal(0L, Scalar(c, "SELECT count(*) FROM task_state WHERE id = 1"));
        Assert.Equal(3L, Scalar(c, "SELECT history_count FROM task_state WHERE id = 2"));
    }

    [Fact]
    public async Task Commit_SameBatchTwice_DoesNotAppendTheHistoryTwice()
    {
        // A batch whose commit succeeded although its caller saw a failure comes again with the
        // same base: the stored entry count no longer matches, so the task is rewritten whole.
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        var stored = Full(1, TaskState.Ready);
        await store.CommitAsync(Batch([stored]), Ct);
        var next = Moved(Moved(stored, TaskState.Submit), TaskState.Run, "go");
        var batch = Batch(updates: [Updated(stored, next)]);

        await store.CommitAsync(batch, Ct);
        await store.CommitAsync(batch, Ct);

        Same(next, Assert.Single((await store.LoadAsync(Ct)).Tasks));
        using var c = new SqliteConnection($"Data Source={DbPath};Mode=ReadOnly;Pooling=false");
        c.Open();
        Assert.Equal(5L, Scalar(c, "SELECT history_count FROM task_state WHERE id = 1"));
    }

    [Fact]
    public void HistoryBlob_RoundTrips()
    {
        Transition[] history =
        [
            new(TaskState.Created, T0, null),
            new(TaskState.Ready, T0.AddMilliseconds(1), ""),
            new(TaskState.Pause, DateTimeOffset.UnixEpoch.AddYears(-1), "ünïcödé ✓"),
            new(TaskState.Terminated, T0.AddDays(400), new string('r', 300)),
        ];
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();

        // Written in two appends, as two commits do.
        HistoryBlob.Write(buffer, history[..1], 0, header: true);
        HistoryBlob.Write(buffer, history, 1, header: false);

        Assert.Equal(HistoryBlob.Format, buffer.WrittenSpan[0]);
        Assert.Equal(history, HistoryBlob.Read(1, buffer.WrittenSpan, history.Length, new StringPool(), []));
        Assert.Empty(HistoryBlob.Read(1, [HistoryBlob.Format], 0, new StringPool(), []));
    }

    [Theory]
    [InlineData("", 0, "empty")]
    [InlineData("02", 0, "unknown format 2")]
    [InlineData("01 00 0000000000", 1, "entry 0 is truncated")]
    [InlineData("01 06 0000000000000000", 1, "unknown state 6")]
    [InlineData("01 80 0000000000000000", 1, "reason length is truncated")]
    [InlineData("01 80 0000000000000000 05 6162", 1, "runs past the end")]
    [InlineData("01 80 0000000000000000 FFFFFFFFFF01", 1, "reason length is truncated or too long")]
    [InlineData("01 00 0000000000000000", 2, "1 entries where the row says 2")]
    public void HistoryBlob_Damaged_IsRefused(string hex, long count, string message)
    {
        var blob = Convert.FromHexString(hex.Replace(" ", "", StringComparison.Ordinal));

        var ex = Assert.Throws<StoreException>(() => HistoryBlob.Read(7, blob, count, new StringPool(), []));

        Assert.Contains("task 7 has a damaged history", ex.Message, StringComparison.Ordinal);
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Load_NeighboursWithEqualHistories_ShareOneAndTheOthersKeepTheirOwn()
    {
        var created = Minimal(1) with { State = TaskState.Ready, History = [new Transition(TaskState.Ready, T0, null)] };
        TaskRecord[] tasks = [created, created with { Id = 2 }, Moved(created with { Id = 3 }, TaskState.Submit, "assigned"), created with { Id = 4 }];
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        await store.CommitAsync(Batch(tasks), Ct);

        var loaded = (await store.LoadAsync(Ct)).Tasks;

        Same(new StoreSnapshot(tasks, new Dictionary<string, int>(), 4), new StoreSnapshot(loaded, new Dictionary<string, int>(), 4));
        Assert.Same(loaded[0].History, loaded[1].History);
        Assert.NotSame(loaded[1].History, loaded[2].History);
        Assert.Equal(2, loaded[2].History.Count);
    }

    [Fact]
    public async Task Load_DamagedHistoryBlob_IsRefusedWithTheTask()
    {
        await (await CommitOneAsync()).DisposeAsync();
        using (var c = new SqliteConnection($"Data Source={DbPath};Pooling=false"))
        {
            c.Open();
            Scalar(c, "UPDATE task_state SET history = substr(history, 1, length(history) - 3) WHERE id = 1");
        }

        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));

        var ex = await Assert.ThrowsAsync<StoreException>(() => store.LoadAsync(Ct));
        Assert.Contains("task 1 has a damaged history", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Load_TaskWithoutItsStateRow_IsRefusedNotSkipped()
    {
        await using var store = await CommitOneAsync();
        using (var c = new SqliteConnection($"Data Source={DbPath};Pooling=false"))
        {
            c.Open();
            Scalar(c, "DELETE FROM task_state WHERE id = 1");
        }

        var ex = await Assert.ThrowsAsync<StoreException>(() => store.LoadAsync(Ct));

        Assert.Contains("task 1 has no task_state row", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Commit_UpdateOfATaskWithoutARow_WritesTheWholeTask()
    {
        // A batch that wrongly claims a stored row must not lose the task.
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        var task = Full(1);

        await store.CommitAsync(Batch(updates: [new TaskUpsert(task, 2)]), Ct);

        Same(task, Assert.Single((await store.LoadAsync(Ct)).Tasks));
    }

    [Fact]
    public async Task Schema_IsInspectableWithPlainSql()
    {
        await using var store = await CommitOneAsync();

        using var c = new SqliteConnection($"Data Source={DbPath};Mode=ReadOnly;Pooling=false");
        c.Open();
        Assert.Equal(
            "id,type,priority,tags,payload,policy,no_reply,created_at",
            Scalar(c, "SELECT group_concat(name, ',') FROM pragma_table_info('tasks')"));
        Assert.Equal(
            "id,state,worker_id,exit_code,result,error,attempts,layers,pending_control,kill_requested_at,reason,updated_at,history_count,history",
            Scalar(c, "SELECT group_concat(name, ',') FROM pragma_table_info('task_state')"));
        Assert.Equal(3L, Scalar(c, "SELECT state FROM task_state WHERE id = 1")); // TaskState.Run's frozen value
        Assert.Equal("[\"gpu\",\"site:cscs\"]", Scalar(c, "SELECT tags FROM tasks"));
        Assert.Equal("site:cscs", Scalar(c, "SELECT value FROM tasks, json_each(tasks.tags) WHERE json_each.key = 1"));
        // Format byte, then Created at T0 without a reason.
        Assert.Equal($"0100{T0.ToUnixTimeMilliseconds():X16}", Scalar(c, "SELECT hex(substr(history, 1, 10)) FROM task_state WHERE id = 1"));
        Assert.Equal("blob", Scalar(c, "SELECT typeof(history) FROM task_state"));
        Assert.Equal(3L, Scalar(c, "SELECT history_count FROM task_state WHERE id = 1"));
        Assert.Equal(T0.AddSeconds(6).ToUnixTimeMilliseconds(), Scalar(c, "SELECT updated_at FROM task_state"));
        Assert.Equal("blob", Scalar(c, "SELECT typeof(payload) FROM tasks"));
        Assert.Equal(1L, Scalar(c, "SELECT value FROM meta WHERE key = 'last_task_id'"));
        Assert.Equal(2L, Scalar(c, "SELECT max_running FROM tag_limits WHERE tag = 'gpu'"));
        Assert.Equal("wal", Scalar(c, "PRAGMA journal_mode"));
    }

    [Fact]
    public async Task Dispose_CheckpointsSoNothingIsLeftInTheWal()
    {
        await (await CommitOneAsync()).DisposeAsync();

        Assert.True(!File.Exists(DbPath + "-wal") || new FileInfo(DbPath + "-wal").Length == 0);
        await using var reopened = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        Assert.Single((await reopened.LoadAsync(Ct)).Tasks);
    }

    [Fact]
    public async Task IntervalMode_AfterOneInterval_CommitsAreCheckpointedIntoTheMainFile()
    {
        var clock = new FakeTimeProvider();
        var options = new SqliteStoreOptions(DbPath) { Durability = Durability.Interval, SyncInterval = TimeSpan.FromMilliseconds(250), TimeProvider = clock };
        await using var store = SqliteTaskStore.Open(options);
        await store.CommitAsync(Batch([Full(1)]), Ct);
        Assert.Empty(await LoadMainFileOnlyAsync("before"));

        clock.Advance(TimeSpan.FromMilliseconds(249));
        clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(await store.SyncAttemptsForTests!.WaitAsync(TimeSpan.FromSeconds(30), Ct));

        // The checkpoint fsyncs the WAL, then copies it into the main file: the main file alone has the task.
        Same(Full(1), Assert.Single(await LoadMainFileOnlyAsync("after")));
    }

    private async Task<IReadOnlyList<TaskRecord>> LoadMainFileOnlyAsync(string name)
    {
        var copy = _dir.File($"{name}/tatzelwurm.db");
        Directory.CreateDirectory(Path.GetDirectoryName(copy)!);
        File.Copy(DbPath, copy);
        await using var store = SqliteTaskStore.Open(new SqliteStoreOptions(copy));
        return (await store.LoadAsync(Ct)).Tasks;
    }

    // Each commit, once inside the store, signals entered and waits until release is set.
    private (SqliteStoreOptions Options, TaskCompletionSource Entered, TaskCompletionSource Release) BlockingCommits()
    {
        var entered = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        var options = new SqliteStoreOptions(DbPath)
        {
            FailCommit = _ =>
            {
                entered.TrySetResult();
                release.Task.Wait(TestContext.Current.CancellationToken);
                return false;
            },
        };
        return (options, entered, release);
    }

    [Fact]
    public async Task Commit_Concurrently_IsRefused()
    {
        var (options, entered, release) = BlockingCommits();
        await using var store = SqliteTaskStore.Open(options);

        var first = Task.Run(() => store.CommitAsync(Batch([Minimal(1)]), Ct), Ct);
        await entered.Task.WaitAsync(Ct);
        Assert.Throws<InvalidOperationException>(() => { _ = store.CommitAsync(Batch([Minimal(2)]), Ct); });
        release.SetResult();
        await first;
    }

    [Fact]
    public async Task Dispose_DuringACommit_IsRefusedAndTheCommitCompletes()
    {
        // SQLite runs without its mutexes, so closing the connection under a commit must not happen.
        var (options, entered, release) = BlockingCommits();
        await using var store = SqliteTaskStore.Open(options);

        var commit = Task.Run(() => store.CommitAsync(Batch([Minimal(1)]), Ct), Ct);
        await entered.Task.WaitAsync(Ct);
        await Assert.ThrowsAsync<InvalidOperationException>(() => store.DisposeAsync().AsTask());
        release.SetResult();
        await commit;
        Assert.Equal([1L], (await store.LoadAsync(Ct)).Tasks.Select(t => t.Id));
    }

    [Fact]
    public async Task WithDurability_IntervalSpec_SetsModeAndPeriodAndShowsInDescription()
    {
        var options = new SqliteStoreOptions(DbPath).WithDurability("interval:50ms");

        Assert.Equal(Durability.Interval, options.Durability);
        Assert.Equal(TimeSpan.FromMilliseconds(50), options.SyncInterval);
        await using var store = SqliteTaskStore.Open(options);
        Assert.Equal($"sqlite {DbPath} (durability interval, sync every 50 ms)", store.Description);
    }

    [Fact]
    public void WithDurability_ModeWithoutInterval_KeepsTheConfiguredPeriod()
    {
        var options = new SqliteStoreOptions(DbPath) { SyncInterval = TimeSpan.FromSeconds(1) }.WithDurability("interval");

        Assert.Equal(TimeSpan.FromSeconds(1), options.SyncInterval);
    }

    [Theory]
    [InlineData("full", Durability.Full, null)]
    [InlineData(" FULL ", Durability.Full, null)]
    [InlineData("none", Durability.None, null)]
    [InlineData("interval", Durability.Interval, null)]
    [InlineData("interval:250ms", Durability.Interval, 250)]
    [InlineData("interval:250", Durability.Interval, 250)]
    [InlineData("interval:2s", Durability.Interval, 2000)]
    public void ParseDurability_ValidSpec_GivesModeAndInterval(string spec, Durability mode, int? intervalMs)
    {
        var (parsedMode, interval) = SqliteStoreOptions.ParseDurability(spec);

        Assert.Equal(mode, parsedMode);
        Assert.Equal(intervalMs, (int?)interval?.TotalMilliseconds);
    }

    [Theory]
    [InlineData("")]
    [InlineData("fast")]
    [InlineData("full:10")]
    [InlineData("interval:")]
    [InlineData("interval:0")]
    [InlineData("interval:-5ms")]
    [InlineData("interval:1.5s")]
    [InlineData("interval:abc")]
    public void ParseDurability_InvalidSpec_ThrowsFormatException(string spec)
    {
        Assert.Throws<FormatException>(() => SqliteStoreOptions.ParseDurability(spec));
    }

    [Fact]
    public void Options_Default_IsFullDurability()
    {
        Assert.Equal(Durability.Full, new SqliteStoreOptions("x.db").Durability);
    }

    private async Task<SqliteTaskStore> CommitOneAsync()
    {
        var store = SqliteTaskStore.Open(new SqliteStoreOptions(DbPath));
        await store.CommitAsync(Batch([Full(1)], tagLimits: [Limit("gpu", 2)]), Ct);
        return store;
    }

    private static object? Scalar(SqliteConnection c, string sql)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        return cmd.ExecuteScalar();
    }
}
