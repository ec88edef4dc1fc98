using System.Runtime;
using System.Text;
using Microsoft.Data.Sqlite;
using SQLitePCL;
using Tatzelwurm.Core;

namespace Tatzelwurm.Storage;

/// <summary>
/// Reads every task at start. Recovery of a million tasks must take seconds (SPEC §7), so this path
/// bypasses ADO.NET: read-only connections opened with SQLITE_OPEN_NOMUTEX, one per core, each
/// scanning a slice of the id range, with column values read as spans straight from SQLite.
/// </summary>
internal static class SqliteRecovery
{
    // Both tables are keyed by id and read in that order: each task_state lookup lands next to the
    // previous one. LEFT JOIN so a task without its state row is reported, not skipped. The
    // coordinator keeps no payload bytes of terminated tasks (its terminated log), so their blob is not
    // copied out, only its length (SQLite answers length() from the record header, without reading a
    // large blob's overflow pages).
    // States are stored as their enum values (Writer binds (int)t.State).
    private static readonly string SelectRange = $"""
        SELECT t.id, s.state, t.type, t.priority, t.tags, CASE WHEN s.state = {(int)TaskState.Terminated} THEN NULL ELSE t.payload END, t.policy, t.no_reply,
               s.exit_code, s.result, s.error, s.worker_id, s.attempts, s.layers, s.pending_control, s.kill_requested_at, s.reason,
               t.created_at, s.updated_at, s.history_count, s.history, length(t.payload)
        FROM tasks AS t LEFT JOIN task_state AS s ON s.id = t.id
        WHERE t.id >= ?1 AND t.id < ?2 ORDER BY t.id
        """;

    // Below this many ids one scan is cheaper than starting threads.
    private const long ParallelThreshold = 20_000;

    // Below this the collections during a load are cheap anyway.
    private const long NoGcRegionMinimum = 64L << 20;

    public static List<TaskRecord> ReadTasks(string path, CancellationToken cancellationToken)
    {
        // Everything recovery allocates stays alive, so every collection during the load only
        // copies survivors: for a million tasks that was ~40% of the CPU time. A no-GC region sized
        // from the file skips them; if the estimate is short the runtime simply collects as usual.
        var noGc = TryStartNoGcRegion(EstimateHeapBytes(path));
        try
        {
            return ReadAll(path, cancellationToken);
        }
        finally
        {
            if (noGc && GCSettings.LatencyMode == GCLatencyMode.NoGCRegion)
            {
                try
                {
                    GC.EndNoGCRegion();
                }
                catch (InvalidOperationException)
                {
                    // The region already ended (it ran out or someone collected): nothing to undo.
                }
            }
        }
    }

    // Measured: the recovered heap is ~1.7x the database file (docs/storage.md).
    private static long EstimateHeapBytes(string path)
    {
        var file = FileLength(path) + FileLength(path + "-wal");
        return Math.Min(file * 2, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2);
    }

    private static long FileLength(string path)
    {
        var info = new FileInfo(path);
        return info.Exists ? info.Length : 0;
    }

    private static bool TryStartNoGcRegion(long bytes)
    {
        if (bytes < NoGcRegionMinimum)
        {
            return false;
        }

        try
        {
            return GC.TryStartNoGCRegion(bytes);
        }
        catch (Exception ex) when (ex is ArgumentOutOfRangeException or InvalidOperationException)
        {
            // Larger than the runtime allows, or the host is already in a no-GC region.
            return false;
        }
    }

    private static List<TaskRecord> ReadAll(string path, CancellationToken cancellationToken)
    {
        using var db = OpenReadOnly(path);
        var (min, max) = IdRange(db);
        if (max < min)
        {
            return [];
        }

        var parts = (int)Math.Clamp(Math.Min(Environment.ProcessorCount, 4), 1, (max - min + 1) / ParallelThreshold + 1);
        if (parts == 1)
        {
            return ReadRange(db, min, max + 1, cancellationToken);
        }

        // Equal slices of the id range: ids are dense apart from purged ranges, good enough to balance.
        var bounds = Enumerable.Range(0, parts + 1).Select(i => min + (max - min + 1) * i / parts).ToArray();
        var slices = new List<TaskRecord>[parts];
        Parallel.For(0, parts, new ParallelOptions { CancellationToken = cancellationToken, MaxDegreeOfParallelism = parts }, i =>
        {
            using var own = OpenReadOnly(path);
            slices[i] = ReadRange(own, bounds[i], bounds[i + 1], cancellationToken);
        });

        var tasks = new List<TaskRecord>(slices.Sum(s => s.Count));
        foreach (var slice in slices)
        {
            tasks.AddRange(slice);
        }

        return tasks;
    }

