using Microsoft.Data.Sqlite;

namespace Tatzelwurm.Storage;

/// <summary>
/// The store's own schema. The version lives in <c>PRAGMA user_version</c> (in the file header, so it
/// changes in the same transaction as the migration); <c>PRAGMA application_id</c> marks the file as
/// tatzelwurm's so we never migrate somebody else's database.
/// </summary>
internal static class SqliteSchema
{
    public const int ApplicationId = 0x545A574D; // "TZWM"

    // Migrations[i] takes the schema from version i to i + 1. Released entries are never edited,
    // only appended to. Enum columns hold the frozen integers of Core's TaskState, DeliveryPolicy
    // and PendingControl; times are unix milliseconds (UTC). No secondary index: recovery is one
    // primary-key scan, and an index on (state, updated_at) cost ~25% more CPU per upsert.
    private static readonly string[] Migrations =
    [
        """
        CREATE TABLE tasks (
            id                INTEGER PRIMARY KEY,
            state             INTEGER NOT NULL, -- TaskState: 0 created, 1 ready, 2 submit, 3 run, 4 pause, 5 terminated
            type              TEXT    NOT NULL,
            priority          INTEGER NOT NULL,
            tags              TEXT    NOT NULL, -- JSON array of strings
            payload           BLOB    NOT NULL,
            policy            INTEGER NOT NULL, -- DeliveryPolicy: 1 at-most-once, 2 at-least-once
            no_reply          INTEGER NOT NULL, -- 0 or 1
            exit_code         INTEGER,
            result            BLOB,
            error             TEXT,
            worker_id         TEXT,
            attempts          INTEGER NOT NULL,
            layers            INTEGER NOT NULL,
            pending_control   INTEGER NOT NULL, -- PendingControl: 0 none, 1 pause, 2 play, 3 kill
            kill_requested_at INTEGER,          -- unix ms
            reason            TEXT,
            created_at        INTEGER NOT NULL, -- unix ms
            updated_at        INTEGER NOT NULL, -- unix ms
            history           TEXT    NOT NULL  -- JSON: [[state, at_unix_ms, "reason"?], ...]
        );
        CREATE TABLE tag_limits (
            tag         TEXT PRIMARY KEY,
            max_running INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO meta (key, value) VALUES ('last_task_id', 0);
        """,
        // v2: the columns a transition changes and the history (a binary blob, see HistoryBlob)
        // move to a narrow row in task_state; tasks keeps what is fixed at creation and is written
        // once. With a backlog a commit then rewrites small rows only (docs/storage.md). The blob
        // is built here with the same bytes HistoryBlob writes: format byte 01, then per entry
        // state (| 0x80 with a reason), 8-byte big-endian unix ms, LEB128 length and UTF-8 reason.
        """
        CREATE TABLE task_state (
            id                INTEGER PRIMARY KEY, -- tasks.id
            state             INTEGER NOT NULL, -- TaskState: 0 created, 1 ready, 2 submit, 3 run, 4 pause, 5 terminated
            worker_id         TEXT,
            exit_code         INTEGER,
            result            BLOB,
            error             TEXT,
            attempts          INTEGER NOT NULL,
            layers            INTEGER NOT NULL,
            pending_control   INTEGER NOT NULL, -- PendingControl: 0 none, 1 pause, 2 play, 3 kill
            kill_requested_at INTEGER,          -- unix ms
            reason            TEXT,
            updated_at        INTEGER NOT NULL, -- unix ms
            history_count     INTEGER NOT NULL, -- entries in history
            history           BLOB    NOT NULL  -- binary, see docs/storage.md
        );
        INSERT INTO task_state (id, state, worker_id, exit_code, result, error, attempts, layers, pending_control,
                                kill_requested_at, reason, updated_at, history_count, history)
            SELECT t.id, t.state, t.worker_id, t.exit_code, t.result, t.error, t.attempts, t.layers, t.pending_control,
                   t.kill_requested_at, t.reason, t.updated_at, json_array_length(t.history),
                   unhex('01' || ifnull((
                       SELECT group_concat(
                           printf('%02X%016X', e.s | iif(e.r IS NULL, 0, 128), e.a)
                           || iif(e.r IS NULL, '', CASE
                               WHEN e.n < 128 THEN printf('%02X', e.n)
                               WHEN e.n < 16384 THEN printf('%02X%02X', (e.n & 127) | 128, e.n >> 7)
                               WHEN e.n < 2097152 THEN printf('%02X%02X%02X', (e.n & 127) | 128, ((e.n >> 7) & 127) | 128, e.n >> 14)
                               WHEN e.n < 268435456 THEN printf('%02X%02X%02X%02X', (e.n & 127) | 128, ((e.n >> 7) & 127) | 128,
                                                                ((e.n >> 14) & 127) | 128, e.n >> 21)
                               ELSE printf('%02X%02X%02X%02X%02X', (e.n & 127) | 128, ((e.n >> 7) & 127) | 128,
                                           ((e.n >> 14) & 127) | 128, ((e.n >> 21) & 127) | 128, e.n >> 28)
                               END || hex(e.r)),
                           '' ORDER BY e.k)
                       FROM (SELECT h.key AS k, json_extract(h.value, '$[0]') AS s, json_extract(h.value, '$[1]') AS a,
                                    json_extract(h.value, '$[2]') AS r, length(CAST(json_extract(h.value, '$[2]') AS BLOB)) AS n
                             FROM json_each(t.history) AS h) AS e), ''))
            FROM tasks AS t ORDER BY t.id;
        CREATE TABLE tasks_v2 (
            id         INTEGER PRIMARY KEY,
            type       TEXT    NOT NULL,
            priority   INTEGER NOT NULL,
            tags       TEXT    NOT NULL, -- JSON array of strings
            payload    BLOB    NOT NULL,
            policy     INTEGER NOT NULL, -- DeliveryPolicy: 1 at-most-once, 2 at-least-once
            no_reply   INTEGER NOT NULL, -- 0 or 1
            created_at INTEGER NOT NULL  -- unix ms
        );
        INSERT INTO tasks_v2 (id, type, priority, tags, payload, policy, no_reply, created_at)
            SELECT id, type, priority, tags, payload, policy, no_reply, created_at FROM tasks ORDER BY id;
        DROP TABLE tasks;
        ALTER TABLE tasks_v2 RENAME TO tasks;
        """,
    ];

