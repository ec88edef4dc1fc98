using Microsoft.Extensions.Logging.Abstractions;
using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server;
using Tatzelwurm.Server.Http;
using Xunit;

namespace Tatzelwurm.Dashboard.Tests;

/// <summary>The event hub's guards, with small queues so that the limits are reached quickly.</summary>
public sealed class EventHubTests
{
    private static CancellationToken Cancel => TestDeadline.Token;

    [Fact]
    public async Task SlowClient_QueueFull_BoundedThenResync()
    {
        await using var tw = await TestCoordinator.StartAsync();
        await using var hub = Hub(tw, subscriberCapacity: 50, watcherCapacity: 100_000);
        var subscriber = await hub.SubscribeAsync(Cancel);
        await using var client = await tw.ClientAsync();

        await client.AddAsync(Specs(200), Cancel);

        // Nobody reads: the queue stops at its capacity and the client is marked for a resync. Wait
        // until every event reached the hub, so none can set the mark again after it is taken.
        await Eventually.TrueAsync(() => Task.FromResult(subscriber.Offered == 200), "all events offered");
        Assert.True(subscriber.TakeResync());
        Assert.False(subscriber.TakeResync());
        Assert.Equal(50, subscriber.Events.Count);
    }

    [Fact]
    public async Task WatcherLost_EveryClientResyncsAndEventsFlowAgain()
    {
        await using var tw = await TestCoordinator.StartAsync();
        // The coordinator closes a connection with more than 20 frames queued (Overloaded).
        await using var hub = Hub(tw, subscriberCapacity: 100_000, watcherCapacity: 20);
        var subscriber = await hub.SubscribeAsync(Cancel);
        await using var client = await tw.ClientAsync();

        await client.AddAsync(Specs(5_000), Cancel);
        await Eventually.TrueAsync(() => Task.FromResult(subscriber.TakeResync()), "resync after the watcher was closed");

        // The hub reconnects: a later change arrives as an event again.
        await Eventually.TrueAsync(() => Task.FromResult(hub.WatcherOpen), "watcher reopened");
        while (subscriber.Events.TryRead(out _))
        {
        }

        var id = 0L;
        await Eventually.TrueAsync(async () =>
        {
            id = await client.AddAsync(TestTasks.Ok, "after", ready: false, cancellationToken: Cancel);
            while (subscriber.Events.TryRead(out var change))
            {
                if (change.Id == id && change.Type == "after")
                {
                    return true;
                }
            }

            return false;
        }, "an event after the reconnect");
        Assert.Equal("created", (await tw.QueryAsync(s => s.Tasks[id].State)).Name());
    }

    [Fact]
    public async Task Disposed_SubscribersCompleted()
    {
        await using var tw = await TestCoordinator.StartAsync();
        var hub = Hub(tw, subscriberCapacity: 10, watcherCapacity: 1000);
        var subscriber = await hub.SubscribeAsync(Cancel);

        await hub.DisposeAsync();

        Assert.False(await subscriber.Events.WaitToReadAsync(Cancel));
        Assert.False(hub.WatcherOpen);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => hub.SubscribeAsync(Cancel));
    }

    private static EventHub Hub(TestCoordinator tw, int subscriberCapacity, int watcherCapacity)
    {
        var options = new SessionOptions { Token = tw.Host.Token, OutboundCapacity = watcherCapacity };
        return new EventHub(
            (onPush, ct) => LocalConnection.OpenAsync(tw.Host.Coordinator, options, "hub-test", onPush, NullLogger<Session>.Instance, TimeProvider.System, ct),
            subscriberCapacity);
    }

    private static List<TaskSpec> Specs(int count) =>
        Enumerable.Range(0, count).Select(_ => new TaskSpec(TestTasks.Ok, "burst", 0, [], Protocol.DeliveryPolicy.Default, false, true)).ToList();
}
