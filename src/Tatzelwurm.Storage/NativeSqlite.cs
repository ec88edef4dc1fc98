using System.Runtime.InteropServices;

namespace Tatzelwurm.Storage;

/// <summary>
/// Direct calls into the same e_sqlite3 library Microsoft.Data.Sqlite loads, for the two hot loops:
/// recovery's column reads and the commit's per-record binds. Through SQLitePCL each call costs
/// ~100 ns (SafeHandle AddRef/Release and marshalling); these cost a few, which is most of the
/// difference between ~6 s and ~2 s to recover a million tasks.
/// </summary>
/// <remarks>
/// SuppressGCTransition is safe on the column accessors and binds: they only read the current row
/// or copy a value into the statement (no I/O, no callbacks, SQLITE_TRANSIENT copies), and the
/// connection's mutex, if any, is never contended (each connection has one user at a time).
/// sqlite3_step and sqlite3_reset do I/O and keep the normal GC transition.
/// </remarks>
internal static unsafe partial class NativeSqlite
{
    private const string Library = "e_sqlite3";

    internal const int SqliteDone = 101;

    // SQLITE_TRANSIENT: SQLite copies the value before the bind returns, so the caller's buffer
    // only has to be pinned for the call.
    private static readonly IntPtr Transient = new(-1);

    [LibraryImport(Library, EntryPoint = "sqlite3_step")]
    internal static partial int Step(IntPtr stmt);

    [LibraryImport(Library, EntryPoint = "sqlite3_reset")]
    internal static partial int Reset(IntPtr stmt);

    [LibraryImport(Library, EntryPoint = "sqlite3_changes")]
    [SuppressGCTransition]
    internal static partial int Changes(IntPtr db);

    [LibraryImport(Library, EntryPoint = "sqlite3_bind_int64")]
    [SuppressGCTransition]
    internal static partial int BindInt64(IntPtr stmt, int index, long value);

    [LibraryImport(Library, EntryPoint = "sqlite3_bind_null")]
    [SuppressGCTransition]
    internal static partial int BindNull(IntPtr stmt, int index);

    [LibraryImport(Library, EntryPoint = "sqlite3_bind_zeroblob")]
    [SuppressGCTransition]
    private static partial int BindZeroBlob(IntPtr stmt, int index, int length);

    // The binds that copy their value (SQLITE_TRANSIENT) keep the GC transition: copying a payload of
    // megabytes with the GC blocked would stall every other thread that allocates.
    [LibraryImport(Library, EntryPoint = "sqlite3_bind_blob")]
    private static partial int BindBlob(IntPtr stmt, int index, byte* value, int length, IntPtr destructor);

    [LibraryImport(Library, EntryPoint = "sqlite3_bind_text")]
    private static partial int BindText(IntPtr stmt, int index, byte* value, int length, IntPtr destructor);

    [LibraryImport(Library, EntryPoint = "sqlite3_bind_text16")]
    private static partial int BindText16(IntPtr stmt, int index, char* value, int lengthInBytes, IntPtr destructor);

    /// <summary>Binds a BLOB; an empty span binds an empty BLOB, not NULL (a null pointer would).</summary>
    internal static int BindBlob(IntPtr stmt, int index, ReadOnlySpan<byte> value)
    {
        if (value.IsEmpty)
        {
            return BindZeroBlob(stmt, index, 0);
        }

        fixed (byte* p = value)
        {
            return BindBlob(stmt, index, p, value.Length, Transient);
        }
    }

    /// <summary>Binds UTF-8 text.</summary>
    internal static int BindUtf8(IntPtr stmt, int index, ReadOnlySpan<byte> value)
    {
        fixed (byte* p = value)
        {
            // A non-null pointer even for "": a null one would bind NULL.
            byte empty = 0;
            return BindText(stmt, index, p == null ? &empty : p, value.Length, Transient);
        }
    }

    /// <summary>Binds a string as UTF-16 (SQLite converts to the database's UTF-8 itself), or NULL.</summary>
    internal static int BindText(IntPtr stmt, int index, string? value)
    {
        if (value is null)
        {
            return BindNull(stmt, index);
        }

        fixed (char* p = value)
        {
            return BindText16(stmt, index, p, value.Length * sizeof(char), Transient);
        }
    }

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
