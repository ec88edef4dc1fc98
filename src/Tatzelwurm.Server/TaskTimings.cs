using Tatzelwurm.Core;

namespace Tatzelwurm.Server;

/// <summary>
/// Records the queue-wait and run-time histograms from a task's transition history, when the loop
/// reports a state change (Coordinator.Report). Pure reads of an immutable record; no allocation
/// beyond the tag.
/// </summary>
internal static class TaskTimings
{
    public static void Record(TaskRecord task)
    {
        var history = task.History;
        if (history.Count < 2)
        {
            return;
        }

        var last = history[^1];
        var type = new KeyValuePair<string, object?>("type", task.Type);
        if (last.State == TaskState.Submit && history[^2].State == TaskState.Ready)
        {
            // Queue wait: from becoming ready (the latest time) to being handed to a worker.
            TatzelwurmMetrics.QueueWaitSeconds.Record(Seconds(last.At - history[^2].At), type);
        }
        else if (last.State == TaskState.Terminated && StartedAt(history) is { } started)
        {
            // Run time: from the worker starting this attempt (its first run after the last submit)
            // to termination, pauses on the worker included. Tasks killed before running have none.
            TatzelwurmMetrics.RunSeconds.Record(Seconds(last.At - started), type);
        }
    }

    private static DateTimeOffset? StartedAt(IReadOnlyList<Transition> history)
    {
        DateTimeOffset? run = null;
        for (var i = history.Count - 2; i >= 0; i--)
        {
            switch (history[i].State)
            {
                case TaskState.Run:
                    run = history[i].At;
                    break;
                case TaskState.Submit:
                    return run;
                case TaskState.Ready or TaskState.Created:
                    return null;
            }
        }

        return null;
    }

    private static double Seconds(TimeSpan span) => Math.Max(0, span.TotalSeconds);
}
