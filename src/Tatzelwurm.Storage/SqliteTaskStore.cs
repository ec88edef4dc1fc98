using System.Buffers;
using System.Globalization;
using Microsoft.Data.Sqlite;
using SQLitePCL;
using Tatzelwurm.Core;

namespace Tatzelwurm.Storage;

/// <summary>
/// The default store: one SQLite file in WAL mode, one transaction per group commit. Owned by the
/// coordinator's single writer; not safe for concurrent commits. See docs/storage.md.
/// </summary>
public sealed class SqliteTaskStore : ITaskStore
{
    // Positional parameters (?N), bound by number in Writer: SQLite's lookup of named ones was ~4%
    // of the coordinator's CPU. OR REPLACE: re-writing an image (a retried or replayed batch)
    // overwrites it instead of failing every later commit on a constraint.
    private const string InsertTaskSql = """
        INSERT OR REPLACE INTO tasks (id, type, priority, tags, payload, policy, no_reply, created_at)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
        """;

    private const string InsertStateSql = """
        INSERT OR REPLACE INTO task_state (id, state, worker_id, exit_code, result, error, attempts, layers, pending_control,
                                           kill_requested_at, reason, updated_at, history_count, history)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
        """;

    // Same parameters as InsertStateSql plus the stored entry count; ?14 holds only the new
    // entries. The count condition makes a re-commit of an already committed batch (its base is
    // stale) change nothing, so the caller rewrites the row instead of appending entries twice.
    // CAST: || yields TEXT, which would keep the bytes but end length() at the first zero byte.
    private const string UpdateStateSql = """
        UPDATE task_state SET state = ?2, worker_id = ?3, exit_code = ?4, result = ?5, error = ?6, attempts = ?7, layers = ?8,
                              pending_control = ?9, kill_requested_at = ?10, reason = ?11, updated_at = ?12,
                              history_count = ?13, history = CAST(history || ?14 AS BLOB)
        WHERE id = ?1 AND history_count = ?15
        """;

    private const string DeleteStateSql = "DELETE FROM task_state WHERE id = ?1";

    private const string DeleteTaskSql = "DELETE FROM tasks WHERE id = ?1";

    private readonly SqliteStoreOptions _options;
    private readonly string _connectionString;
    private readonly JsonColumns _json = new();
    private Writer? _writer;
    private IntervalSyncer? _syncer;
    private long _lastTaskId;
    private int _busy;
    private bool _disposed;

    static SqliteTaskStore()
    {
        // Before SQLite initializes (its first open in this process). Multi-thread mode drops the
        // mutex every API call takes: each connection here is used by one thread at a time (the
        // writer's commits never overlap, the syncer and the recovery scans have their own). No
        // memory statistics drops the global mutex around every allocation. Together the mutexes
        // were 5–6% of the coordinator's CPU in a profile (pthread_mutex_lock/unlock). If SQLite was
        // already initialized by other code in the process, both calls fail with SQLITE_MISUSE and
        // SQLite stays in its serialized mode: slower, not wrong.
        Batteries_V2.Init();
        MultiThreaded = raw.sqlite3_config(raw.SQLITE_CONFIG_MULTITHREAD) == raw.SQLITE_OK
            & raw.sqlite3_config(raw.SQLITE_CONFIG_MEMSTATUS, 0) == raw.SQLITE_OK;
    }

    /// <summary>Whether SQLite took the configuration above (false: it was initialized before this class).</summary>
    internal static bool MultiThreaded { get; }