    public static int CurrentVersion => Migrations.Length;

    /// <summary>The migrations as released, for tests that build a file of an older version.</summary>
    internal static IReadOnlyList<string> Released => Migrations;

    /// <summary>Brings the database to <see cref="CurrentVersion"/>, or refuses a file that is not ours or is too new.</summary>
    public static void Migrate(SqliteConnection connection, string path) => Migrate(connection, path, Migrations);

    internal static void Migrate(SqliteConnection connection, string path, IReadOnlyList<string> migrations)
    {
        var version = Convert.ToInt32(Scalar(connection, "PRAGMA user_version"), System.Globalization.CultureInfo.InvariantCulture);
        var appId = Convert.ToInt32(Scalar(connection, "PRAGMA application_id"), System.Globalization.CultureInfo.InvariantCulture);
        if (version > migrations.Count)
        {
            throw new StoreException(
                $"{path}: database schema version {version} is newer than this tatzelwurm supports ({migrations.Count}); " +
                "it was written by a newer release. Run that release (or newer), or restore a backup.");
        }

        if (appId != 0 && appId != ApplicationId)
        {
            throw new StoreException($"{path}: not a tatzelwurm database (application_id 0x{appId:X8})");
        }

        if (version == 0 && Convert.ToInt64(Scalar(connection, "SELECT count(*) FROM sqlite_schema"), System.Globalization.CultureInfo.InvariantCulture) > 0)
        {
            throw new StoreException($"{path}: not a tatzelwurm database (it has tables but no tatzelwurm schema version)");
        }

        for (var v = version; v < migrations.Count; v++)
        {
            using var tx = connection.BeginTransaction(deferred: false);
            using var cmd = connection.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = migrations[v] + $"\nPRAGMA user_version = {v + 1};\nPRAGMA application_id = {ApplicationId};";
            cmd.ExecuteNonQuery();
            tx.Commit();
        }
    }

    private static object? Scalar(SqliteConnection connection, string sql)
    {
        using var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        return cmd.ExecuteScalar();
    }
}
