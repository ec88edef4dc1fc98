using Tatzelwurm.Client;
using Tatzelwurm.EndToEnd.Tests.Fixtures;
using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.EndToEnd.Tests;

/// <summary>
/// Issue 4: a worker behind a <see cref="TcpProxy"/> loses its connection and comes back. A second,
/// directly connected worker of the same type stands by with free slots: if a task were wrongly
/// re-queued, it would run there, and the tasks are at-least-once so a wrong policy decision would
/// re-queue rather than pause them.
/// </summary>
public sealed class ReclaimTests
{
    [Fact]
    public async Task CutConnection_RestoredWithinGrace_WorkerReclaimsItsTasks_NothingRunsTwice()
    {
        await using var cluster = await Cluster.StartAsync(new CoordinatorSettings { Grace = TimeSpan.FromSeconds(5) });
        var proxy = cluster.Own(TcpProxy.Start(cluster.Address));
        var (proxied, standby, ids) = await StartTasksBehindProxyAsync(cluster, proxy);
        var before = await cluster.WaitForWorkerAsync("w-proxied", "to hold its tasks", w => w.Load == ids.Count);

        proxy.Sever();

        // Back through the proxy on a new connection, with the same identity and the same tasks.
        var after = await cluster.WaitForWorkerAsync("w-proxied", "to reconnect", w => w.State == "connected" && w.ConnectedAtMs > before.ConnectedAtMs);
        Assert.Equal(ids.Count, after.Load);
        Assert.Equal(2, proxy.Accepted);
        await Eventually.UntilAsync("w-proxied to log its reclaim", () => Task.FromResult(proxied.Stderr.Contains($"{ids.Count} tasks reclaimed", StringComparison.Ordinal)),
            () => proxied.Stderr);
        foreach (var id in ids)
        {
            var task = await cluster.Client.ShowAsync(id, TestContext.Current.CancellationToken);
            Assert.True(task.State == States.Run && task.Worker == "w-proxied" && task.Attempts == 0, Cluster.Describe(task));
        }

        foreach (var id in ids)
        {
            var done = await cluster.WaitForTaskAsync(id, "to complete", t => t.State == States.Terminated);
            Assert.True(done.ExitCode == 0, Cluster.Describe(done));
            Assert.Equal(0, done.Attempts);
            // Exactly one run, finished on the reclaiming connection. Before it, on a loaded machine the
            // worker may already have dropped a silent connection once while the task was only
            // assigned: the coordinator then assigns it again (ready, submit twice), which is not a rerun.
            Assert.Equal(1, done.History.Count(h => h.State == States.Run));
            Assert.Equal([States.Run, States.Terminated], done.History.TakeLast(2).Select(h => h.State));
        }

        Assert.Equal(ids.Count, (await cluster.StopWorkerAsync(proxied, "w-proxied")).Completed);
        Assert.Equal(0, (await cluster.StopWorkerAsync(standby, "w-standby")).Completed);
    }

    [Fact]
    public async Task CutConnection_NotRestoredWithinGrace_PolicyApplies_LateReclaimIsDropped()
    {
        await using var cluster = await Cluster.StartAsync();
        var proxy = cluster.Own(TcpProxy.Start(cluster.Address));
        var (proxied, standby, ids) = await StartTasksBehindProxyAsync(cluster, proxy, duration: "60s", policy: DeliveryPolicy.AtMostOnce);

        proxy.Block();

        // Declared dead: the at-most-once tasks are paused for a decision, not handed to the stand-by.
        foreach (var id in ids)
        {
            var paused = await cluster.WaitForTaskAsync(id, "to be paused by its policy", t => t.State == States.Pause);
            Assert.True(paused.Worker is null && paused.Attempts == 1 && paused.Reason!.StartsWith("at-most-once", StringComparison.Ordinal), Cluster.Describe(paused));
        }

        // When it comes back it still runs them; the coordinator refuses the reclaim and tells it to
        // drop them, and the worker stops them without reporting.
        proxy.Restore();
        await cluster.WaitForWorkerAsync("w-proxied", "to reconnect", w => w.State == "connected");
        await Eventually.UntilAsync("w-proxied to log the dropped tasks",
            () => Task.FromResult(proxied.Stderr.Contains($"({ids.Count} tasks reclaimed, {ids.Count} dropped)", StringComparison.Ordinal)), () => proxied.Stderr);
        var after = await cluster.WaitForWorkerAsync("w-proxied", "to hold nothing", w => w.Load == 0);
        Assert.Equal("connected", after.State);
        foreach (var id in ids)
        {
            var task = await cluster.Client.ShowAsync(id, TestContext.Current.CancellationToken);
            Assert.True(task.State == States.Pause && task.Worker is null && task.Attempts == 1, Cluster.Describe(task));
            Assert.Equal(["assigned to w-proxied"], task.History.Where(h => h.State == States.Submit).Select(h => h.Reason));
        }

        Assert.Equal(0, (await cluster.StopWorkerAsync(proxied, "w-proxied")).Completed);
        Assert.Equal(0, (await cluster.StopWorkerAsync(standby, "w-standby")).Completed);
    }

