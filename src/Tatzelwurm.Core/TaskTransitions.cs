namespace Tatzelwurm.Core;

/// <summary>What a pure transition decided: a new task record (possibly with a message for its worker), or a refusal.</summary>
public readonly record struct Step(TaskRecord? Task, Rejection? Rejection, WorkerSignal Signal = WorkerSignal.None)
{
    public bool Ok => Rejection is null;

    public static implicit operator Step(TaskRecord task) => new(task, null);

    public static implicit operator Step(Rejection rejection) => new(null, rejection);
}

/// <summary>A message the coordinator must send to the worker holding a task.</summary>
public enum WorkerSignal
{
    None = 0,
    Pause,
    Play,
    Kill,
    Abandon,
}

/// <summary>
/// The task state machine (SPEC §3). Every function is pure: (task, command, now) → new task or a
/// typed rejection. The legal edges are listed once in <see cref="IsLegal"/>, and every function
/// goes through <see cref="Move"/>, so nothing can take an edge the table does not allow.
/// </summary>
public static class TaskTransitions
{
    private static readonly Dictionary<TaskState, TaskState[]> Edges = new()
    {
        [TaskState.Created] = [TaskState.Ready, TaskState.Pause, TaskState.Terminated],
        [TaskState.Ready] = [TaskState.Submit, TaskState.Pause, TaskState.Terminated],
        // Submit → Pause: a pause asked for before the worker accepted, applied when the worker is lost.
        [TaskState.Submit] = [TaskState.Run, TaskState.Ready, TaskState.Pause, TaskState.Terminated],
        [TaskState.Run] = [TaskState.Pause, TaskState.Ready, TaskState.Terminated],
        [TaskState.Pause] = [TaskState.Ready, TaskState.Run, TaskState.Terminated],
        [TaskState.Terminated] = [],
    };

    public static bool IsLegal(TaskState from, TaskState to) => Edges[from].Contains(to);

    /// <param name="previousHistory">
    /// The history of the task created just before, if any. When it is the one this task starts with (the
    /// same state at the same instant, as for the tasks of one request), the new record shares it
    /// rather than holding an equal copy: histories are immutable, and a million queued tasks save
    /// ≈48 MB.
    /// </param>
    public static TaskRecord Create(long id, NewTask spec, DeliveryPolicy defaultPolicy, DateTimeOffset now, IReadOnlyList<Transition>? previousHistory = null)
    {
        var state = spec.Ready ? TaskState.Ready : TaskState.Created;
        var history = previousHistory is [{ Reason: null } first] && first.State == state && first.At.EqualsExact(now)
            ? previousHistory
            : [new Transition(state, now, null)];
        return new TaskRecord
        {
            Id = id,
            Type = spec.Type,
            Priority = spec.Priority,
            Tags = spec.Tags,
            Payload = spec.Payload,
            Policy = spec.Policy ?? defaultPolicy,
            NoReply = spec.NoReply,
            State = state,
            CreatedAt = now,
            UpdatedAt = now,
            History = history,
        };
    }

    /// <summary>Actioner play: created/pause → ready, or resume on the worker that still holds it.</summary>
    public static Step Play(TaskRecord task, bool workerConnected, DateTimeOffset now)
    {
        if (task.PendingControl == PendingControl.Kill)
        {
            return Rejection.Illegal(task, "play (a kill is pending)");
        }

        switch (task.State)
        {
            case TaskState.Created:
                return Move(task, TaskState.Ready, now, null);
            case TaskState.Pause when task.WorkerId is null:
                return Move(task, TaskState.Ready, now, null) with { PendingControl = PendingControl.None };
            case TaskState.Pause:
                // Paused on its worker: the worker resumes it and reports Resumed.
                return new Step(task with { PendingControl = PendingControl.Play, UpdatedAt = now }, null,
                    workerConnected ? WorkerSignal.Play : WorkerSignal.None);
            case TaskState.Run or TaskState.Submit when task.PendingControl == PendingControl.Pause:
                // A pause not yet confirmed by the worker is withdrawn.
                return new Step(task with { PendingControl = PendingControl.Play, UpdatedAt = now }, null,
                    workerConnected ? WorkerSignal.Play : WorkerSignal.None);
            default:
                return Rejection.Illegal(task, "play");
        }
    }

