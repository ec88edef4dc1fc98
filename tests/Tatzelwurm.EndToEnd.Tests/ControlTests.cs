using Tatzelwurm.Client;
using Tatzelwurm.EndToEnd.Tests.Fixtures;
using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.EndToEnd.Tests;

/// <summary>Issue 4: pause, play and kill of running mock tasks, through actionwurm.</summary>
public sealed class ControlTests
{
    [Fact]
    public async Task PauseThenPlay_RunningAsyncAndBlockingSleeps_SuspendedOnTheSameWorker_ThenComplete()
    {
        var duration = TimeSpan.FromSeconds(3);
        await using var cluster = await Cluster.StartAsync();
        await Task.WhenAll(cluster.StartWorkerAsync("w-async", "async", slots: 1), cluster.StartWorkerAsync("w-sync", "sync", slots: 1));
        var sleep = (await cluster.AddMockAsync("sleep:3s"))[0];
        var block = (await cluster.AddMockAsync("block:3s"))[0];
        var workerOf = new Dictionary<long, string> { [sleep] = "w-async", [block] = "w-sync" };
        foreach (var (id, worker) in workerOf)
        {
            await cluster.WaitForTaskAsync(id, $"to run on {worker}", t => t.State == States.Run && t.Worker == worker);
        }

        var paused = await cluster.ActionwurmJsonAsync("task", "pause", sleep.ToString(), block.ToString());
        Assert.Equal([sleep, block], paused.GetProperty("applied").EnumerateArray().Select(e => e.GetInt64()));
        var ranBeforePause = TimeSpan.MaxValue;
        foreach (var (id, worker) in workerOf)
        {
            var shown = await cluster.WaitForTaskAsync(id, "to be paused on its worker", t => t.State == States.Pause);
            Assert.Equal(worker, shown.Worker);
            Assert.Equal("paused on worker", shown.Reason);
            var ran = TimeSpan.FromMilliseconds(shown.History[^1].AtMs - shown.History[^2].AtMs);
            ranBeforePause = ran < ranBeforePause ? ran : ranBeforePause;
        }

        // Held paused for longer than the rest of the task would take: a pause that did not suspend
        // the work would let it finish (and report terminated) within this window.
        var holdUntil = DateTimeOffset.UtcNow + (duration - ranBeforePause) + TimeSpan.FromMilliseconds(300);
        while (DateTimeOffset.UtcNow < holdUntil)
        {
            foreach (var (id, worker) in workerOf)
            {
                var t = await cluster.Client.ShowAsync(id, TestContext.Current.CancellationToken);
                Assert.True(t.State == States.Pause && t.Worker == worker, Cluster.Describe(t));
            }

            await Task.Delay(100, TestContext.Current.CancellationToken);
        }

        var played = await cluster.ActionwurmJsonAsync("task", "play", sleep.ToString(), block.ToString());
        Assert.Equal([sleep, block], played.GetProperty("applied").EnumerateArray().Select(e => e.GetInt64()));
        foreach (var (id, worker) in workerOf)
        {
            var done = await cluster.WaitForTaskAsync(id, "to resume and complete", t => t.State == States.Terminated);
            Assert.True(done.ExitCode == 0 && done.Attempts == 0, Cluster.Describe(done));
            Assert.Equal([States.Ready, States.Submit, States.Run, States.Pause, States.Run, States.Terminated], done.History.Select(h => h.State));
            Assert.Equal($"assigned to {worker}", Assert.Single(done.History, h => h.State == States.Submit).Reason);

            // The work happened only while it was in run: the run intervals add up to the task's
            // duration (less one 50 ms pause checkpoint and timing slack).
            var running = TimeSpan.Zero;
            for (var i = 0; i < done.History.Count - 1; i++)
            {
                if (done.History[i].State == States.Run)
                {
                    running += TimeSpan.FromMilliseconds(done.History[i + 1].AtMs - done.History[i].AtMs);
                }
            }

            Assert.True(running >= duration - TimeSpan.FromMilliseconds(150), $"task {id} was in run for {running.TotalMilliseconds} ms only: {Cluster.Describe(done)}");
        }
    }

    [Fact]
    public async Task KillAndPause_WhileItsWorkerIsDisconnected_AppliedWhenTheWorkerReclaims()
    {
        // The grace only has to outlast the actionwurm processes started while the worker is cut off and
        // its reconnect back-off (up to 5 s); on a loaded machine 8 s was not always enough.
        await using var cluster = await Cluster.StartAsync(new CoordinatorSettings { Grace = TimeSpan.FromSeconds(30) });
        var proxy = cluster.Own(TcpProxy.Start(cluster.Address));
        var worker = await cluster.StartWorkerAsync("w-proxied", "async", slots: 3, server: proxy.Address);
        var sleep = (await cluster.AddMockAsync("sleep:60s"))[0];
        var block = (await cluster.AddMockAsync("block:60s", type: "async"))[0];
        var toPause = (await cluster.AddMockAsync("sleep:60s"))[0];
        foreach (var id in new[] { sleep, block, toPause })
        {
            await cluster.WaitForTaskAsync(id, "to run on w-proxied", t => t.State == States.Run && t.Worker == "w-proxied");
        }

        proxy.Block();
        await cluster.WaitForWorkerAsync("w-proxied", "to be suspect (disconnected)", w => w.State == "suspect");

        var controls = await Task.WhenAll(
            cluster.ActionwurmJsonAsync("task", "kill", sleep.ToString(), block.ToString()),
            cluster.ActionwurmJsonAsync("task", "pause", toPause.ToString()));
        Assert.Equal([sleep, block], controls[0].GetProperty("applied").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal([toPause], controls[1].GetProperty("applied").EnumerateArray().Select(e => e.GetInt64()));
        foreach (var id in new[] { sleep, block })
        {
            // Recorded, not yet applied: the worker cannot be told.
            var pending = await cluster.ActionwurmJsonAsync("task", "show", id.ToString());
            Assert.Equal("run", pending.GetProperty("state").GetString());
            Assert.Equal("w-proxied", pending.GetProperty("worker").GetString());
            Assert.Equal("suspect", pending.GetProperty("worker_lease").GetString());
            Assert.Equal("kill requested", pending.GetProperty("reason").GetString());
        }

        var pausePending = await cluster.Client.ShowAsync(toPause, TestContext.Current.CancellationToken);
        Assert.True(pausePending.State == States.Run && pausePending.Worker == "w-proxied", Cluster.Describe(pausePending));

        proxy.Restore();
        foreach (var id in new[] { sleep, block })
        {
            var done = await cluster.WaitForTaskAsync(id, "to be killed on its worker", t => t.State == States.Terminated);
            Assert.True(done.ExitCode == -1 && done.Attempts == 0, Cluster.Describe(done));
            // Killed by the worker after it reclaimed the task, not by the lost-worker rule.
            Assert.Equal("killed by actioner", done.Reason);
        }

        var paused = await cluster.WaitForTaskAsync(toPause, "to be paused on its worker", t => t.State == States.Pause);
        Assert.True(paused.Worker == "w-proxied" && paused.Attempts == 0 && paused.Reason == "paused on worker", Cluster.Describe(paused));
        Assert.True(proxy.Accepted >= 2, "the worker never reconnected through the proxy");
        Assert.Contains($"task {sleep} ended with exit code -1", worker.Stderr, StringComparison.Ordinal);
        Assert.Contains($"task {block} ended with exit code -1", worker.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain($"task {toPause} ended", worker.Stderr, StringComparison.Ordinal);
    }
}