    [Fact]
    public async Task SilentConnection_LongerThanLease_WorkerReconnectsAndReclaims_NothingRunsTwice()
    {
        // The network goes quiet without either side seeing a close (no FIN, no RST): the coordinator
        // notices the missing heartbeats (suspect after the lease), and the worker must notice the
        // missing heartbeat acks and reconnect before the grace ends.
        await using var cluster = await Cluster.StartAsync(new CoordinatorSettings { Grace = TimeSpan.FromSeconds(4) });
        var proxy = cluster.Own(TcpProxy.Start(cluster.Address));
        var (proxied, standby, ids) = await StartTasksBehindProxyAsync(cluster, proxy, duration: "4s");
        var before = await cluster.WaitForWorkerAsync("w-proxied", "to hold its tasks", w => w.Load == ids.Count);

        proxy.Stall();

        await cluster.WaitForWorkerAsync("w-proxied", "to reconnect after the stall", w => w.State == "connected" && w.ConnectedAtMs > before.ConnectedAtMs);
        foreach (var id in ids)
        {
            var done = await cluster.WaitForTaskAsync(id, "to complete", t => t.State == States.Terminated);
            Assert.True(done.ExitCode == 0, Cluster.Describe(done));
            Assert.Equal(0, done.Attempts);
            // Exactly one run, finished on the reclaiming connection. Before it, on a loaded machine the
            // worker may already have dropped a silent connection once while the task was only
            // assigned: the coordinator then assigns it again (ready, submit twice), which is not a rerun.
            Assert.Equal(1, done.History.Count(h => h.State == States.Run));
            Assert.Equal([States.Run, States.Terminated], done.History.TakeLast(2).Select(h => h.State));
        }

        Assert.Equal(ids.Count, (await cluster.StopWorkerAsync(proxied, "w-proxied")).Completed);
        Assert.Equal(0, (await cluster.StopWorkerAsync(standby, "w-standby")).Completed);
    }

    /// <summary>
    /// w-proxied (through the proxy) runs one async and one blocking sleep (at-least-once unless told);
    /// w-standby (direct, drained while they are handed out) has free slots for anything re-queued.
    /// </summary>
    private static async Task<(ManagedProcess Proxied, ManagedProcess Standby, IReadOnlyList<long> Ids)> StartTasksBehindProxyAsync(
        Cluster cluster, TcpProxy proxy, string duration = "3s", DeliveryPolicy policy = DeliveryPolicy.AtLeastOnce)
    {
        var starting = (Standby: cluster.StartWorkerAsync("w-standby", "async", slots: 2), Proxied: cluster.StartWorkerAsync("w-proxied", "async", slots: 2, server: proxy.Address));
        var standby = await starting.Standby;
        var proxied = await starting.Proxied;
        await cluster.Client.CommandWorkerAsync("w-standby", WorkerAction.Drain);
        List<long> ids =
        [
            .. await cluster.AddMockAsync($"sleep:{duration}", policy: policy),
            .. await cluster.AddMockAsync($"block:{duration}", type: "async", policy: policy),
        ];
        foreach (var id in ids)
        {
            await cluster.WaitForTaskAsync(id, "to run on w-proxied", t => t.State == States.Run && t.Worker == "w-proxied");
        }

        await cluster.Client.CommandWorkerAsync("w-standby", WorkerAction.Undrain);
        return (proxied, standby, ids);
    }
}