    /// <summary>Actioner pause: created/ready → pause; submit/run → suspended by its worker.</summary>
    public static Step Pause(TaskRecord task, bool workerConnected, DateTimeOffset now)
    {
        switch (task.State)
        {
            case TaskState.Created or TaskState.Ready:
                return Move(task, TaskState.Pause, now, "paused by actioner");
            case TaskState.Submit or TaskState.Run when task.PendingControl != PendingControl.Kill:
                return new Step(task with { PendingControl = PendingControl.Pause, UpdatedAt = now }, null,
                    workerConnected && task.State == TaskState.Run ? WorkerSignal.Pause : WorkerSignal.None);
            default:
                return Rejection.Illegal(task, "pause");
        }
    }

    /// <summary>Actioner kill: terminated(-1) at once, or sent to the worker holding it.</summary>
    public static Step Kill(TaskRecord task, bool workerConnected, DateTimeOffset now)
    {
        if (task.State == TaskState.Terminated)
        {
            return Rejection.Illegal(task, "kill");
        }

        if (!task.OnWorker)
        {
            return Terminate(task, ExitCodes.Killed, null, null, "killed by actioner", now);
        }

        if (task.PendingControl == PendingControl.Kill)
        {
            return Rejection.Illegal(task, "kill (a kill is already pending)");
        }

        return new Step(task with
        {
            PendingControl = PendingControl.Kill,
            KillRequestedAt = now,
            Reason = "kill requested",
            UpdatedAt = now,
        }, null, workerConnected ? WorkerSignal.Kill : WorkerSignal.None);
    }

    public static Step Assign(TaskRecord task, string workerId, DateTimeOffset now) =>
        task.State != TaskState.Ready
            ? Rejection.Illegal(task, "assign")
            : Move(task, TaskState.Submit, now, $"assigned to {workerId}") with { WorkerId = workerId, Reason = task.Reason };

    public static Step Accept(TaskRecord task, string workerId, DateTimeOffset now)
    {
        if (task.WorkerId != workerId || task.State != TaskState.Submit)
        {
            return Rejection.Illegal(task, $"accept on {workerId}");
        }

        // A pause asked for before the worker accepted is now sent.
        var signal = task.PendingControl switch
        {
            PendingControl.Pause => WorkerSignal.Pause,
            PendingControl.Kill => WorkerSignal.Kill,
            _ => WorkerSignal.None,
        };
        return new Step(Move(task, TaskState.Run, now, null), null, signal);
    }

    public static Step Reject(TaskRecord task, string workerId, DateTimeOffset now)
    {
        if (task.WorkerId != workerId || task.State != TaskState.Submit)
        {
            return Rejection.Illegal(task, $"reject on {workerId}");
        }

        // A kill or pause asked for while it was in submit applies now, as if the worker were lost.
        return task.PendingControl is PendingControl.Kill or PendingControl.Pause
            ? WorkerLost(task, $"rejected by {workerId}", now)
            : Move(task, TaskState.Ready, now, $"rejected by {workerId}") with { WorkerId = null, PendingControl = PendingControl.None };
    }

    public static Step WorkerPaused(TaskRecord task, string workerId, DateTimeOffset now) =>
        task.WorkerId != workerId || task.State != TaskState.Run
            ? Rejection.Illegal(task, $"report paused on {workerId}")
            : Move(task, TaskState.Pause, now, "paused on worker") with { PendingControl = KeepKill(task) };

    public static Step WorkerResumed(TaskRecord task, string workerId, DateTimeOffset now) =>
        task.WorkerId != workerId || task.State != TaskState.Pause
            ? Rejection.Illegal(task, $"report resumed on {workerId}")
            : Move(task, TaskState.Run, now, "resumed on worker") with { PendingControl = KeepKill(task) };

    /// <summary>One more "result to follow" layer; implies the worker accepted the task.</summary>
    public static Step WorkerPending(TaskRecord task, string workerId, DateTimeOffset now)
    {
        if (task.WorkerId != workerId || !task.OnWorker)
        {
            return Rejection.Illegal(task, $"report a pending result on {workerId}");
        }

        var moved = task.State == TaskState.Submit ? Move(task, TaskState.Run, now, null) : task with { UpdatedAt = now };
        return moved with { Layers = task.Layers + 1 };
    }

