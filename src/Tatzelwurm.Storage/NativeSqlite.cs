using System.Runtime.InteropServices;

namespace Tatzelwurm.Storage;

/// <summary>
/// Direct calls into the same e_sqlite3 library Microsoft.Data.Sqlite loads, for recovery's hot
/// loop only. Through SQLitePCL each column access costs ~100 ns (SafeHandle marshalling); these
/// cost a few, which is most of the difference between ~6 s and ~2 s for a million tasks.
/// </summary>
/// <remarks>
/// SuppressGCTransition is safe here: on a connection opened with SQLITE_OPEN_NOMUTEX the column
/// accessors only read the current row (no locks, no I/O, no callbacks). sqlite3_step is not
/// declared here; it does I/O and goes through SQLitePCL.
/// </remarks>
internal static unsafe partial class NativeSqlite
{
    private const string Library = "e_sqlite3";

    [LibraryImport(Library, EntryPoint = "sqlite3_column_type")]
    [SuppressGCTransition]
    internal static partial int ColumnType(IntPtr stmt, int column);

    [LibraryImport(Library, EntryPoint = "sqlite3_column_int")]
    [SuppressGCTransition]
    internal static partial int ColumnInt(IntPtr stmt, int column);

    [LibraryImport(Library, EntryPoint = "sqlite3_column_int64")]
    [SuppressGCTransition]
    internal static partial long ColumnInt64(IntPtr stmt, int column);

    [LibraryImport(Library, EntryPoint = "sqlite3_column_blob")]
    [SuppressGCTransition]
    internal static partial byte* ColumnBlob(IntPtr stmt, int column);

    [LibraryImport(Library, EntryPoint = "sqlite3_column_bytes")]
    [SuppressGCTransition]
    internal static partial int ColumnBytes(IntPtr stmt, int column);

    internal const int SqliteNull = 5;

    /// <summary>A TEXT or BLOB column as a span over SQLite's buffer, valid until the next step.</summary>
    internal static ReadOnlySpan<byte> ColumnSpan(IntPtr stmt, int column)
    {
        // blob before bytes: the documented order (bytes reports the size of what blob returned).
        var p = ColumnBlob(stmt, column);
        return p == null ? default : new ReadOnlySpan<byte>(p, ColumnBytes(stmt, column));
    }

    internal static bool IsNull(IntPtr stmt, int column) => ColumnType(stmt, column) == SqliteNull;
}
