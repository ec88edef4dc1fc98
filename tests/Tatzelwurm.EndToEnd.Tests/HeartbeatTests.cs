using Tatzelwurm.EndToEnd.Tests.Fixtures;
using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.EndToEnd.Tests;

/// <summary>Issue 4: blocking work must not delay a worker's heartbeats.</summary>
public sealed class HeartbeatTests
{
    [Fact]
    public async Task BlockingTasksOnAllSlots_LeaseOneSecond_WorkerStaysConnected_TasksNotRequeued()
    {
        // Six blocking sleeps of 4 s on six slots: more blocked threads than cores, four times the lease.
        const int Slots = 6;
        await using var cluster = await Cluster.StartAsync(new CoordinatorSettings { Lease = TimeSpan.FromSeconds(1), Grace = TimeSpan.FromSeconds(2) });
        var worker = await cluster.StartWorkerAsync("w-busy", "sync", slots: Slots);
        var ids = await cluster.AddMockAsync("block:4s", count: Slots, policy: DeliveryPolicy.AtLeastOnce);
        var busy = await cluster.WaitForWorkerAsync("w-busy", "to run all its slots", w => w.Load == Slots);
        foreach (var id in ids)
        {
            await cluster.WaitForTaskAsync(id, "to run on w-busy", t => t.State == States.Run && t.Worker == "w-busy");
        }

        // While they run, the worker must never look silent: sampled every 100 ms, it is connected on
        // the same connection and was last heard from less than a lease ago.
        var samples = 0;
        var stalest = TimeSpan.Zero;
        await Eventually.UntilAsync("the blocking tasks to finish", async () =>
        {
            var w = (await cluster.Client.WorkersAsync(TestContext.Current.CancellationToken)).Single(x => x.WorkerId == "w-busy");
            var silence = DateTimeOffset.UtcNow - DateTimeOffset.FromUnixTimeMilliseconds(w.LastSeenMs);
            stalest = silence > stalest ? silence : stalest;
            samples++;
            Assert.True(w.State == "connected" && w.ConnectedAtMs == busy.ConnectedAtMs,
                $"w-busy is {w.State}, connected at {w.ConnectedAtMs} (was {busy.ConnectedAtMs}), silent for {silence.TotalMilliseconds:0} ms");
            Assert.True(silence < cluster.Settings.Lease, $"w-busy silent for {silence.TotalMilliseconds:0} ms, lease {cluster.Settings.Lease.TotalMilliseconds} ms");
            return w.Load == 0;
        }, () => $"{samples} samples", interval: TimeSpan.FromMilliseconds(100));
        Assert.True(samples >= 10, $"only {samples} samples while the tasks ran");

        foreach (var id in ids)
        {
            var done = await cluster.Client.ShowAsync(id, TestContext.Current.CancellationToken);
            Assert.True(done.State == States.Terminated && done.ExitCode == 0 && done.Attempts == 0, Cluster.Describe(done));
            Assert.Equal([States.Ready, States.Submit, States.Run, States.Terminated], done.History.Select(h => h.State));
        }

        var summary = await cluster.StopWorkerAsync(worker, "w-busy");
        Assert.Equal(new WorkerSummary("w-busy", Slots, Slots, Slots), summary);
        TestContext.Current.TestOutputHelper?.WriteLine($"longest silence seen: {stalest.TotalMilliseconds:0} ms over {samples} samples");
    }
}
