using System.IO.Pipelines;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>Issue 5 §4 over in-memory pipes: fan-out, per-sender order, coordinator-side filters, isolation, overload.</summary>
public class BroadcastTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Broadcast_ThreeSubscribers_EachGetsItOnceWithAllFields()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var subscribers = new[] { await coordinator.ConnectAsync(), await coordinator.ConnectAsync(Roles.Worker), await coordinator.ConnectAsync() };
        foreach (var subscriber in subscribers)
        {
            await subscriber.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "all", null, null));
        }

        var sender = await coordinator.ConnectAsync();
        await sender.RequestAsync<OkReply>(id => new Broadcast(id, "ns", [1, 2], "proc.7", "state_changed.running", "corr-1"));

        foreach (var subscriber in subscribers)
        {
            var delivery = await subscriber.ReceiveAsync<BroadcastDelivery>();
            Assert.Equal(("all", "ns", "proc.7", "state_changed.running", "corr-1"),
                (Assert.Single(delivery.Subscriptions), delivery.Namespace, delivery.Sender, delivery.Subject, delivery.CorrelationId));
            Assert.Equal([1, 2], delivery.Body);
            Assert.Empty(await subscriber.DrainAsync());
        }

        Assert.Empty(await sender.DrainAsync());
    }

    [Fact]
    public async Task Broadcast_ThousandFromOneSender_ArriveInOrder()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var subscriber = await coordinator.ConnectAsync();
        await subscriber.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "s", null, null));
        var sender = await coordinator.ConnectAsync();

        for (var i = 0; i < 1000; i++)
        {
            await sender.SendAsync(new Broadcast(sender.NextId(), "ns", BitConverter.GetBytes(i), "me", null, null));
        }

        for (var i = 0; i < 1000; i++)
        {
            Assert.Equal(i, BitConverter.ToInt32((await subscriber.ReceiveAsync<BroadcastDelivery>()).Body));
        }

        for (var i = 0; i < 1000; i++)
        {
            Assert.Equal((uint)(i + 1), (await sender.ReceiveAsync<OkReply>()).RequestId);
        }
    }

    [Fact]
    public async Task Broadcast_TwoSendersInterleaved_EachSendersOrderKept()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var subscriber = await coordinator.ConnectAsync();
        await subscriber.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "s", null, null));
        var a = await coordinator.ConnectAsync();
        var b = await coordinator.ConnectAsync();

        var sending = Task.WhenAll(SendAsync(a, "a"), SendAsync(b, "b"));
        var seen = new Dictionary<string, int> { ["a"] = 0, ["b"] = 0 };
        for (var i = 0; i < 400; i++)
        {
            var delivery = await subscriber.ReceiveAsync<BroadcastDelivery>();
            Assert.Equal(seen[delivery.Sender!]++, BitConverter.ToInt32(delivery.Body));
        }

        await sending;
        Assert.Equal(200, seen["a"]);

        static async Task SendAsync(PipeClient client, string name)
        {
            for (var i = 0; i < 200; i++)
            {
                await client.SendAsync(new Broadcast(client.NextId(), "ns", BitConverter.GetBytes(i), name, null, null));
            }
        }
    }

    [Fact]
    public async Task Broadcast_Filters_OnlyMatchingDeliveriesCrossTheWire()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var subscriber = await coordinator.ConnectAsync();
        await subscriber.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "glob-subject", null, new BroadcastFilter(FilterKind.Glob, "state_changed.*")));
        await subscriber.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "dot-sender", new BroadcastFilter(FilterKind.Glob, "proc.1"), null));
        await subscriber.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "not-state", null, new BroadcastFilter(FilterKind.Regex, "^(?!state_changed).*")));
        var sender = await coordinator.ConnectAsync();

        // The subscriptions one broadcast matched, as "a,b", or "" when nothing crossed the wire.
        async Task<string> DeliveredAsync(string? from, string? subject)
        {
            await sender.RequestAsync<OkReply>(id => new Broadcast(id, "ns", [], from, subject, null));
            var before = await subscriber.DrainAsync();
            return before.Count == 0 ? "" : string.Join(',', Assert.IsType<BroadcastDelivery>(Assert.Single(before)).Subscriptions.Order(StringComparer.Ordinal));
        }

        Assert.Equal("glob-subject", await DeliveredAsync("proc.2", "state_changed.finished"));
        Assert.Equal("dot-sender,not-state", await DeliveredAsync("proc.1", "kill"));
        Assert.Equal("dot-sender,not-state", await DeliveredAsync("proc.12", "pause"));
        Assert.Equal("", await DeliveredAsync("procx1", "state_changed"));
        Assert.Equal("dot-sender", await DeliveredAsync("proc.1", "state_changed"));
        Assert.Equal("glob-subject", await DeliveredAsync("zzz", "state_changed.x"));
        // A broadcast without sender and subject passes every filter.
        Assert.Equal("dot-sender,glob-subject,not-state", await DeliveredAsync(null, null));
        Assert.Equal("dot-sender,glob-subject", await DeliveredAsync(null, "state_changed.a"));
        Assert.Equal("dot-sender,glob-subject,not-state", await DeliveredAsync("proc.1", null));
    }

    [Fact]
    public async Task Broadcast_OtherNamespace_NotDelivered()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var subscriber = await coordinator.ConnectAsync();
        await subscriber.RequestAsync<OkReply>(id => new Subscribe(id, "a", "s", null, null));
        var sender = await coordinator.ConnectAsync();

        await sender.RequestAsync<OkReply>(id => new Broadcast(id, "b", [1], null, null, null));
        await sender.RequestAsync<OkReply>(id => new Broadcast(id, "A", [2], null, null, null));
        await sender.RequestAsync<OkReply>(id => new Broadcast(id, "a", [3], null, null, null));

        var delivery = await subscriber.ReceiveAsync<BroadcastDelivery>();
        Assert.Equal(("a", (byte)3), (delivery.Namespace, delivery.Body.Single()));
        Assert.Empty(await subscriber.DrainAsync());
    }

    [Fact]
    public async Task Broadcast_SenderSubscribed_ReceivesItsOwn()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();
        await client.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "mine", null, null));

        var id = client.NextId();
        await client.SendAsync(new Broadcast(id, "ns", [9], "me", null, null));

        Assert.Equal([9], (await client.ReceiveAsync<BroadcastDelivery>()).Body);
        Assert.Equal(id, (await client.ReceiveAsync<OkReply>()).RequestId);
    }

    [Fact]
    public async Task Subscribe_DuplicateIdOrBadFilter_RefusedAndUnsubscribeStopsDeliveries()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();
        var sender = await coordinator.ConnectAsync();
        await client.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "s", null, null));

        await client.RequestErrorAsync(id => new Subscribe(id, "ns", "s", null, null), ErrorCode.DuplicateIdentifier);
        await client.RequestErrorAsync(id => new Subscribe(id, "ns", "bad", null, new BroadcastFilter(FilterKind.Regex, "(unclosed")), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new Subscribe(id, "ns", "bad", null, new BroadcastFilter((FilterKind)3, "x")), ErrorCode.InvalidRequest);
        await client.RequestAsync<OkReply>(id => new Unsubscribe(id, "ns", "s"));
        await client.RequestErrorAsync(id => new Unsubscribe(id, "ns", "s"), ErrorCode.UnknownIdentifier);
        await sender.RequestAsync<OkReply>(id => new Broadcast(id, "ns", [1], null, null, null));

        Assert.Empty(await client.DrainAsync());
    }

    [Fact]
    public async Task Broadcast_NilNamespace_InvalidRequestAndConnectionStays()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();

        await client.RequestErrorAsync(id => new Subscribe(id, null!, "s", null, null), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new Subscribe(id, "ns", null!, null, null), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new Subscribe(id, "ns", "s", new BroadcastFilter(FilterKind.Glob, null!), null), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new Broadcast(id, null!, [], null, null, null), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new Unsubscribe(id, null!, "s"), ErrorCode.InvalidRequest);

        await client.RequestAsync<OkReply>(id => new Broadcast(id, "ns", [], null, null, null));
    }

    [Fact]
    public async Task SlowSubscriber_StopsReading_ClosedWithOverloadedWhileOthersKeepReceiving()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var slow = await ConnectSlowAsync(coordinator);
        await slow.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "s", null, null));
        var fast = await coordinator.ConnectAsync();
        await fast.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "s", null, null));
        var sender = await coordinator.ConnectAsync();
        slow.PauseReading();

        for (var i = 0; i < 100; i++)
        {
            await sender.RequestAsync<OkReply>(id => new Broadcast(id, "ns", new byte[200], null, null, Text(i)));
            Assert.Equal(Text(i), (await fast.ReceiveAsync<BroadcastDelivery>()).CorrelationId);
        }

        // The slow client reads again: a bounded prefix of what it missed, then Overloaded, then the end.
        slow.ResumeReading();
        var delivered = 0;
        IMessage next;
        while ((next = await slow.ReceiveAsync()) is BroadcastDelivery delivery)
        {
            Assert.Equal(Text(delivered++), delivery.CorrelationId);
        }

        Assert.InRange(delivered, 1, 30);
        var error = Assert.IsType<ErrorReply>(next);
        Assert.Equal((0u, ErrorCode.Overloaded), (error.RequestId, error.Code));
        await slow.ExpectClosedAsync();
        await fast.RequestAsync<OkReply>(id => new Broadcast(id, "ns", [1], null, null, "after"));
        Assert.Equal("after", (await fast.ReceiveAsync<BroadcastDelivery>()).CorrelationId);
    }

    [Fact]
    public async Task SlowSubscriber_NeverReadsAgain_DroppedAfterTheCloseTimeout()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var slow = await ConnectSlowAsync(coordinator);
        await slow.RequestAsync<OkReply>(id => new Subscribe(id, "ns", "s", null, null));
        await slow.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "slow-rpc"));
        var sender = await coordinator.ConnectAsync();
        slow.PauseReading();
        for (var i = 0; i < 40; i++)
        {
            await sender.RequestAsync<OkReply>(id => new Broadcast(id, "ns", new byte[200], null, null, null));
        }

        var call = sender.NextId();
        await sender.SendAsync(new RpcCall(call, "ns", "slow-rpc", []));

        // Overloaded, but its write loop still waits on the full pipe: until the close timeout the
        // connection (and its RPC identifier) is still there.
        Assert.Empty(await sender.DrainAsync());
        coordinator.Time.Advance(coordinator.SessionOptions.CloseTimeout - TimeSpan.FromTicks(1));
        Assert.Empty(await sender.DrainAsync());
        Assert.False(slow.SessionTask.IsCompleted);

        coordinator.Time.Advance(TimeSpan.FromTicks(1));

        await slow.SessionTask.WaitAsync(PipeClient.Patience, Ct);
        var failed = await sender.ReceiveAsync<ErrorReply>();
        Assert.Equal((call, ErrorCode.DeliveryFailed), (failed.RequestId, failed.Code));
        await sender.RequestErrorAsync(id => new RpcCall(id, "ns", "slow-rpc", []), ErrorCode.Unroutable);
    }

    // A client whose inbound pipe holds ~1 KiB before the session's flush waits, and whose session queues
    // at most 8 frames. (The others keep the default limit: with 8, a reader that is merely descheduled
    // for a moment could be taken for a slow one.)
    private static Task<PipeClient> ConnectSlowAsync(TestCoordinator coordinator) =>
        coordinator.ConnectAsync(Roles.Actioner, new PipeOptions(pauseWriterThreshold: 1024, resumeWriterThreshold: 512),
            coordinator.SessionOptions with { OutboundCapacity = 8 });

    private static string Text(int i) => i.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
