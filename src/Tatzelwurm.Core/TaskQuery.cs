namespace Tatzelwurm.Core;

/// <summary>A filter over the task table; null fields match everything.</summary>
public sealed record TaskFilter(TaskState? State = null, string? Type = null, string? Tag = null, string? Worker = null)
{
    public bool Matches(TaskRecord task, IReadOnlyDictionary<string, WorkerRecord> workers) =>
        (State is null || task.State == State)
        && (Type is null || task.Type == Type)
        && (Tag is null || task.Tags.Contains(Tag))
        && (Worker is null || (task.WorkerId is { } w && (w == Worker || workers.GetValueOrDefault(w)?.Name == Worker)));
}

public static class TaskQueries
{
    /// <summary>
    /// One page of tasks with id &gt; <paramref name="afterId"/> in id order, and how many tasks match
    /// the filter in all. One pass over the table keeping only the best <paramref name="limit"/> ids,
    /// so a page costs O(n log limit) and no sort of the whole table.
    /// </summary>
    public static (IReadOnlyList<TaskRecord> Page, int Matched) Page(this CoordinatorState state, TaskFilter filter, long afterId, int limit)
    {
        var matched = 0;
        var page = new SortedSet<long>();
        void Consider(long id)
        {
            matched++;
            if (id <= afterId || limit <= 0)
            {
                return;
            }

            if (page.Count < limit)
            {
                page.Add(id);
            }
            else if (id < page.Max)
            {
                page.Remove(page.Max);
                page.Add(id);
            }
        }

        foreach (var task in state.LiveTasks.Values)
        {
            if (filter.Matches(task, state.Workers))
            {
                Consider(task.Id);
            }
        }

        // Terminated tasks are matched on their log entries; only the page's are decoded.
        foreach (var id in state.Terminated.Matching(filter, state.Workers))
        {
            Consider(id);
        }

        return (page.Select(id => state.Tasks[id]).ToList(), matched);
    }
}
