using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Data.Sqlite;
using Tatzelwurm.Core;

namespace Tatzelwurm.Storage;

/// <summary>
/// The default store: one SQLite file in WAL mode, one transaction per group commit. Owned by the
/// coordinator's single writer; not safe for concurrent commits. See docs/storage.md.
/// </summary>
public sealed class SqliteTaskStore : ITaskStore
{
    private const string UpsertSql = """
        INSERT INTO tasks (id, state, type, priority, tags, payload, policy, no_reply, exit_code, result, error,
                           worker_id, attempts, layers, pending_control, kill_requested_at, reason, created_at, updated_at, history)
        VALUES ($id, $state, $type, $priority, $tags, $payload, $policy, $no_reply, $exit_code, $result, $error,
                $worker_id, $attempts, $layers, $pending_control, $kill_requested_at, $reason, $created_at, $updated_at, $history)
        ON CONFLICT (id) DO UPDATE SET
            state = excluded.state, type = excluded.type, priority = excluded.priority, tags = excluded.tags,
            payload = excluded.payload, policy = excluded.policy, no_reply = excluded.no_reply,
            exit_code = excluded.exit_code, result = excluded.result, error = excluded.error,
            worker_id = excluded.worker_id, attempts = excluded.attempts, layers = excluded.layers,
            pending_control = excluded.pending_control, kill_requested_at = excluded.kill_requested_at,
            reason = excluded.reason, created_at = excluded.created_at, updated_at = excluded.updated_at,
            history = excluded.history
        """;

    private readonly SqliteStoreOptions _options;
    private readonly string _connectionString;
    private readonly JsonColumns _json = new();
    private Writer? _writer;
    private IntervalSyncer? _syncer;
    private long _lastTaskId;
    private int _busy;
    private bool _disposed;

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
            foreach (var task in batch.Upserts)
            {
                w.BindUpsert(task, _json);
                w.Upsert.ExecuteNonQuery();
            }

            foreach (var id in batch.Deletes)
            {
                w.DeleteId.Value = id;
                w.Delete.ExecuteNonQuery();
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
    private sealed class Writer : IDisposable
    {
        private readonly SqliteParameter[] _upsert;

        public Writer(SqliteConnection connection)
        {
            Connection = connection;
            Upsert = Command(UpsertSql);
            _upsert = new SqliteParameter[20];
            string[] names =
            [
                "$id", "$state", "$type", "$priority", "$tags", "$payload", "$policy", "$no_reply", "$exit_code", "$result", "$error",
                "$worker_id", "$attempts", "$layers", "$pending_control", "$kill_requested_at", "$reason", "$created_at", "$updated_at", "$history",
            ];
            for (var i = 0; i < names.Length; i++)
            {
                _upsert[i] = Upsert.Parameters.AddWithValue(names[i], DBNull.Value);
            }

            Delete = Command("DELETE FROM tasks WHERE id = $id");
            DeleteId = Delete.Parameters.Add("$id", SqliteType.Integer);
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

        public SqliteCommand Upsert { get; }

        public SqliteCommand Delete { get; }

        public SqliteParameter DeleteId { get; }

        public SqliteCommand TagSet { get; }

        public SqliteParameter TagSetTag { get; }

        public SqliteParameter TagSetMax { get; }

        public SqliteCommand TagDelete { get; }

        public SqliteParameter TagDeleteTag { get; }

        public SqliteCommand SetLastId { get; }

        public SqliteParameter LastIdValue { get; }

        public void Enlist(SqliteTransaction tx)
        {
            Upsert.Transaction = tx;
            Delete.Transaction = tx;
            TagSet.Transaction = tx;
            TagDelete.Transaction = tx;
            SetLastId.Transaction = tx;
        }

        public void BindUpsert(TaskRecord t, JsonColumns json)
        {
            var p = _upsert;
            p[0].Value = t.Id;
            p[1].Value = (int)t.State;
            p[2].Value = t.Type;
            p[3].Value = t.Priority;
            p[4].Value = json.WriteTags(t.Tags);
            p[5].Value = AsArray(t.Payload);
            p[6].Value = (int)t.Policy;
            p[7].Value = t.NoReply ? 1 : 0;
            p[8].Value = t.ExitCode is { } code ? code : DBNull.Value;
            p[9].Value = t.Result is { } result ? result : DBNull.Value;
            p[10].Value = t.Error is { } error ? error : DBNull.Value;
            p[11].Value = t.WorkerId is { } worker ? worker : DBNull.Value;
            p[12].Value = t.Attempts;
            p[13].Value = t.Layers;
            p[14].Value = (int)t.PendingControl;
            p[15].Value = t.KillRequestedAt is { } kill ? kill.ToUnixTimeMilliseconds() : DBNull.Value;
            p[16].Value = t.Reason is { } reason ? reason : DBNull.Value;
            p[17].Value = t.CreatedAt.ToUnixTimeMilliseconds();
            p[18].Value = t.UpdatedAt.ToUnixTimeMilliseconds();
            p[19].Value = json.WriteHistory(t.History);
        }

        public long ReadLastTaskId() =>
            Convert.ToInt64(Scalar(Connection, "SELECT value FROM meta WHERE key = 'last_task_id'"), CultureInfo.InvariantCulture);

        public void Checkpoint(string mode) => Exec(Connection, $"PRAGMA wal_checkpoint({mode})");

        public void Dispose()
        {
            Upsert.Dispose();
            Delete.Dispose();
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

        // The whole backing array when there is one (the usual case), so a payload is not copied
        // before SQLite copies it.
        private static byte[] AsArray(ReadOnlyMemory<byte> memory) =>
            MemoryMarshal.TryGetArray(memory, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
                ? segment.Array
                : memory.ToArray();

        private SqliteCommand Command(string sql)
        {
            var cmd = Connection.CreateCommand();
            cmd.CommandText = sql;
            return cmd;
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
