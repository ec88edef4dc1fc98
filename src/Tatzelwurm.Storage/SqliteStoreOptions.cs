using System.Globalization;
using Microsoft.Data.Sqlite;
using Tatzelwurm.Core;

namespace Tatzelwurm.Storage;

/// <summary>
/// How much an acknowledged commit survives. All modes survive a process crash (kill -9) without
/// loss: a commit has been written to the WAL file (in the OS page cache) before it returns. They
/// differ on power loss or an OS crash; docs/storage.md has the details.
/// </summary>
public enum Durability
{
    /// <summary>WAL + synchronous=FULL: every commit is fsync'd before it returns. Nothing acknowledged is lost.</summary>
    Full = 0,

    /// <summary>
    /// WAL + synchronous=NORMAL, plus a checkpoint (which fsyncs the WAL) every
    /// <see cref="SqliteStoreOptions.SyncInterval"/>: on power loss up to about one interval of
    /// acknowledged commits can be lost; the database stays consistent.
    /// </summary>
    Interval = 1,

    /// <summary>WAL + synchronous=OFF: never fsyncs. On power loss anything not yet written back by the OS can be lost and the file can be corrupted.</summary>
    None = 2,
}

public sealed record SqliteStoreOptions(string Path)
{
    public static readonly TimeSpan DefaultSyncInterval = TimeSpan.FromMilliseconds(100);

    public Durability Durability { get; init; } = Durability.Full;

    /// <summary>Background sync period in <see cref="Durability.Interval"/> mode; ignored otherwise.</summary>
    public TimeSpan SyncInterval { get; init; } = DefaultSyncInterval;

    /// <summary>Drives the <see cref="Durability.Interval"/> sync timer.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>
    /// Test hook: called after a batch's rows are written and before COMMIT; returning true makes the
    /// commit fail as if the disk had (the transaction is rolled back and a <see cref="StoreException"/> thrown).
    /// </summary>
    public Func<StoreBatch, bool>? FailCommit { get; init; }

    /// <summary>Test hook: runs on every connection the store opens, after its pragmas (e.g. a small max_page_count to make a real SQLITE_FULL).</summary>
    internal Action<SqliteConnection>? ConfigureConnection { get; init; }

    /// <summary>
    /// Applies a durability spec as given on a command line: <c>full</c>, <c>none</c>,
    /// <c>interval</c> (default period) or <c>interval:250ms</c> / <c>interval:2s</c> / <c>interval:250</c> (ms).
    /// </summary>
    /// <exception cref="FormatException">The spec is not one of those.</exception>
    public SqliteStoreOptions WithDurability(string spec)
    {
        var (mode, interval) = ParseDurability(spec);
        return this with { Durability = mode, SyncInterval = interval ?? SyncInterval };
    }

    public static (Durability Mode, TimeSpan? Interval) ParseDurability(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var text = spec.Trim().ToLowerInvariant();
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        var name = colon < 0 ? text : text[..colon];
        var arg = colon < 0 ? null : text[(colon + 1)..];
        switch (name)
        {
            case "full" when arg is null:
                return (Durability.Full, null);
            case "none" when arg is null:
                return (Durability.None, null);
            case "interval":
                return (Durability.Interval, arg is null ? null : ParseInterval(arg, spec));
            default:
                throw new FormatException($"unknown durability '{spec}': expected full, none, interval or interval:<N>ms");
        }
    }

    private static TimeSpan ParseInterval(string arg, string spec)
    {
        var (digits, scale) = arg switch
        {
            _ when arg.EndsWith("ms", StringComparison.Ordinal) => (arg[..^2], 1),
            _ when arg.EndsWith('s') => (arg[..^1], 1000),
            _ => (arg, 1),
        };
        if (!int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n <= 0 || n > int.MaxValue / scale)
        {
            throw new FormatException($"bad durability interval in '{spec}': expected a positive number of ms, e.g. interval:100ms");
        }

        return TimeSpan.FromMilliseconds((long)n * scale);
    }
}