    private static sqlite3 OpenReadOnly(string path)
    {
        var rc = raw.sqlite3_open_v2(path, out var db, raw.SQLITE_OPEN_READONLY | raw.SQLITE_OPEN_NOMUTEX, null);
        if (rc != raw.SQLITE_OK)
        {
            var message = db is null ? raw.sqlite3_errstr(rc).utf8_to_string() : raw.sqlite3_errmsg(db).utf8_to_string();
            db?.Dispose();
            throw new SqliteException($"cannot open for recovery: {message}", rc);
        }

        raw.sqlite3_busy_timeout(db, 30_000);
        return db;
    }

    private static (long Min, long Max) IdRange(sqlite3 db)
    {
        Check(db, raw.sqlite3_prepare_v2(db, "SELECT ifnull(min(id), 1), ifnull(max(id), 0) FROM tasks", out var stmt));
        using (stmt)
        {
            var rc = raw.sqlite3_step(stmt);
            if (rc != raw.SQLITE_ROW)
            {
                Check(db, rc);
            }

            return (raw.sqlite3_column_int64(stmt, 0), raw.sqlite3_column_int64(stmt, 1));
        }
    }

    private static List<TaskRecord> ReadRange(sqlite3 db, long from, long to, CancellationToken cancellationToken)
    {
        var rows = new RowReader();
        var tasks = new List<TaskRecord>((int)Math.Min(to - from, 1 << 24));
        Check(db, raw.sqlite3_prepare_v2(db, SelectRange, out var stmt));
        using (stmt)
        {
            raw.sqlite3_bind_int64(stmt, 1, from);
            raw.sqlite3_bind_int64(stmt, 2, to);
            var added = false;
            stmt.DangerousAddRef(ref added);
            try
            {
                var handle = stmt.DangerousGetHandle();
                int rc;
                while ((rc = NativeSqlite.Step(handle)) == raw.SQLITE_ROW)
                {
                    tasks.Add(rows.Read(handle));
                    if ((tasks.Count & 0xFFFF) == 0)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                    }
                }

                if (rc != raw.SQLITE_DONE)
                {
                    Check(db, rc);
                }
            }
            finally
            {
                if (added)
                {
                    stmt.DangerousRelease();
                }
            }
        }

