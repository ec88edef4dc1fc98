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
        // v2: history in its own append-only table, so a transition inserts its one new entry
        // instead of rewriting the whole JSON history (and the row around it). json_each walks
        // each array in order and tasks in id order, so the rows go in primary-key order.
        """
        CREATE TABLE task_history (
            task_id INTEGER NOT NULL, -- tasks.id
            seq     INTEGER NOT NULL, -- position in the task's history, from 0
            state   INTEGER NOT NULL, -- TaskState entered
            at      INTEGER NOT NULL, -- unix ms
            reason  TEXT,
            PRIMARY KEY (task_id, seq)
        ) WITHOUT ROWID;
        INSERT INTO task_history (task_id, seq, state, at, reason)
            SELECT t.id, h.key, json_extract(h.value, '$[0]'), json_extract(h.value, '$[1]'), json_extract(h.value, '$[2]')
            FROM tasks AS t, json_each(t.history) AS h;
        ALTER TABLE tasks DROP COLUMN history;
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
