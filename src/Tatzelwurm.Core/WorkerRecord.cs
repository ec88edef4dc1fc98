namespace Tatzelwurm.Core;

public enum WorkerLease
{
    /// <summary>Heartbeating within its lease.</summary>
    Connected,
    /// <summary>Lease lapsed or connection dropped; declared dead after the grace period.</summary>
    Suspect,
}

/// <summary>A worker in the worker table. Owned and mutated only by <see cref="CoordinatorState"/>.</summary>
public sealed class WorkerRecord
{
    public required string Id { get; init; }
    public string Name { get; set; } = "";

    /// <summary>Accepted task types; empty accepts every type.</summary>
    public HashSet<string> Types { get; set; } = [];
    public int Slots { get; set; }

    /// <summary>Tasks this worker holds (submit, run, or paused on it).</summary>
    public HashSet<long> Tasks { get; } = [];
    public int Load => Tasks.Count;

    public WorkerLease Lease { get; set; }
    public DateTimeOffset LastSeen { get; set; }
    public DateTimeOffset SuspectSince { get; set; }
    public DateTimeOffset ConnectedAt { get; set; }
    public bool Draining { get; set; }
    public bool Stopping { get; set; }

    /// <summary>Opaque handle of the connection it is on (the server's session); null while disconnected.</summary>
    public object? Connection { get; set; }

    /// <summary>False for a worker known only from recovered tasks, until it registers again.</summary>
    public bool Registered { get; set; }

    public bool Accepts(string type) => Types.Count == 0 || Types.Contains(type);

    public bool CanTake(string type) =>
        Registered && Lease == WorkerLease.Connected && Connection is not null && !Draining && Load < Slots && Accepts(type);

    public string LeaseName => Lease == WorkerLease.Suspect ? "suspect" : Draining ? "draining" : "connected";
}
