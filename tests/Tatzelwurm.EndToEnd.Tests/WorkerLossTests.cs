using Tatzelwurm.Client;
using Tatzelwurm.EndToEnd.Tests.Fixtures;
using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.EndToEnd.Tests;

/// <summary>Issue 4: a worker killed with kill -9 while it runs tasks.</summary>
public sealed class WorkerLossTests
{
    [Fact]
    public async Task KilledWorker_RunningTasks_FollowTheirPolicyWithinLeasePlusGrace_SurvivorRunsRequeued()
    {
        await using var cluster = await Cluster.StartAsync();
        var settings = cluster.Settings;

        // The survivor is drained while the tasks are handed out, so they all go to the doomed worker.
        var starting = (Survivor: cluster.StartWorkerAsync("w-survivor", "async", slots: 4), Doomed: cluster.StartWorkerAsync("w-doomed", "async", slots: 4));
        var survivor = await starting.Survivor;
        var doomed = await starting.Doomed;
        await cluster.Client.CommandWorkerAsync("w-survivor", WorkerAction.Drain, TestContext.Current.CancellationToken);
        var atMostOnce = await cluster.AddMockAsync("sleep:2s", count: 2);
        var atLeastOnce = await cluster.AddMockAsync("block:2s", count: 2, type: "async", policy: DeliveryPolicy.AtLeastOnce);
        foreach (var id in atMostOnce.Concat(atLeastOnce))
        {
            await cluster.WaitForTaskAsync(id, "to run on w-doomed", t => t.State == States.Run && t.Worker == "w-doomed");
        }

        await cluster.Client.CommandWorkerAsync("w-survivor", WorkerAction.Undrain, TestContext.Current.CancellationToken);

        var killedAt = DateTimeOffset.UtcNow;
        doomed.Kill();

        // Dead after lease + grace at the latest (the dropped connection makes it suspect at once, so
        // typically after the grace alone), and not before the grace has passed.
        var earliest = killedAt + settings.Grace - TimeSpan.FromMilliseconds(100);
        var latest = killedAt + settings.Lease + settings.Grace + TimeSpan.FromSeconds(1);
        foreach (var id in atMostOnce)
        {
            var paused = await cluster.WaitForTaskAsync(id, "to be paused by its at-most-once policy", t => t.State == States.Pause);
            Assert.Null(paused.Worker);
            Assert.Equal(1, paused.Attempts);
            Assert.StartsWith("at-most-once", paused.Reason);
            Assert.Contains("w-doomed", paused.Reason);
            Assert.InRange(At(paused.History[^1]), earliest, latest);
        }

        // The at-most-once tasks waited for a decision; played, the survivor runs them.
        var played = await cluster.ActionwurmJsonAsync(["task", "play", .. atMostOnce.Select(id => id.ToString())]);
        Assert.Equal(atMostOnce, played.GetProperty("applied").EnumerateArray().Select(e => e.GetInt64()));
        foreach (var id in atLeastOnce)
        {
            var done = await cluster.WaitForTaskAsync(id, "to be re-queued and run to the end on w-survivor", t => t.State == States.Terminated);
            Assert.True(done.ExitCode == 0, Cluster.Describe(done));
            Assert.Equal(1, done.Attempts);
            var requeued = Assert.Single(done.History, h => h.State == States.Ready && h.Reason?.StartsWith("at-least-once", StringComparison.Ordinal) == true);
            Assert.InRange(At(requeued), earliest, latest);
            Assert.Equal(["assigned to w-doomed", "assigned to w-survivor"], done.History.Where(h => h.State == States.Submit).Select(h => h.Reason));
        }

        foreach (var id in atMostOnce)
        {
            var done = await cluster.WaitForTaskAsync(id, "to run to the end on w-survivor", t => t.State == States.Terminated);
            Assert.True(done.ExitCode == 0, Cluster.Describe(done));
            Assert.Equal(["assigned to w-doomed", "assigned to w-survivor"], done.History.Where(h => h.State == States.Submit).Select(h => h.Reason));
        }

        var summary = await cluster.StopWorkerAsync(survivor, "w-survivor");
        Assert.Equal(4, summary.Completed);
    }

    private static DateTimeOffset At(TransitionInfo transition) => DateTimeOffset.FromUnixTimeMilliseconds(transition.AtMs);
}
