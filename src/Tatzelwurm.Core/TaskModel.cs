namespace Tatzelwurm.Core;

// Persisted numeric values: the store writes these integers, so they must never change
// (Tatzelwurm.Core.Tests freezes them). Bytes: a task record holds three of these, which then
// share one word with its other small fields instead of taking four bytes each.
public enum TaskState : byte
{
    Created = 0,
    Ready = 1,
    Submit = 2,
    Run = 3,
    Pause = 4,
    Terminated = 5,
}

public enum DeliveryPolicy : byte
{
    AtMostOnce = 1,
    AtLeastOnce = 2,
}

/// <summary>A control action recorded on a task until its worker confirms it.</summary>
public enum PendingControl : byte
{
    None = 0,
    Pause = 1,
    Play = 2,
    Kill = 3,
}

public static class ExitCodes
{
    public const int Completed = 0;
    public const int Killed = -1;
}

/// <summary>
/// One entry of a task's history. A value, not an object: a history is an array of them, 32 bytes
/// an entry instead of a reference and a 48-byte object.
/// </summary>
public readonly record struct Transition(TaskState State, DateTimeOffset At, string? Reason);

/// <summary>
/// One task. Immutable: every change goes through <see cref="TaskTransitions"/> and yields a new
/// record, so the store gets consistent snapshots and a refused transition changes nothing.
/// </summary>
public sealed record TaskRecord
{
    public required long Id { get; init; }
    public required string Type { get; init; }
    public int Priority { get; init; }
    public IReadOnlyList<string> Tags { get; init; } = [];

    /// <summary>
    /// The bytes a worker gets. Setting it also sets <see cref="PayloadSize"/>; the task table drops
    /// the bytes of a terminated task (nothing reads them again) with
    /// <c>with { Payload = default, PayloadSize = n }</c>, keeping the size for display.
    /// </summary>
    public ReadOnlyMemory<byte> Payload
    {
        get => _payload;
        init => (_payload, PayloadSize) = (value, value.Length);
    }

    /// <summary>The payload's length in bytes, also when the record no longer holds the bytes.</summary>
    public int PayloadSize
    {
        get;
        init => field = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "a payload size is never negative");
    }

    public DeliveryPolicy Policy { get; init; } = DeliveryPolicy.AtMostOnce;
    public bool NoReply { get; init; }
    public TaskState State { get; init; }
    public int? ExitCode
    {
        get => _hasExitCode ? _exitCode : null;
        init => (_exitCode, _hasExitCode) = value is { } code ? (code, true) : (0, false);
    }
    public byte[]? Result { get; init; }
    public string? Error { get; init; }

    /// <summary>The worker holding the task (submit, run, or pause while its worker keeps it suspended).</summary>
    public string? WorkerId { get; init; }

    /// <summary>Runs of this task lost with their worker.</summary>
    public int Attempts { get; init; }

    /// <summary>"Result to follow" layers the worker reported (kiwipy's nested futures).</summary>
    public int Layers { get; init; }

    public PendingControl PendingControl { get; init; }

    /// <summary>When a kill was sent to the worker; drives escalation to abandon.</summary>
    public DateTimeOffset? KillRequestedAt
    {
        get => _killRequestedTicks == NoTime ? null : Unpack(_killRequestedTicks, _killRequestedOffset);
        init => (_killRequestedTicks, _killRequestedOffset) = value is { } at ? Pack(at) : (NoTime, (short)0);
    }

    /// <summary>Reason of the last policy decision or control action.</summary>
    public string? Reason { get; init; }

    public required DateTimeOffset CreatedAt
    {
        get => Unpack(_createdTicks, _createdOffset);
        init => (_createdTicks, _createdOffset) = Pack(value);
    }

    public required DateTimeOffset UpdatedAt
    {
        get => Unpack(_updatedTicks, _updatedOffset);
        init => (_updatedTicks, _updatedOffset) = Pack(value);
    }

    public IReadOnlyList<Transition> History { get; init; } = [];

    /// <summary>True when a worker holds the task and must be told about changes to it.</summary>
    public bool OnWorker => WorkerId is not null && State is TaskState.Submit or TaskState.Run or TaskState.Pause;

    // The times as their clock ticks and offset in minutes, exactly what a DateTimeOffset holds,
    // without its padding to 16 bytes (24 when nullable): with the byte enums a record takes 152
    // bytes instead of 192, 40 MB for a million queued tasks.
    private const long NoTime = -1;
    private readonly ReadOnlyMemory<byte> _payload;
    private readonly long _createdTicks;
    private readonly long _updatedTicks;
    private readonly long _killRequestedTicks = NoTime;
    private readonly short _createdOffset;
    private readonly short _updatedOffset;
    private readonly short _killRequestedOffset;
    // The exit code as a value and a flag rather than an int? (8 bytes with its padding), so that
    // PayloadSize fits in the same 152 bytes.
    private readonly int _exitCode;
    private readonly bool _hasExitCode;

    private static (long Ticks, short OffsetMinutes) Pack(DateTimeOffset at) => (at.Ticks, (short)at.TotalOffsetMinutes);

    private static DateTimeOffset Unpack(long ticks, short offsetMinutes) => new(ticks, TimeSpan.FromMinutes(offsetMinutes));
}

/// <summary>What a client asks for when it adds a task.</summary>
public sealed record NewTask(
    ReadOnlyMemory<byte> Payload,
    string Type,
    int Priority,
    IReadOnlyList<string> Tags,
    DeliveryPolicy? Policy,
    bool Ready,
    bool NoReply);