        return tasks;
    }

    private static void Check(sqlite3 db, int rc)
    {
        if (rc != raw.SQLITE_OK)
        {
            throw new SqliteException(raw.sqlite3_errmsg(db).utf8_to_string(), rc, raw.sqlite3_extended_errcode(db));
        }
    }

    /// <summary>Turns rows into records; one per thread (the pool and scratch lists are not shared).</summary>
    private sealed class RowReader
    {
        // Tasks mostly share a few tag sets; records are immutable, so they can share the array too.
        private const int MaxTagSets = 10_000;

        private readonly StringPool _pool = new();
        private readonly List<string> _tags = new(8);
        private readonly List<Transition> _history = new(16);
        private byte[] _previousBlob = new byte[64];
        private int _previousBlobLength = -1;
        private Transition[] _previousHistory = [];
        private readonly Dictionary<string, string[]> _tagSets = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string[]>.AlternateLookup<ReadOnlySpan<char>> _tagSetLookup;

        public RowReader()
        {
            _tagSetLookup = _tagSets.GetAlternateLookup<ReadOnlySpan<char>>();
        }

        private string[] ReadTags(ReadOnlySpan<byte> json)
        {
            if (json.Length <= 2 || json.Length > 256)
            {
                return JsonColumns.ReadTags(json, _pool, _tags);
            }

            Span<char> key = stackalloc char[json.Length];
            key = key[..Encoding.UTF8.GetChars(json, key)];
            if (_tagSetLookup.TryGetValue(key, out var shared))
            {
                return shared;
            }

            var tags = JsonColumns.ReadTags(json, _pool, _tags);
            if (_tagSets.Count < MaxTagSets)
            {
                _tagSets.Add(new string(key), tags);
            }

            return tags;
        }

        // Tasks added together have the same history until they move (one entry, same instant): a
        // task whose blob equals the one read before it shares that task's (immutable) history.
        private Transition[] ReadHistory(long id, ReadOnlySpan<byte> blob, long count)
        {
            if (_previousBlobLength >= 0 && count == _previousHistory.Length && blob.SequenceEqual(_previousBlob.AsSpan(0, _previousBlobLength)))
            {
                return _previousHistory;
            }

            var history = HistoryBlob.Read(id, blob, count, _pool, _history);
            if (blob.Length > _previousBlob.Length)
            {
                _previousBlob = new byte[blob.Length];
            }

            blob.CopyTo(_previousBlob);
            _previousBlobLength = blob.Length;
            _previousHistory = history;
            return history;
        }

        // Column numbers are SelectRange's.
        public TaskRecord Read(IntPtr s)
        {
            var id = NativeSqlite.ColumnInt64(s, 0);
            if (NativeSqlite.IsNull(s, 1))
            {
                throw new StoreException($"task {id} has no task_state row");
            }

            var state = NativeSqlite.ColumnInt(s, 1);
            if (state is < (int)TaskState.Created or > (int)TaskState.Terminated)
            {
                throw new StoreException($"task {id} has unknown state {state} (written by a newer release?)");
            }

            // The enums are bytes in memory: a value beyond them must fail here, not wrap to a valid one.
            var policy = NativeSqlite.ColumnInt(s, 6);
            var control = NativeSqlite.ColumnInt(s, 14);
            if (policy is < 0 or > byte.MaxValue || !Enum.IsDefined((DeliveryPolicy)policy) || control is < 0 or > byte.MaxValue || !Enum.IsDefined((PendingControl)control))
            {
                throw new StoreException($"task {id} has unknown delivery policy {policy} or pending control {control} (written by a newer release?)");
            }

            return new TaskRecord
            {
                Id = id,
                State = (TaskState)state,
                Type = _pool.Intern(NativeSqlite.ColumnSpan(s, 2)),
                Priority = NativeSqlite.ColumnInt(s, 3),
                Tags = ReadTags(NativeSqlite.ColumnSpan(s, 4)),
                Payload = NativeSqlite.IsNull(s, 5) ? default : NativeSqlite.ColumnSpan(s, 5).ToArray(),
                PayloadSize = NativeSqlite.ColumnInt(s, 21),
                Policy = (DeliveryPolicy)policy,
                NoReply = NativeSqlite.ColumnInt(s, 7) != 0,
                ExitCode = NativeSqlite.IsNull(s, 8) ? null : NativeSqlite.ColumnInt(s, 8),
                Result = NativeSqlite.IsNull(s, 9) ? null : NativeSqlite.ColumnSpan(s, 9).ToArray(),
                Error = NativeSqlite.IsNull(s, 10) ? null : Encoding.UTF8.GetString(NativeSqlite.ColumnSpan(s, 10)),
                WorkerId = NativeSqlite.IsNull(s, 11) ? null : _pool.Intern(NativeSqlite.ColumnSpan(s, 11)),
                Attempts = NativeSqlite.ColumnInt(s, 12),
                Layers = NativeSqlite.ColumnInt(s, 13),
                PendingControl = (PendingControl)control,
                KillRequestedAt = NativeSqlite.IsNull(s, 15) ? null : DateTimeOffset.FromUnixTimeMilliseconds(NativeSqlite.ColumnInt64(s, 15)),
                Reason = NativeSqlite.IsNull(s, 16) ? null : _pool.Intern(NativeSqlite.ColumnSpan(s, 16)),
                CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(NativeSqlite.ColumnInt64(s, 17)),
                UpdatedAt = DateTimeOffset.FromUnixTimeMilliseconds(NativeSqlite.ColumnInt64(s, 18)),
                History = ReadHistory(id, NativeSqlite.ColumnSpan(s, 20), NativeSqlite.ColumnInt64(s, 19)),
            };
        }
    }
}
