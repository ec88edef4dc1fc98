using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>The assigner's index on its own.</summary>
public class ReadyQueueTests
{
    private static TaskRecord Ready(long id, int priority, string type = "t") =>
        Task(TaskState.Ready, id: id) with { Priority = priority, Type = type };

    [Fact]
    public void Entry_Order_HigherPriorityFirstThenLowerId()
    {
        var entries = new[] { new ReadyQueue.Entry(1, 5), new ReadyQueue.Entry(9, 7), new ReadyQueue.Entry(1, 2), new ReadyQueue.Entry(9, 3) };

        Assert.Equal([new ReadyQueue.Entry(9, 3), new ReadyQueue.Entry(9, 7), new ReadyQueue.Entry(1, 2), new ReadyQueue.Entry(1, 5)], entries.Order());
    }

    [Fact]
    public void AddRemove_PerType_MinIsBestAndCountTracksIds()
    {
        var queue = new ReadyQueue();
        queue.Add(Ready(1, 0, "a"));
        queue.Add(Ready(2, 5, "a"));
        queue.Add(Ready(3, 1, "b"));

        Assert.Equal(3, queue.Count);
        var sets = queue.Types.ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal(new ReadyQueue.Entry(5, 2), sets["a"].Min);
        Assert.Equal(new ReadyQueue.Entry(1, 3), sets["b"].Min);

        queue.Remove(Ready(2, 5, "a"));

        Assert.Equal(2, queue.Count);
        Assert.False(queue.Contains(2));
        Assert.Equal(new ReadyQueue.Entry(0, 1), sets["a"].Min);
    }

    [Fact]
    public void ParkForTag_Unpark_RestoresOnlyTasksStillReady()
    {
        var queue = new ReadyQueue();
        queue.Add(Ready(1, 0));
        queue.Add(Ready(2, 0));
        var set = queue.Types.Single().Value;
        queue.Take("t", new ReadyQueue.Entry(0, 1));
        queue.ParkForTag("x", new ReadyQueue.Entry(0, 1));
        queue.Take("t", new ReadyQueue.Entry(0, 2));
        queue.ParkForTag("x", new ReadyQueue.Entry(0, 2));
        Assert.Empty(set);

        // Task 2 left ready while parked (killed, paused): it must not come back.
        queue.Remove(Ready(2, 0));
        queue.UnparkTag("x");

        Assert.Equal([new ReadyQueue.Entry(0, 1)], set);
        Assert.Equal(1, queue.Count);
    }

    [Fact]
    public void ParkRejected_Unpark_RestoresAndClears()
    {
        var queue = new ReadyQueue();
        queue.Add(Ready(1, 4));
        var set = queue.Types.Single().Value;
        queue.Take("t", new ReadyQueue.Entry(4, 1));
        queue.ParkRejected("t", new ReadyQueue.Entry(4, 1));

        queue.UnparkRejected();
        queue.Take("t", new ReadyQueue.Entry(4, 1));
        queue.UnparkRejected();

        Assert.Empty(set);
        Assert.True(queue.Contains(1));
    }
}
