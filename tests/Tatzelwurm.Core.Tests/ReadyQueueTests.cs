using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>The assigner's index on its own, over a task table it reads.</summary>
public class ReadyQueueTests
{
    private readonly Dictionary<long, TaskRecord> _tasks = [];

    private static TaskRecord Ready(long id, int priority, string type = "t") =>
        Task(TaskState.Ready, id: id) with { Priority = priority, Type = type };

    private ReadyQueue Queue(params TaskRecord[] ready)
    {
        var queue = new ReadyQueue(_tasks);
        foreach (var task in ready)
        {
            _tasks[task.Id] = task;
            queue.Add(task);
        }

        return queue;
    }

    // What CoordinatorState.Put does when a task leaves ready.
    private void Leave(ReadyQueue queue, TaskRecord task)
    {
        queue.Remove(task);
        _tasks[task.Id] = task with { State = TaskState.Pause };
    }

    [Fact]
    public void Entry_Order_HigherPriorityFirstThenLowerId()
    {
        var entries = new[] { new ReadyQueue.Entry(1, 5), new ReadyQueue.Entry(9, 7), new ReadyQueue.Entry(1, 2), new ReadyQueue.Entry(9, 3) };

        Assert.Equal([new ReadyQueue.Entry(9, 3), new ReadyQueue.Entry(9, 7), new ReadyQueue.Entry(1, 2), new ReadyQueue.Entry(1, 5)], entries.Order());
    }

    [Fact]
    public void AddRemove_PerType_MinIsBest()
    {
        var queue = Queue(Ready(1, 0, "a"), Ready(2, 5, "a"), Ready(3, 1, "b"));

        var sets = queue.Types.ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal(new ReadyQueue.Entry(5, 2), sets["a"].Min);
        Assert.Equal(new ReadyQueue.Entry(1, 3), sets["b"].Min);

        Leave(queue, Ready(2, 5, "a"));

        Assert.Equal([new ReadyQueue.Entry(0, 1)], sets["a"]);
        Assert.Equal(new ReadyQueue.Entry(0, 1), sets["a"].Min);
    }

    [Fact]
    public void ParkForTag_Unpark_RestoresOnlyTasksStillReady()
    {
        var queue = Queue(Ready(1, 0), Ready(2, 0));
        var set = queue.Types.Single().Value;
        queue.ParkForTag("t", "x", new ReadyQueue.Entry(0, 1));
        queue.ParkForTag("t", "x", new ReadyQueue.Entry(0, 2));
        Assert.Empty(set);

        // Task 2 left ready while parked (killed, paused): it must not come back.
        Leave(queue, Ready(2, 0));
        queue.UnparkTag("x");

        Assert.Equal([new ReadyQueue.Entry(0, 1)], set);
    }

    [Fact]
    public void ParkForTag_TaskBackInItsSetWhileParked_UnparkAddsNoDuplicate()
    {
        var queue = Queue(Ready(1, 0));
        var set = queue.Types.Single().Value;
        queue.ParkForTag("t", "x", new ReadyQueue.Entry(0, 1));
        Leave(queue, Ready(1, 0));
        _tasks[1] = Ready(1, 0);
        queue.Add(Ready(1, 0));

        queue.UnparkTag("x");

        Assert.Equal([new ReadyQueue.Entry(0, 1)], set);
    }

    [Fact]
    public void ParkRejected_Unpark_RestoresAndClears()
    {
        var queue = Queue(Ready(1, 4));
        var set = queue.Types.Single().Value;
        queue.ParkRejected("t", new ReadyQueue.Entry(4, 1));

        queue.UnparkRejected();
        Assert.Equal([new ReadyQueue.Entry(4, 1)], set);
        Leave(queue, Ready(1, 4));
        queue.UnparkRejected();

        Assert.Empty(set);
    }
}
