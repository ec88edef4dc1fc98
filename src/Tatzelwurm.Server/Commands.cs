using Tatzelwurm.Core;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server;

/// <summary>Where sessions and timers post work for the coordinator loop.</summary>
public interface ICoordinatorInbox
{
    void Post(ICommand command);
}

/// <summary>A unit of work for the coordinator loop, the only owner of the tables.</summary>
public interface ICommand;

public sealed record SessionOpened(Session Session) : ICommand;

public sealed record SessionClosed(Session Session) : ICommand;

public sealed record FromClient(Session Session, IMessage Message) : ICommand;

/// <summary>The timer fired: leases, grace periods, kill escalation, retention, the safety pass.</summary>
public sealed record Tick : ICommand
{
    public static readonly Tick Instance = new();
}

/// <summary>The writer's view of the store changed (a commit failed, or one succeeded again).</summary>
public sealed record StoreHealth(bool Healthy, string? Error) : ICommand;

/// <summary>Runs a read on the loop (dashboard, tests) and completes with its answer.</summary>
public sealed record Query(Action<CoordinatorState> Read) : ICommand;
