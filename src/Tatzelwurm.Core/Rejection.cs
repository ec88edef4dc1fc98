namespace Tatzelwurm.Core;

public enum RejectionCode
{
    InvalidRequest,
    UnknownTask,
    IllegalTransition,
    UnknownWorker,
    StoreUnavailable,
}

/// <summary>A typed refusal of a command; the state is unchanged.</summary>
public sealed record Rejection(RejectionCode Code, string Message)
{
    public static Rejection Illegal(TaskRecord task, string action) =>
        new(RejectionCode.IllegalTransition, $"task {task.Id} is {task.State.Name()}: cannot {action}");

    public static Rejection UnknownTask(long id) => new(RejectionCode.UnknownTask, $"no task {id}");
}

public static class TaskStateNames
{
    // The seed's names; used by the CLI, logs and docs.
    public static string Name(this TaskState state) => state switch
    {
        TaskState.Created => "created",
        TaskState.Ready => "ready",
        TaskState.Submit => "submit",
        TaskState.Run => "run",
        TaskState.Pause => "pause",
        TaskState.Terminated => "terminated",
        _ => state.ToString(),
    };

    public static bool TryParse(string name, out TaskState state)
    {
        foreach (var s in Enum.GetValues<TaskState>())
        {
            if (string.Equals(s.Name(), name, StringComparison.OrdinalIgnoreCase))
            {
                state = s;
                return true;
            }
        }

        state = default;
        return false;
    }
}
