using System.Diagnostics;
using System.Globalization;
using Microsoft.Playwright;
using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using Xunit;
using static Microsoft.Playwright.Assertions;

namespace Tatzelwurm.Dashboard.Tests;

/// <summary>The dashboard in a real headless Chromium against a real coordinator with workers.</summary>
public sealed class BrowserTests
{
    private const float WaitMs = 20_000;

    static BrowserTests() => SetDefaultExpectTimeout(WaitMs);

    [Fact(Timeout = 300_000)]
    public async Task Dashboard_RealCoordinator_CountsRowsLiveUpdatesAndKillWhenAuthenticated()
    {
        var cancel = TestContext.Current.CancellationToken;
        await using var tw = await TestCoordinator.StartAsync();
        var tasks = new TestTasks();
        await tw.StartWorkerAsync("w-alpha", slots: 2, tasks, name: "alpha");
        await tw.StartWorkerAsync("w-beta", slots: 1, tasks, name: "beta", types: ["gpu-job"]);
        await using var client = await tw.ClientAsync();
        await client.SetTagLimitAsync("cpu:big", 1, cancel);

        // A known state: 4 terminated (one failed), 2 running on alpha, 1 ready held back by the tag
        // limit, 2 created, 1 paused.
        foreach (var payload in new[] { TestTasks.Ok, TestTasks.Ok, TestTasks.Ok, TestTasks.Fail })
        {
            await client.WaitAsync(await client.AddAsync(payload, "sim", cancellationToken: cancel), cancellationToken: cancel);
        }

        var failed = (await tw.QueryAsync(s => s.Tasks.Values.Single(t => t.ExitCode == 3))).Id;
        var hold1 = await client.AddAsync(TestTasks.Hold, "sim", priority: 5, tags: ["cpu:big"], cancellationToken: cancel);
        await Eventually.TrueAsync(() => tw.QueryAsync(s => s.Tasks[hold1].State == TaskState.Run), "first held task running");
        var hold2 = await client.AddAsync(TestTasks.Hold, "sim", tags: ["cpu:big"], cancellationToken: cancel);
        var hold3 = await client.AddAsync(TestTasks.Hold, "sim", cancellationToken: cancel);
        var created1 = await client.AddAsync(TestTasks.Ok, "later", tags: ["batch"], ready: false, cancellationToken: cancel);
        await client.AddAsync(TestTasks.Ok, "later", tags: ["batch"], ready: false, cancellationToken: cancel);
        var paused = await client.AddAsync(TestTasks.Ok, "later", ready: false, cancellationToken: cancel);
        await client.ControlAsync(TaskAction.Pause, [paused], cancellationToken: cancel);
        await Eventually.TrueAsync(() => tw.QueryAsync(s => s.Tasks[hold3].State == TaskState.Run), "second held task running");
        Assert.Equal(TaskState.Ready, await tw.QueryAsync(s => s.Tasks[hold2].State));

        await using var chromium = await Chromium.LaunchAsync();
        var (page, errors) = await chromium.NewPageAsync();
        await page.GotoAsync(tw.Url.ToString());
        await Expect(page.Locator("body")).ToHaveAttributeAsync("data-loaded", "true");
        await Expect(page.Locator("#live")).ToHaveTextAsync("live");
        await Expect(page.Locator("#ready")).ToHaveTextAsync("ready");

        // Counts and rows match the coordinator's own state.
        var counts = await tw.QueryAsync(s => Enum.GetValues<TaskState>().ToDictionary(x => x.Name(), s.Count));
        Assert.Equal((2, 1, 0, 2, 1, 4), (counts["created"], counts["ready"], counts["submit"], counts["run"], counts["pause"], counts["terminated"]));
        foreach (var (state, count) in counts)
        {
            await Expect(page.Locator($"#count-{state}")).ToHaveTextAsync(count.ToString(CultureInfo.InvariantCulture));
        }

        await Expect(page.Locator("#count-total")).ToHaveTextAsync("10");
        await Expect(page.Locator("#count-workers")).ToHaveTextAsync("2");
        var expectedRows = await tw.QueryAsync(s => s.Tasks.Values.OrderBy(t => t.Id).Select(t => $"{t.Id}:{t.State.Name()}").ToArray());
        await Expect(page.Locator("#tasks tbody tr")).ToHaveCountAsync(expectedRows.Length);
        Assert.Equal(expectedRows, await RowsAsync(page));
        await Expect(page.Locator($"#tasks tr[data-task-id='{hold1}'] td").Nth(5)).ToHaveTextAsync("alpha");
        await Expect(page.Locator("#page-info")).ToContainTextAsync("of 10 matching");

        // Read-only until unlocked: no action buttons anywhere.
        await Expect(page.Locator("button[data-action]")).ToHaveCountAsync(0);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Screenshots.PathOf("dashboard-tasks.png"), FullPage = true });

        // Live: a change made elsewhere shows up without a reload.
        await page.EvaluateAsync("() => { window.__sameDocument = 42; }");
        await client.ControlAsync(TaskAction.Play, [created1], cancellationToken: cancel);
        await Expect(page.Locator($"#tasks tr[data-task-id='{created1}']")).ToHaveAttributeAsync("data-state", "ready");
        await Expect(page.Locator("#count-ready")).ToHaveTextAsync("2");
        await Expect(page.Locator("#count-created")).ToHaveTextAsync("1");
        Assert.Equal(42, await page.EvaluateAsync<int>("() => window.__sameDocument"));

        // Filter by clicking a count card: server-side filter by state.
        await page.Locator(".card[data-state='run']").ClickAsync();
        await Expect(page.Locator("#tasks tbody tr")).ToHaveCountAsync(2);
        Assert.Equal([$"{hold1}:run", $"{hold3}:run"], await RowsAsync(page));
        await page.Locator("#f-clear").ClickAsync();
        await Expect(page.Locator("#tasks tbody tr")).ToHaveCountAsync(10);

        // Task detail with its transition history.
        await page.Locator($"#tasks tr[data-task-id='{failed}'] td").First.ClickAsync();
        await Expect(page.Locator("#detail")).ToBeVisibleAsync();
        var history = await tw.QueryAsync(s => s.Tasks[failed].History.Select(h => h.State.Name()).ToArray());
        await Expect(page.Locator("#d-history li")).ToHaveCountAsync(history.Length);
        Assert.Equal(history, await page.Locator("#d-history li").EvaluateAllAsync<string[]>("items => items.map(i => i.dataset.state)"));
        await Expect(page.Locator("#d-fields dd[data-field='exit code']")).ToHaveTextAsync("3");
        await Expect(page.Locator("#d-fields dd[data-field='error']")).ToHaveTextAsync("failed on purpose");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Screenshots.PathOf("task-detail.png") });
        await page.Keyboard.PressAsync("Escape");
        await Expect(page.Locator("#detail")).ToBeHiddenAsync();

        // Workers with load and heartbeat age.
        await page.Locator("a[data-view='workers']").ClickAsync();
        await Expect(page.Locator("#workers tbody tr")).ToHaveCountAsync(2);
        await Expect(page.Locator("#workers tr[data-worker-id='w-alpha'] td.load")).ToHaveTextAsync("2 / 2");
        await Expect(page.Locator("#workers tr[data-worker-id='w-beta'] td.load")).ToHaveTextAsync("0 / 1");
        await Expect(page.Locator("#workers tr[data-worker-id='w-alpha'] td.hb")).ToHaveTextAsync(new System.Text.RegularExpressions.Regex(@"^(<1 s|\d+ s)$"));
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Screenshots.PathOf("workers.png"), FullPage = true });

        // Tag limits.
        await page.Locator("a[data-view='tags']").ClickAsync();
        await Expect(page.Locator("#tags tr[data-tag='cpu:big'] td").Nth(1)).ToHaveTextAsync("1");
        await Expect(page.Locator("#tags tr[data-tag='cpu:big'] td").Nth(2)).ToHaveTextAsync("1");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Screenshots.PathOf("tag-limits.png"), FullPage = true });

        // A wrong token unlocks nothing.
        await page.Locator("a[data-view='tasks']").ClickAsync();
        await page.Locator("#token").FillAsync("not-the-token");
        await page.Locator("#unlock").ClickAsync();
        await Expect(page.Locator("#toast")).ToHaveTextAsync("wrong token");
        await Expect(page.Locator("#auth-state")).ToHaveTextAsync("read-only");
        await Expect(page.Locator("button[data-action]")).ToHaveCountAsync(0);

        // Authenticated: kill a running task from the page (a second click confirms).
        await page.Locator("#token").FillAsync(tw.Host.Token);
        await page.Locator("#unlock").ClickAsync();
        await Expect(page.Locator("#auth-state")).ToHaveTextAsync("actions unlocked");
        var kill = page.Locator($"#tasks tr[data-task-id='{hold1}'] button[data-action='kill']");
        await kill.ClickAsync();
        await Expect(kill).ToHaveTextAsync("confirm kill");

        // A live update re-renders the table between the two clicks; the armed button stays armed.
        var added = await client.AddAsync(TestTasks.Ok, "later", ready: false, cancellationToken: cancel);
        await Expect(page.Locator($"#tasks tr[data-task-id='{added}']")).ToHaveCountAsync(1);
        await Expect(kill).ToHaveTextAsync("confirm kill");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Screenshots.PathOf("actions-unlocked.png"), FullPage = true });
        await kill.ClickAsync();
        await Expect(page.Locator($"#tasks tr[data-task-id='{hold1}']")).ToHaveAttributeAsync("data-state", "terminated");
        var killed = await tw.QueryAsync(s => s.Tasks[hold1]);
        Assert.Equal((TaskState.Terminated, -1), (killed.State, killed.ExitCode));
        Assert.Equal(TaskState.Terminated, tw.Store.Snapshot().Tasks.Single(t => t.Id == hold1).State);

        // The freed slot and tag let the waiting task run: also seen live.
        await Expect(page.Locator($"#tasks tr[data-task-id='{hold2}']")).ToHaveAttributeAsync("data-state", "run");
        await Expect(page.Locator($"#tasks tr[data-task-id='{hold1}'] td").Nth(7)).ToHaveTextAsync("-1");
        await Expect(page.Locator("#count-terminated")).ToHaveTextAsync("5");
        Assert.Equal(42, await page.EvaluateAsync<int>("() => window.__sameDocument"));
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Screenshots.PathOf("after-kill.png"), FullPage = true });

        lock (errors)
        {
            // The browser logs the refused token check (HTTP 401) itself; anything else is a fault.
            Assert.DoesNotContain(errors, e => !e.Contains("status of 401", StringComparison.Ordinal));
        }

        tasks.ReleaseAll();
    }

    [Fact(Timeout = 300_000)]
    public async Task Dashboard_HundredThousandTasksAddedWhileOpen_KeepsUpAndPagesServerSide()
    {
        var cancel = TestContext.Current.CancellationToken;
        await using var tw = await TestCoordinator.StartAsync();
        await using var client = await tw.ClientAsync();
        await using var chromium = await Chromium.LaunchAsync();
        var (page, errors) = await chromium.NewPageAsync();
        await page.GotoAsync(tw.Url.ToString());
        await Expect(page.Locator("#live")).ToHaveTextAsync("live");
        await page.EvaluateAsync("() => { window.__sameDocument = 7; }");

        // 100,000 events arrive while the page is open: it keeps up (or resyncs) without reloading.
        var watch = Stopwatch.StartNew();
        for (var batch = 0; batch < 10; batch++)
        {
            var type = batch == 9 ? "rare" : "bulk";
            await client.AddAsync(Enumerable.Range(0, 10_000).Select(i => new TaskSpec(TestTasks.Ok, type, 0, [$"shard:{i % 16}"], Protocol.DeliveryPolicy.Default, false, true)).ToList(), cancel);
        }

        var added = watch.Elapsed;
        await Expect(page.Locator("#count-total")).ToHaveTextAsync("100,000", new LocatorAssertionsToHaveTextOptions { Timeout = 60_000 });
        await Expect(page.Locator("#count-created")).ToHaveTextAsync("100,000");
        await Expect(page.Locator("#page-info")).ToHaveTextAsync("page 1 · 1–50 of 100,000 matching");
        var caughtUp = watch.Elapsed;
        await Expect(page.Locator("#tasks tbody tr")).ToHaveCountAsync(50);
        Assert.Equal("1", await page.Locator("#tasks tbody tr").First.GetAttributeAsync("data-task-id"));
        Assert.Equal(7, await page.EvaluateAsync<int>("() => window.__sameDocument"));

        watch.Restart();
        await page.Locator("#next").ClickAsync();
        await Expect(page.Locator("#tasks tbody tr").First).ToHaveAttributeAsync("data-task-id", "51");
        await Expect(page.Locator("#page-info")).ToHaveTextAsync("page 2 · 51–100 of 100,000 matching");
        var nextPage = watch.Elapsed;

        await page.Locator("#f-type").FillAsync("rare");
        await page.SelectOptionAsync("#f-limit", "500");
        watch.Restart();
        await page.Locator("#filters button[type='submit']").ClickAsync();
        await Expect(page.Locator("#page-info")).ToHaveTextAsync("page 1 · 1–500 of 10,000 matching");
        await Expect(page.Locator("#tasks tbody tr").First).ToHaveAttributeAsync("data-task-id", "90001");
        await Expect(page.Locator("#tasks tbody tr")).ToHaveCountAsync(500);
        var filtered = watch.Elapsed;
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Screenshots.PathOf("hundred-thousand-tasks.png") });

        // A fresh page load at 100,000 tasks.
        watch.Restart();
        var fresh = await chromium.Browser.NewPageAsync();
        await fresh.GotoAsync(tw.Url.ToString());
        await Expect(fresh.Locator("#tasks tbody tr")).ToHaveCountAsync(50);
        await Expect(fresh.Locator("#count-total")).ToHaveTextAsync("100,000");
        var firstPaint = watch.Elapsed;

        TestContext.Current.TestOutputHelper?.WriteLine(
            $"100k tasks: added in {added.TotalMilliseconds:0} ms, page caught up after {caughtUp.TotalMilliseconds:0} ms, "
            + $"next page {nextPage.TotalMilliseconds:0} ms, filtered 500 rows {filtered.TotalMilliseconds:0} ms, fresh load {firstPaint.TotalMilliseconds:0} ms");
        // Generous bounds for a shared two-core machine: they catch a page that loads the whole table.
        Assert.True(nextPage < TimeSpan.FromSeconds(5), $"next page took {nextPage.TotalMilliseconds:0} ms");
        Assert.True(filtered < TimeSpan.FromSeconds(5), $"filtered page took {filtered.TotalMilliseconds:0} ms");
        Assert.True(firstPaint < TimeSpan.FromSeconds(10), $"a fresh load took {firstPaint.TotalMilliseconds:0} ms");
        lock (errors)
        {
            Assert.Empty(errors);
        }
    }

    [Fact]
    public async Task Chromium_Missing_FailsWithInstructions()
    {
        var missing = await Assert.ThrowsAsync<InvalidOperationException>(() => Chromium.LaunchAsync("/nonexistent/chromium"));

        Assert.Contains("apt-get install -y chromium", missing.Message, StringComparison.Ordinal);
    }

    private static Task<string[]> RowsAsync(IPage page) =>
        page.Locator("#tasks tbody tr").EvaluateAllAsync<string[]>("rows => rows.map(r => r.dataset.taskId + ':' + r.dataset.state)");
}
