using System.Text.Json;
using Tatzelwurm.EndToEnd.Tests.Fixtures;
using Xunit;

namespace Tatzelwurm.EndToEnd.Tests;

/// <summary>Issue 2: the three programs together, driven by actionwurm as a process.</summary>
public sealed class CoreScenarioTests
{
    [Fact]
    public async Task TwoHundredMixedTasks_AsyncAndSyncWorkers_AllCompleteWithinSlots_KilledTasksEndMinusOne()
    {
        await using var cluster = await Cluster.StartAsync();
        var starting = (Async: cluster.StartWorkerAsync("w-async", "async", slots: 2), Sync: cluster.StartWorkerAsync("w-sync", "sync", slots: 4));
        var asyncWorker = await starting.Async;
        var syncWorker = await starting.Sync;

        // 100 async sleeps (type async) and 100 blocking sleeps (type sync), added in 'created' and
        // released together by play -a.
        var adding = (Sleeps: cluster.AddAsync("--mock", "sleep:20ms", "-n", "100", "--created"), Blocks: cluster.AddAsync("--mock", "block:20ms", "-n", "100", "--created"));
        var sleeps = await adding.Sleeps;
        var blocks = await adding.Blocks;
        Assert.Equal(100, sleeps.Count);
        Assert.Equal(100, blocks.Count);
        var before = await cluster.ActionwurmJsonAsync("task", "list");
        Assert.Equal(200, before.GetProperty("counts").GetProperty("created").GetInt32());

        var played = await cluster.ActionwurmJsonAsync("task", "play", "-a");
        Assert.Equal(200, played.GetProperty("applied").GetArrayLength());

        JsonElement list = default;
        await Eventually.UntilAsync("all 200 tasks to terminate (polled with actionwurm task list)", async () =>
        {
            list = await cluster.ActionwurmJsonAsync("task", "list", "--all");
            return list.GetProperty("counts").GetProperty("terminated").GetInt32() == 200;
        }, () => list.ValueKind == JsonValueKind.Undefined ? "nothing" : list.GetProperty("counts").ToString(), interval: TimeSpan.FromMilliseconds(250));

        var tasks = list.GetProperty("tasks").EnumerateArray().ToList();
        Assert.Equal(sleeps.Concat(blocks).Order(), tasks.Select(t => t.GetProperty("id").GetInt64()).Order());
        Assert.All(tasks, t =>
        {
            Assert.Equal("terminated", t.GetProperty("state").GetString());
            Assert.Equal(0, t.GetProperty("exit_code").GetInt32());
            Assert.Equal(0, t.GetProperty("attempts").GetInt32());
        });
        Assert.All(tasks.Where(t => sleeps.Contains(t.GetProperty("id").GetInt64())), t => Assert.Equal("async", t.GetProperty("type").GetString()));
        Assert.All(tasks.Where(t => blocks.Contains(t.GetProperty("id").GetInt64())), t => Assert.Equal("sync", t.GetProperty("type").GetString()));

        // One long task of each kind, killed while it runs.
        var addingLong = (Sleep: cluster.AddAsync("--mock", "sleep:60s"), Block: cluster.AddAsync("--mock", "block:60s"));
        var longSleep = (await addingLong.Sleep)[0];
        var longBlock = (await addingLong.Block)[0];
        await cluster.WaitForTaskAsync(longSleep, "to run on w-async", t => t.State == States.Run && t.Worker == "w-async");
        await cluster.WaitForTaskAsync(longBlock, "to run on w-sync", t => t.State == States.Run && t.Worker == "w-sync");
        var killed = await cluster.ActionwurmJsonAsync("task", "kill", longSleep.ToString(), longBlock.ToString());
        Assert.Equal([longSleep, longBlock], killed.GetProperty("applied").EnumerateArray().Select(e => e.GetInt64()));

        // task wait returns the (last failing) task's exit code: -1 is 255 as a process status.
        var wait = await cluster.ActionwurmAsync("task", "wait", longSleep.ToString(), longBlock.ToString());
        Assert.True(wait.ExitCode == 255, $"task wait on killed tasks: {wait}");
        foreach (var shown in await Task.WhenAll(cluster.ActionwurmJsonAsync("task", "show", longSleep.ToString()), cluster.ActionwurmJsonAsync("task", "show", longBlock.ToString())))
        {
            Assert.Equal("terminated", shown.GetProperty("state").GetString());
            Assert.Equal(-1, shown.GetProperty("exit_code").GetInt32());
            Assert.Equal("killed by actioner", shown.GetProperty("reason").GetString());
        }

        // Graceful stop; each worker reports what it ran and its peak concurrency.
        var stopping = (Async: cluster.StopWorkerAsync(asyncWorker, "w-async"), Sync: cluster.StopWorkerAsync(syncWorker, "w-sync"));
        var asyncSummary = await stopping.Async;
        var syncSummary = await stopping.Sync;
        Assert.Equal(new WorkerSummary("w-async", 101, asyncSummary.MaxConcurrent, 2), asyncSummary);
        Assert.Equal(new WorkerSummary("w-sync", 101, syncSummary.MaxConcurrent, 4), syncSummary);
        Assert.InRange(asyncSummary.MaxConcurrent, 1, 2);
        Assert.InRange(syncSummary.MaxConcurrent, 1, 4);

        // The same bound measured from the outside, from the workers' logs of handler start and end.
        Assert.InRange(WorkerLog.MaxOverlap(asyncWorker.StderrLines), 1, 2);
        Assert.InRange(WorkerLog.MaxOverlap(syncWorker.StderrLines), 1, 4);

        var workers = await cluster.ActionwurmJsonAsync("worker", "list");
        Assert.Equal(0, workers.GetArrayLength());
    }
}
