namespace Tatzelwurm.Storage;

/// <summary>
/// A commit (or open) that did not reach the disk. The batch was rolled back: the caller must not
/// acknowledge anything in it. The store stays usable; a later commit can succeed once the cause
/// (disk full, I/O error) goes away.
/// </summary>
public sealed class StoreException : Exception
{
    public StoreException(string message)
        : base(message)
    {
    }

    public StoreException(string message, Exception? innerException)
        : base(message, innerException)
    {
        SqliteErrorCode = (innerException as Microsoft.Data.Sqlite.SqliteException)?.SqliteErrorCode;
    }

    /// <summary>The primary SQLite result code when SQLite reported the failure (13 = disk full, 10 = I/O error).</summary>
    public int? SqliteErrorCode { get; }

    public bool IsDiskFull => SqliteErrorCode == 13;
}