    public static Step WorkerFinished(TaskRecord task, string workerId, int exitCode, byte[]? result, string? error, DateTimeOffset now) =>
        task.WorkerId != workerId || !task.OnWorker
            ? Rejection.Illegal(task, $"report finished on {workerId}")
            // docs/protocol.md: a no_reply task stores no result — neither the value nor the error text.
            : Terminate(task, exitCode, task.NoReply ? null : result, task.NoReply ? null : error,
                exitCode == ExitCodes.Killed && task.PendingControl == PendingControl.Kill ? "killed by actioner" : null, now);

    // A pause/resume report settles a pending pause or play, never a kill sent after it.
    private static PendingControl KeepKill(TaskRecord task) =>
        task.PendingControl == PendingControl.Kill ? PendingControl.Kill : PendingControl.None;

    /// <summary>Kill escalation: the worker did not confirm in time and is told to abandon the task.</summary>
    public static bool KillOverdue(TaskRecord task, TimeSpan killTimeout, DateTimeOffset now) =>
        task.PendingControl == PendingControl.Kill && task.KillRequestedAt is { } at && now >= at + killTimeout;

    /// <summary>
    /// The task's worker is gone for good (dead, or reconnected without it). Pending control wins;
    /// otherwise never-acknowledged tasks go back to ready and running tasks follow their policy.
    /// </summary>
    public static Step WorkerLost(TaskRecord task, string why, DateTimeOffset now)
    {
        if (!task.OnWorker)
        {
            return Rejection.Illegal(task, "lose its worker");
        }

        Step step = (task.PendingControl, task.State) switch
        {
            (PendingControl.Kill, _) => Terminate(task, ExitCodes.Killed, null, null, $"killed; {why}", now),
            (PendingControl.Pause, not TaskState.Pause) => Move(task, TaskState.Pause, now, $"paused; {why}"),
            (_, TaskState.Submit) => Move(task, TaskState.Ready, now, $"never started; {why}"),
            (PendingControl.Play, TaskState.Pause) => Move(task, TaskState.Ready, now, $"{why}; play requested"),
            (_, TaskState.Pause) => task with { Reason = $"{why}; stays paused", UpdatedAt = now },
            (_, _) when task.Policy == DeliveryPolicy.AtLeastOnce =>
                Move(task, TaskState.Ready, now, $"at-least-once: requeued; {why}") with { Attempts = task.Attempts + 1 },
            _ => Move(task, TaskState.Pause, now, $"at-most-once: paused for a decision; {why}") with { Attempts = task.Attempts + 1 },
        };

        return step.Task is null ? step : step.Task with { WorkerId = null, PendingControl = PendingControl.None, KillRequestedAt = null };
    }

    private static TaskRecord Terminate(TaskRecord task, int exitCode, byte[]? result, string? error, string? reason, DateTimeOffset now) =>
        Move(task, TaskState.Terminated, now, reason) with
        {
            ExitCode = exitCode,
            Result = result,
            Error = error,
            WorkerId = null,
            PendingControl = PendingControl.None,
            KillRequestedAt = null,
        };

    private static TaskRecord Move(TaskRecord task, TaskState to, DateTimeOffset now, string? reason)
    {
        if (!IsLegal(task.State, to))
        {
            // A bug in this class, not a client error: callers check states before moving.
            throw new InvalidOperationException($"illegal edge {task.State.Name()} → {to.Name()} for task {task.Id}");
        }

        // An array rather than a collection expression typed as the interface, which would wrap the
        // array in one more object per record; copied by index, as a spread of the interface would
        // allocate an enumerator on every transition.
        var before = task.History;
        var history = new Transition[before.Count + 1];
        for (var i = 0; i < before.Count; i++)
        {
            history[i] = before[i];
        }

        history[^1] = new Transition(to, now, reason);
        return task with
        {
            State = to,
            UpdatedAt = now,
            Reason = reason ?? task.Reason,
            History = history,
        };
    }
}
