using Tatzelwurm.Core;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server;

public enum EffectKind
{
    /// <summary>Acknowledges a change of this batch; becomes StoreUnavailable if the batch fails.</summary>
    Ack,
    /// <summary>Reports a change of this batch (an assignment, an event, an outcome); held until durable.</summary>
    Held,
    /// <summary>Depends on nothing being persisted (reads, RPC, broadcasts, heartbeats); sent in order.</summary>
    Plain,
}

/// <summary>A frame for a session, released by the writer in commit order.</summary>
public readonly record struct Effect(Session Session, IMessage Message, EffectKind Kind);

/// <summary>What the loop hands the writer: the store changes and the frames that depend on them.</summary>
public sealed record CommitUnit(StoreBatch Batch, List<Effect> Effects);
