namespace Tatzelwurm.Core;

/// <summary>The coordinator's domain settings. Immutable; <see cref="Default"/> holds the documented defaults.</summary>
public sealed record CoordinatorOptions
{
    public static readonly CoordinatorOptions Default = new();

    /// <summary>How often workers heartbeat; dictated to them in the handshake.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>A worker silent this long becomes suspect.</summary>
    public TimeSpan Lease { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A suspect worker is declared dead after this long (and its tasks follow their policy).</summary>
    public TimeSpan Grace { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A kill the worker has not confirmed after this long is escalated to abandon.</summary>
    public TimeSpan KillTimeout { get; init; } = TimeSpan.FromSeconds(30);

    public DeliveryPolicy DefaultPolicy { get; init; } = DeliveryPolicy.AtMostOnce;

    /// <summary>Terminated tasks are purged this long after they terminated.</summary>
    public TimeSpan Retention { get; init; } = TimeSpan.FromDays(7);
}