    private SqliteTaskStore(SqliteStoreOptions options, string fullPath)
    {
        _options = options;
        FullPath = fullPath;
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = fullPath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            // Closing must really close the file, so DisposeAsync leaves nothing behind and a
            // reopen after a failure starts from what is on disk.
            Pooling = false,
        }.ToString();
        Description = options.Durability == Durability.Interval
            ? $"sqlite {fullPath} (durability interval, sync every {options.SyncInterval.TotalMilliseconds:0} ms)"
            : $"sqlite {fullPath} (durability {options.Durability.ToString().ToLowerInvariant()})";
    }

    public string Description { get; }

    public string FullPath { get; }

    /// <summary>Opens (creating or migrating if needed) the database file.</summary>
    /// <exception cref="StoreException">The file cannot be opened, is not a tatzelwurm database, or has a newer schema.</exception>
    public static SqliteTaskStore Open(SqliteStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Durability == Durability.Interval && options.SyncInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException("SyncInterval must be positive", nameof(options));
        }

        var fullPath = Path.GetFullPath(options.Path);
        var store = new SqliteTaskStore(options, fullPath);
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(fullPath)!);
            var writer = store.OpenWriter(migrate: true);
            store._writer = writer;
            store._lastTaskId = writer.ReadLastTaskId();
            if (options.Durability == Durability.Interval)
            {
                store._syncer = new IntervalSyncer(store.OpenConnection("NORMAL"), options.SyncInterval, options.TimeProvider);
            }

            return store;
        }
        catch (Exception ex) when (ex is SqliteException or IOException or UnauthorizedAccessException)
        {
            store._writer?.Dispose();
            throw new StoreException($"{fullPath}: cannot open the task store: {ex.Message}", ex);
        }
        catch
        {
            store._writer?.Dispose();
            throw;
        }
    }

    /// <remarks>
    /// Runs synchronously, scanning with one thread per core (up to 4). Must not overlap a commit:
    /// the parallel scans each see the database as of their own start.
    /// </remarks>
    public Task<StoreSnapshot> LoadAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        EnterExclusive();
        try
        {
            return Task.FromResult(Load(cancellationToken));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled<StoreSnapshot>(cancellationToken);
        }
        catch (Exception ex)
        {
            return Task.FromException<StoreSnapshot>(ex);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <remarks>
    /// Runs synchronously on the caller's thread (SQLite has no async I/O); the writer task is the
    /// only caller, so blocking it for the fsync is the point.
    /// </remarks>
    public Task CommitAsync(StoreBatch batch, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled(cancellationToken);
        }

        EnterExclusive();
        try
        {
            if (_syncer?.TakeFailure() is { } syncFailure)
            {
                throw new StoreException($"background sync failed, recent commits may not be on disk: {syncFailure.Message}", syncFailure);
            }

            var lastId = Math.Max(_lastTaskId, batch.LastTaskId);
            if (!batch.IsEmpty || lastId != _lastTaskId)
            {
                Commit(batch, lastId);
                _lastTaskId = lastId;
            }

            return Task.CompletedTask;
        }
        catch (Exception ex)
        {
            return Task.FromException(ex);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    private void EnterExclusive()
    {
        if (Interlocked.Exchange(ref _busy, 1) != 0)
        {
            throw new InvalidOperationException("concurrent store call: the store takes one load or batch at a time from a single writer");
        }
    }

    /// <summary>Checkpoints the WAL into the main file and truncates it, so the next open has nothing to recover.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        // Never released: closing under a commit or a load would be undefined behaviour in SQLite's
        // multi-thread mode, so that fails loudly here instead.
        EnterExclusive();
        _disposed = true;
        _json.Dispose();
        if (_syncer is not null)
        {
            await _syncer.DisposeAsync().ConfigureAwait(false);
        }

        var writer = _writer;
        _writer = null;
        if (writer is null)
        {
            return;
        }

        try
        {
            writer.Checkpoint("TRUNCATE");
        }
        catch (SqliteException ex)
        {
            // The WAL still holds every commit; the next open replays it.
            throw new StoreException($"{FullPath}: final checkpoint failed ({ex.Message}); the WAL will be replayed on next open", ex);
        }
        finally
        {
            writer.Dispose();
        }
    }

    /// <summary>Test hook: the open connection, to simulate failures on it.</summary>
    internal SqliteConnection? ConnectionForTests => _writer?.Connection;

    /// <summary>Test hook: released after each background sync attempt (Interval mode only).</summary>
    internal SemaphoreSlim? SyncAttemptsForTests => _syncer?.Attempts;

    private void Commit(StoreBatch batch, long lastId)
    {
        var w = _writer ??= ReopenWriter();
        SqliteTransaction? tx = null;
        try
        {
            tx = w.Connection.BeginTransaction(deferred: false);
            w.Enlist(tx);
            foreach (var upsert in batch.Upserts)
            {
                w.Write(upsert, _json);
            }

            foreach (var id in batch.Deletes)
            {
                w.Delete(id);
            }

            foreach (var (tag, limit) in batch.TagLimits)
            {
                if (limit is { } max)
                {
                    w.TagSetTag.Value = tag;
                    w.TagSetMax.Value = max;
                    w.TagSet.ExecuteNonQuery();
                }
                else
                {
                    w.TagDeleteTag.Value = tag;
                    w.TagDelete.ExecuteNonQuery();
                }
            }

            w.LastIdValue.Value = lastId;
            w.SetLastId.ExecuteNonQuery();

            if (_options.FailCommit?.Invoke(batch) == true)
            {
                throw new IOException("simulated disk failure (SqliteStoreOptions.FailCommit)");
            }

            tx.Commit();
            tx.Dispose();
        }
        catch (Exception ex)
        {
            Abandon(w, tx);
            if (ex is SqliteException or IOException)
            {
                throw new StoreException(
                    $"{FullPath}: commit of {batch.Upserts.Count} upserts, {batch.Deletes.Count} deletes, {batch.TagLimits.Count} tag limits failed and was rolled back: {ex.Message}",
                    ex);
            }

            throw;
        }
    }

    // After a failure the connection is dropped: SQLite may have left it mid-transaction or with a
    // page cache we no longer trust. The next commit reopens from what is on disk.
    private void Abandon(Writer w, SqliteTransaction? tx)
    {
        try
        {
            tx?.Rollback();
        }
        catch (Exception)
        {
            // Already rolled back by SQLite (it does so itself on SQLITE_FULL / IOERR), or the
            // connection is unusable; closing it discards the transaction either way.
        }

        tx?.Dispose();
        w.Dispose();
        _writer = null;
    }

    private Writer ReopenWriter()
    {
        try
        {
            return OpenWriter(migrate: false);
        }
        catch (SqliteException ex)
        {
            throw new StoreException($"{FullPath}: cannot reopen the task store: {ex.Message}", ex);
        }
    }

    private Writer OpenWriter(bool migrate)
    {
        var sync = _options.Durability switch
        {
            Durability.Full => "FULL",
            Durability.Interval => "NORMAL",
            _ => "OFF",
        };
        var connection = OpenConnection(sync);
        try
        {
            if (migrate)
            {
                SqliteSchema.Migrate(connection, FullPath);
            }

            return new Writer(connection);
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    private SqliteConnection OpenConnection(string synchronous)
    {
        var connection = new SqliteConnection(_connectionString);
        try
        {
            connection.Open();
            var mode = Writer.Scalar(connection, "PRAGMA journal_mode = WAL") as string;
            if (!string.Equals(mode, "wal", StringComparison.OrdinalIgnoreCase))
            {
                throw new StoreException($"{FullPath}: SQLite refused WAL mode (journal_mode is '{mode}'); the file system may not support it");
            }

            Writer.Exec(connection, $"PRAGMA synchronous = {synchronous}");
            // Keeps a WAL that grew during a burst from staying large after it is checkpointed.
            Writer.Exec(connection, "PRAGMA journal_size_limit = 67108864");
            _options.ConfigureConnection?.Invoke(connection);
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    private StoreSnapshot Load(CancellationToken cancellationToken)
    {
        var w = _writer ??= ReopenWriter();
        List<TaskRecord> tasks;
        try
        {
            tasks = SqliteRecovery.ReadTasks(FullPath, cancellationToken);
        }
        catch (SqliteException ex)
        {
            throw new StoreException($"{FullPath}: cannot read tasks: {ex.Message}", ex);
        }
        catch (AggregateException ex) when (ex.InnerExceptions.All(e => e is SqliteException or StoreException))
        {
            var first = ex.InnerExceptions[0];
            throw first as StoreException ?? new StoreException($"{FullPath}: cannot read tasks: {first.Message}", first);
        }

        var tagLimits = new Dictionary<string, int>(StringComparer.Ordinal);
        using (var cmd = w.Connection.CreateCommand())
        {
            cmd.CommandText = "SELECT tag, max_running FROM tag_limits";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                tagLimits[reader.GetString(0)] = reader.GetInt32(1);
            }
        }

        var maxId = tasks.Count > 0 ? tasks[^1].Id : 0;
        _lastTaskId = Math.Max(w.ReadLastTaskId(), maxId);
        return new StoreSnapshot(tasks, tagLimits, _lastTaskId);
    }

    /// <summary>One open connection and its prepared statements, reused for every commit.</summary>
    /// <remarks>
    /// The per-record statements are prepared once through SQLitePCL and then bound, stepped and
    /// reset through NativeSqlite by raw pointer and parameter number: through ADO.NET every record
    /// paid for parameter lookup by name, value boxing and SafeHandle AddRef/Release on each call
    /// (~12% of the coordinator's CPU together). The rest stays on Microsoft.Data.Sqlite.
    /// </remarks>
    private sealed class Writer : IDisposable
    {
        private readonly IntPtr _db;
        private readonly Statement _insertTask;
        private readonly Statement _insertState;
        private readonly Statement _updateState;
        private readonly Statement _deleteState;
        private readonly Statement _deleteTask;
        private readonly ArrayBufferWriter<byte> _history = new(256);

        public Writer(SqliteConnection connection)
        {
            Connection = connection;
            _db = connection.Handle!.DangerousGetHandle();
            // A failed prepare (I/O error, out of memory on a reopen after a failure) must not leave the
            // statements made before it unfinalized: the connection would not really close.
            var prepared = new List<Statement>(5);
            Statement Prepare(string sql)
            {
                var statement = new Statement(connection, sql);
                prepared.Add(statement);
                return statement;
            }

            try
            {
                _insertTask = Prepare(InsertTaskSql);
                _insertState = Prepare(InsertStateSql);
                _updateState = Prepare(UpdateStateSql);
                _deleteState = Prepare(DeleteStateSql);
                _deleteTask = Prepare(DeleteTaskSql);
            }
            catch
            {
                prepared.ForEach(p => p.Dispose());
                throw;
            }

            TagSet = Command("INSERT INTO tag_limits (tag, max_running) VALUES ($tag, $max) ON CONFLICT (tag) DO UPDATE SET max_running = excluded.max_running");
            TagSetTag = TagSet.Parameters.Add("$tag", SqliteType.Text);
            TagSetMax = TagSet.Parameters.Add("$max", SqliteType.Integer);
            TagDelete = Command("DELETE FROM tag_limits WHERE tag = $tag");
            TagDeleteTag = TagDelete.Parameters.Add("$tag", SqliteType.Text);
            // max(): the id counter never goes backwards, whatever a batch says.
            SetLastId = Command("UPDATE meta SET value = max(value, $v) WHERE key = 'last_task_id'");
            LastIdValue = SetLastId.Parameters.Add("$v", SqliteType.Integer);
        }

        public SqliteConnection Connection { get; }

        public SqliteCommand TagSet { get; }

        public SqliteParameter TagSetTag { get; }

        public SqliteParameter TagSetMax { get; }

        public SqliteCommand TagDelete { get; }

        public SqliteParameter TagDeleteTag { get; }

        public SqliteCommand SetLastId { get; }

        public SqliteParameter LastIdValue { get; }

        public void Enlist(SqliteTransaction tx)
        {
            TagSet.Transaction = tx;
            TagDelete.Transaction = tx;
            SetLastId.Transaction = tx;
        }

        /// <summary>
        /// Writes what changed since the stored image the upsert names: a new task's two rows;
        /// otherwise its task_state row, appending the history entries after the stored ones.
        /// </summary>
        public void Write(TaskUpsert upsert, JsonColumns json)
        {
            var t = upsert.Task;
            if (!upsert.IsNew && upsert.StoredHistory <= t.History.Count)
            {
                UpdateState(t, upsert.StoredHistory);
                if (NativeSqlite.Changes(_db) != 0)
                {
                    return;
                }

                // No row with that many entries: it is missing although the batch says it is
                // stored, or this batch was committed before (a retry). Either way the whole task
                // is right and appending would not be.
            }

            // New, fallen back from the update above, or a history shorter than the stored one
            // (Core never shrinks it; rewriting is the safe answer if it ever does).
            InsertTask(t, json);
            InsertState(t);
        }

        public void Delete(long id)
        {
            var s = _deleteTask.Handle;
            Check(NativeSqlite.BindInt64(s, 1, id));
            Run(s);
            s = _deleteState.Handle;
            Check(NativeSqlite.BindInt64(s, 1, id));
            Run(s);
        }

        private void InsertTask(TaskRecord t, JsonColumns json)
        {
            // The task table drops a terminated task's bytes; such a copy written here would
            // replace the stored payload with nothing.
            if (t.Payload.Length != t.PayloadSize)
            {
                throw new StoreException($"task {t.Id}: the record holds {t.Payload.Length} of its {t.PayloadSize} payload bytes and cannot be written");
            }

            var s = _insertTask.Handle;
            var rc = NativeSqlite.BindInt64(s, 1, t.Id);
            rc |= NativeSqlite.BindText(s, 2, t.Type);
            rc |= NativeSqlite.BindInt64(s, 3, t.Priority);
            rc |= NativeSqlite.BindUtf8(s, 4, json.WriteTags(t.Tags));
            rc |= NativeSqlite.BindBlob(s, 5, t.Payload.Span);
            rc |= NativeSqlite.BindInt64(s, 6, (int)t.Policy);
            rc |= NativeSqlite.BindInt64(s, 7, t.NoReply ? 1 : 0);
            rc |= NativeSqlite.BindInt64(s, 8, t.CreatedAt.ToUnixTimeMilliseconds());
            Check(rc);
            Run(s);
        }

        private void InsertState(TaskRecord t)
        {
            var s = _insertState.Handle;
            _history.ResetWrittenCount();
            HistoryBlob.Write(_history, t.History, 0, header: true);
            var rc = BindState(s, t, _history.WrittenSpan);
            Check(rc);
            Run(s);
        }

        private void UpdateState(TaskRecord t, int stored)
        {
            var s = _updateState.Handle;
            _history.ResetWrittenCount();
            HistoryBlob.Write(_history, t.History, stored, header: false);
            var rc = BindState(s, t, _history.WrittenSpan);
            rc |= NativeSqlite.BindInt64(s, 15, stored);
            Check(rc);
            Run(s);
        }

        // id, state, worker_id, exit_code, result, error, attempts, layers, pending_control,
        // kill_requested_at, reason, updated_at, history_count, history: parameters 1 .. 14 of
        // both state statements. Bind results are OR-ed: any non-zero is a failure, reported by
        // Check with SQLite's message.
        private static int BindState(IntPtr s, TaskRecord t, ReadOnlySpan<byte> history)
        {
            var rc = NativeSqlite.BindInt64(s, 1, t.Id);
            rc |= NativeSqlite.BindInt64(s, 2, (int)t.State);
            rc |= NativeSqlite.BindText(s, 3, t.WorkerId);
            rc |= BindOptional(s, 4, t.ExitCode);
            rc |= t.Result is { } result ? NativeSqlite.BindBlob(s, 5, result) : NativeSqlite.BindNull(s, 5);
            rc |= NativeSqlite.BindText(s, 6, t.Error);
            rc |= NativeSqlite.BindInt64(s, 7, t.Attempts);
            rc |= NativeSqlite.BindInt64(s, 8, t.Layers);
            rc |= NativeSqlite.BindInt64(s, 9, (int)t.PendingControl);
            rc |= BindOptional(s, 10, t.KillRequestedAt?.ToUnixTimeMilliseconds());
            rc |= NativeSqlite.BindText(s, 11, t.Reason);
            rc |= NativeSqlite.BindInt64(s, 12, t.UpdatedAt.ToUnixTimeMilliseconds());
            rc |= NativeSqlite.BindInt64(s, 13, t.History.Count);
            rc |= NativeSqlite.BindBlob(s, 14, history);
            return rc;
        }

        private static int BindOptional(IntPtr s, int index, long? value) =>
            value is { } v ? NativeSqlite.BindInt64(s, index, v) : NativeSqlite.BindNull(s, index);

        private void Run(IntPtr s)
        {
            var rc = NativeSqlite.Step(s);
            if (rc != NativeSqlite.SqliteDone)
            {
                // The message before the reset, which may replace it.
                var error = Error(rc);
                _ = NativeSqlite.Reset(s); // returns the step's error again
                throw error;
            }

            _ = NativeSqlite.Reset(s); // after SQLITE_DONE it cannot fail
        }

        private void Check(int bindResult)
        {
            if (bindResult != 0)
            {
                throw Error(bindResult);
            }
        }

        private SqliteException Error(int rc) =>
            new(raw.sqlite3_errmsg(Connection.Handle).utf8_to_string(), rc, raw.sqlite3_extended_errcode(Connection.Handle));

        public long ReadLastTaskId() =>
            Convert.ToInt64(Scalar(Connection, "SELECT value FROM meta WHERE key = 'last_task_id'"), CultureInfo.InvariantCulture);

        public void Checkpoint(string mode) => Exec(Connection, $"PRAGMA wal_checkpoint({mode})");

        public void Dispose()
        {
            // Statements first: a connection with unfinalized statements does not really close.
            _insertTask.Dispose();
            _insertState.Dispose();
            _updateState.Dispose();
            _deleteState.Dispose();
            _deleteTask.Dispose();
            TagSet.Dispose();
            TagDelete.Dispose();
            SetLastId.Dispose();
            Connection.Dispose();
        }

        public static void Exec(SqliteConnection connection, string sql)
        {
            using var cmd = connection.CreateCommand();
            cmd.CommandText = sql;
            cmd.ExecuteNonQuery();
        }

        public static object? Scalar(SqliteConnection connection, string sql)
        {
            using var cmd = connection.CreateCommand();
            cmd.CommandText = sql;
            return cmd.ExecuteScalar();
        }

        private SqliteCommand Command(string sql)
        {
            var cmd = Connection.CreateCommand();
            cmd.CommandText = sql;
            return cmd;
        }
    }

    /// <summary>A statement prepared for the connection's life, held by its raw pointer.</summary>
    private sealed class Statement : IDisposable
    {
        private readonly sqlite3_stmt _stmt;
        private bool _added;

        public Statement(SqliteConnection connection, string sql)
        {
            var rc = raw.sqlite3_prepare_v3(connection.Handle, sql, raw.SQLITE_PREPARE_PERSISTENT, out _stmt);
            if (rc != raw.SQLITE_OK)
            {
                var message = raw.sqlite3_errmsg(connection.Handle).utf8_to_string();
                _stmt?.Dispose();
                throw new SqliteException(message, rc);
            }

            // One AddRef for the statement's life instead of one per call.
            _stmt.DangerousAddRef(ref _added);
            Handle = _stmt.DangerousGetHandle();
        }

        public IntPtr Handle { get; }

        public void Dispose()
        {
            if (_added)
            {
                _added = false;
                _stmt.DangerousRelease();
            }

            _stmt.Dispose();
        }
    }

    /// <summary>
    /// Durability.Interval: commits run with synchronous=NORMAL (no fsync); this checkpoints the WAL
    /// from a second connection every interval, and a checkpoint fsyncs the WAL before copying it.
    /// </summary>
    private sealed class IntervalSyncer : IAsyncDisposable
    {
        private readonly SqliteConnection _connection;
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;
        private Exception? _failure;

        public IntervalSyncer(SqliteConnection connection, TimeSpan interval, TimeProvider timeProvider)
        {
            _connection = connection;
            // Created here, not in the loop, so a test's fake clock cannot advance before it exists.
            var timer = new PeriodicTimer(interval, timeProvider);
            _loop = Task.Run(() => RunAsync(timer));
        }

        /// <summary>Released after every sync attempt; tests wait on it instead of sleeping.</summary>
        public SemaphoreSlim Attempts { get; } = new(0);

        public Exception? TakeFailure() => Interlocked.Exchange(ref _failure, null);

        private async Task RunAsync(PeriodicTimer timer)
        {
            using var cmd = _connection.CreateCommand();
            cmd.CommandText = "PRAGMA wal_checkpoint(PASSIVE)";
            try
            {
                while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false))
                {
                    try
                    {
                        cmd.ExecuteNonQuery();
                    }
                    catch (SqliteException ex)
                    {
                        Volatile.Write(ref _failure, ex);
                    }

                    Attempts.Release();
                }
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                timer.Dispose();
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync().ConfigureAwait(false);
            await _loop.ConfigureAwait(false);
            _stop.Dispose();
            Attempts.Dispose();
            await _connection.DisposeAsync().ConfigureAwait(false);
        }
    }
}
