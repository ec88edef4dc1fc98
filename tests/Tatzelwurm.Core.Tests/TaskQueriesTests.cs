namespace Tatzelwurm.Core.Tests;

/// <summary><see cref="TaskQueries.Page"/>: filters, paging after an id, and match counts.</summary>
public class TaskQueriesTests
{
    private static Harness Table()
    {
        var h = new Harness();
        h.State.RegisterWorker("id-a", "alpha", ["sync"], 10, [], new Conn("id-a"), h.Now);
        h.Connections["id-a"] = (Conn)h.State.Workers["id-a"].Connection!;
        for (var i = 1; i <= 20; i++)
        {
            var type = i % 2 == 0 ? "sync" : "async";
            string[] tags = i % 3 == 0 ? ["computer:daint", "big"] : ["small"];
            h.Add(type, tags: tags, ready: i % 5 != 0);
        }

        // Sync tasks 2..20 that are ready go to the worker (up to its 10 slots).
        h.Assign();
        return h;
    }

    [Fact]
    public void Page_NoFilter_AllTasksInIdOrderUpToLimit()
    {
        var h = Table();

        var (page, matched) = h.State.Page(new TaskFilter(), afterId: 0, limit: 7);

        Assert.Equal(20, matched);
        Assert.Equal([1L, 2, 3, 4, 5, 6, 7], page.Select(t => t.Id));
    }

    [Fact]
    public void Page_AfterId_WalksTheWholeTableWithoutGapsOrRepeats()
    {
        var h = Table();
        var seen = new List<long>();
        var after = 0L;

        while (true)
        {
            var (page, matched) = h.State.Page(new TaskFilter(), after, limit: 6);
            Assert.Equal(20, matched);
            if (page.Count == 0)
            {
                break;
            }

            seen.AddRange(page.Select(t => t.Id));
            after = page[^1].Id;
        }

        Assert.Equal(Enumerable.Range(1, 20).Select(i => (long)i), seen);
    }

    [Theory]
    [InlineData(TaskState.Created, new long[] { 5, 10, 15, 20 })]
    [InlineData(TaskState.Submit, new long[] { 2, 4, 6, 8, 12, 14, 16, 18 })]
    [InlineData(TaskState.Ready, new long[] { 1, 3, 7, 9, 11, 13, 17, 19 })]
    [InlineData(TaskState.Terminated, new long[0])]
    public void Page_StateFilter_OnlyThatState(TaskState state, long[] expected)
    {
        var h = Table();

        var (page, matched) = h.State.Page(new TaskFilter(State: state), 0, 100);

        Assert.Equal(expected, page.Select(t => t.Id));
        Assert.Equal(expected.Length, matched);
    }

    [Fact]
    public void Page_TypeAndTagFilters_Combine()
    {
        var h = Table();

        var (page, matched) = h.State.Page(new TaskFilter(Type: "sync", Tag: "computer:daint"), 0, 100);

        Assert.Equal([6L, 12, 18], page.Select(t => t.Id));
        Assert.Equal(3, matched);
    }

    [Theory]
    [InlineData("id-a")]
    [InlineData("alpha")]
    public void Page_WorkerFilter_MatchesIdOrName(string worker)
    {
        var h = Table();

        var (page, matched) = h.State.Page(new TaskFilter(Worker: worker), 0, 3);

        Assert.Equal([2L, 4, 6], page.Select(t => t.Id));
        Assert.Equal(8, matched);
    }

    [Fact]
    public void Page_UnknownValues_MatchNothing()
    {
        var h = Table();

        Assert.Equal(0, h.State.Page(new TaskFilter(Worker: "nobody"), 0, 10).Matched);
        Assert.Equal(0, h.State.Page(new TaskFilter(Tag: "nope"), 0, 10).Matched);
        Assert.Equal(0, h.State.Page(new TaskFilter(Type: "gpu"), 0, 10).Matched);
    }

    [Fact]
    public void Page_AfterIdWithFilter_MatchedCountsTheWholeFilterNotTheRest()
    {
        var h = Table();

        var (page, matched) = h.State.Page(new TaskFilter(Tag: "big"), afterId: 9, limit: 100);

        Assert.Equal([12L, 15, 18], page.Select(t => t.Id));
        Assert.Equal(6, matched);
    }

    [Fact]
    public void Page_ZeroLimit_EmptyPageWithCount()
    {
        var h = Table();

        var (page, matched) = h.State.Page(new TaskFilter(Type: "async"), 0, 0);

        Assert.Empty(page);
        Assert.Equal(10, matched);
    }

    [Fact]
    public void Page_AfterLastId_EmptyPage()
    {
        var h = Table();

        Assert.Empty(h.State.Page(new TaskFilter(), 20, 10).Page);
    }

    [Fact]
    public void Page_PurgedTasks_NoLongerListed()
    {
        var h = Table();
        h.Control(1, ControlVerb.Kill);
        h.State.Purge(h.Now + h.Options.Retention);

        var (page, matched) = h.State.Page(new TaskFilter(), 0, 2);

        Assert.Equal([2L, 3], page.Select(t => t.Id));
        Assert.Equal(19, matched);
    }

    [Fact]
    public void Page_TerminatedAndLiveTasks_EveryFilterAgreesWithTheWholeTable()
    {
        // Terminated tasks are matched on their log entries, live ones on their records: both must
        // give what filtering every record (decoded) gives.
        var h = Table();
        foreach (var id in new long[] { 2, 6, 12 })
        {
            h.Report("id-a", id, WorkerReport.Accepted);
            h.Report("id-a", id, WorkerReport.Finished);
        }

        h.Control(3, ControlVerb.Kill);
        h.Control(5, ControlVerb.Kill);
        TaskFilter[] filters =
        [
            new(), new(State: TaskState.Terminated), new(State: TaskState.Submit), new(Type: "sync"), new(Type: "async"),
            new(Tag: "big"), new(Tag: "small"), new(Worker: "alpha"), new(Worker: "id-a"),
            new(State: TaskState.Terminated, Type: "sync", Tag: "computer:daint", Worker: "alpha"),
        ];

        foreach (var filter in filters)
        {
            var expected = h.State.Tasks.Values.Where(t => filter.Matches(t, h.State.Workers)).Select(t => t.Id).Order().ToList();
            var (page, matched) = h.State.Page(filter, 0, 100);
            Assert.Equal(expected, page.Select(t => t.Id));
            Assert.Equal(expected.Count, matched);
        }

        Assert.Equal(5, h.State.Page(new TaskFilter(State: TaskState.Terminated), 0, 100).Matched);
        Assert.Equal([3L, 6, 12], h.State.Page(new TaskFilter(State: TaskState.Terminated, Tag: "big"), 0, 100).Page.Select(t => t.Id));
    }

    [Fact]
    public void Count_ByState_MatchesTheTable()
    {
        var h = Table();

        Assert.Equal(4, h.State.Count(TaskState.Created));
        Assert.Equal(8, h.State.Count(TaskState.Ready));
        Assert.Equal(8, h.State.Count(TaskState.Submit));
        Assert.Equal(20, Enum.GetValues<TaskState>().Sum(h.State.Count));
    }
}
