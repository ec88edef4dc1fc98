using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Net.Sockets;
using Tatzelwurm.Client;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// The C# client (<see cref="TatzelwurmClient"/>) against a real <see cref="CoordinatorHost"/> on
/// 127.0.0.1:0: broadcast fan-out across connections, per-sender order, a slow subscriber, RPC, results.
/// </summary>
public class ClientOverTcpTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Broadcast_FiveSubscribersOnTheirOwnConnections_EachReceivesEveryMessage()
    {
        await using var host = await TestHost.StartAsync();
        var feeds = new List<Feed<BroadcastMessage>>();
        for (var i = 0; i < 5; i++)
        {
            var client = await host.ClientAsync($"subscriber-{i}");
            feeds.Add(await Feed<BroadcastMessage>.StartAsync(client, ct => client.SubscribeAsync("aiida", cancellationToken: ct)));
        }

        var sender = await host.ClientAsync("sender");
        await sender.BroadcastAsync("aiida", [1], "proc.1", "state_changed.running", "c1", Ct);
        await sender.BroadcastAsync("aiida", [2], null, null, null, Ct);

        foreach (var feed in feeds)
        {
            var first = await feed.NextAsync();
            Assert.Equal(("aiida", "proc.1", "state_changed.running", "c1", (byte)1), (first.Namespace, first.Sender, first.Subject, first.CorrelationId, first.Body.Single()));
            Assert.Equal(2, (await feed.NextAsync()).Body.Single());
            await feed.DisposeAsync();
        }
    }

    [Fact]
    public async Task Broadcast_ThousandFromOneClient_ArriveInOrderAtEverySubscriber()
    {
        await using var host = await TestHost.StartAsync();
        var a = await host.ClientAsync();
        var b = await host.ClientAsync();
        await using var feedA = await Feed<BroadcastMessage>.StartAsync(a, ct => a.SubscribeAsync("ns", cancellationToken: ct));
        await using var feedB = await Feed<BroadcastMessage>.StartAsync(b, ct => b.SubscribeAsync("ns", cancellationToken: ct));
        var sender = await host.ClientAsync();

        // Not awaited one by one: the client writes them in call order, and that order must hold.
        var sent = Enumerable.Range(0, 1000).Select(i => sender.BroadcastAsync("ns", BitConverter.GetBytes(i), "sender", null, null, Ct)).ToList();
        await Task.WhenAll(sent);

        for (var i = 0; i < 1000; i++)
        {
            Assert.Equal(i, BitConverter.ToInt32((await feedA.NextAsync()).Body));
            Assert.Equal(i, BitConverter.ToInt32((await feedB.NextAsync()).Body));
        }
    }

    [Fact]
    public async Task Broadcast_FilteredSubscriptionAndSelfDelivery_OverTheClient()
    {
        await using var host = await TestHost.StartAsync();
        var client = await host.ClientAsync();
        await using var all = await Feed<BroadcastMessage>.StartAsync(client, ct => client.SubscribeAsync("ns", cancellationToken: ct));
        await using var filtered = await Feed<BroadcastMessage>.StartAsync(client,
            ct => client.SubscribeAsync("ns", subject: new BroadcastFilter(FilterKind.Regex, "^(?!state_changed).*"), cancellationToken: ct));

        await client.BroadcastAsync("ns", [1], "me", "state_changed.x", null, Ct);
        await client.BroadcastAsync("ns", [2], "me", "kill", null, Ct);

        Assert.Equal(1, (await all.NextAsync()).Body.Single());
        Assert.Equal(2, (await all.NextAsync()).Body.Single());
        Assert.Equal(2, (await filtered.NextAsync()).Body.Single());
    }

    [Fact]
    public async Task SlowSubscriber_NeverReadsItsSocket_OverloadedWhileOthersReceiveEverything()
    {
        const int count = 100;
        await using var host = await TestHost.StartAsync(o => o with { OutboundCapacity = 8 });
        // A raw client that subscribes and then reads nothing, with a receive buffer as small as the OS allows.
        using var slow = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        await slow.ConnectAsync(host.EndPoint, Ct);
        await using var slowStream = new NetworkStream(slow);
        await slowStream.WriteAsync(FrameCodec.EncodeFrame(new Hello(ProtocolConstants.Version, Roles.Actioner, host.Host.Token, "slow")), Ct);
        await slowStream.WriteAsync(FrameCodec.EncodeFrame(new Subscribe(1, "ns", "s", null, null)), Ct);
        var fast = new List<Feed<BroadcastMessage>>();
        for (var i = 0; i < 2; i++)
        {
            var client = await host.ClientAsync();
            fast.Add(await Feed<BroadcastMessage>.StartAsync(client, ct => client.SubscribeAsync("ns", cancellationToken: ct)));
        }

        // Far more than the socket buffers hold. The sender waits until the fast subscribers have each
        // broadcast before the next, so they never have more than one queued and only the slow one backs up.
        var sender = await host.ClientAsync();
        var body = new byte[128 * 1024];
        for (var i = 0; i < count; i++)
        {
            await sender.BroadcastAsync("ns", body, null, null, i.ToString(CultureInfo.InvariantCulture), Ct);
            foreach (var feed in fast)
            {
                Assert.Equal(i.ToString(CultureInfo.InvariantCulture), (await feed.NextAsync()).CorrelationId);
            }
        }

        // The slow client finally reads: what was queued before the overflow, then Overloaded, then the end.
        var received = await ReadToEndAsync(slowStream);
        Assert.IsType<Welcome>(received[0]);
        Assert.IsType<OkReply>(received[1]);
        var deliveries = received.Skip(2).TakeWhile(m => m is BroadcastDelivery).Cast<BroadcastDelivery>().ToList();
        Assert.InRange(deliveries.Count, 1, count - 1);
        Assert.Equal(Enumerable.Range(0, deliveries.Count).Select(i => i.ToString(CultureInfo.InvariantCulture)), deliveries.Select(d => d.CorrelationId));
        var last = Assert.IsType<ErrorReply>(Assert.Single(received.Skip(2 + deliveries.Count)));
        Assert.Equal((0u, ErrorCode.Overloaded), (last.RequestId, last.Code));

        // The others are still served.
        await sender.BroadcastAsync("ns", [1], null, null, "after", Ct);
        foreach (var feed in fast)
        {
            Assert.Equal("after", (await feed.NextAsync()).CorrelationId);
            await feed.DisposeAsync();
        }
    }

    [Fact]
    public async Task Rpc_CallReplyErrorAndUnroutable_ThroughTheClient()
    {
        await using var host = await TestHost.StartAsync();
        var recipient = await host.ClientAsync("recipient");
        var caller = await host.ClientAsync("caller");
        var registration = await recipient.RegisterRpcAsync("aiida", "pid-7", async (payload, ct) =>
        {
            await Task.Yield();
            return payload.Length == 0 ? throw new InvalidOperationException("empty request") : [.. payload.Reverse()];
        }, Ct);

        Assert.Equal([3, 2, 1], await caller.CallAsync("aiida", "pid-7", [1, 2, 3], cancellationToken: Ct));
        var remote = await Assert.ThrowsAsync<RemoteException>(() => caller.CallAsync("aiida", "pid-7", [], cancellationToken: Ct));
        Assert.Contains("empty request", remote.Message, StringComparison.Ordinal);
        var unroutable = await Assert.ThrowsAsync<TatzelwurmException>(() => caller.CallAsync("aiida", "pid-8", [], cancellationToken: Ct));
        Assert.Equal(ErrorCode.Unroutable, unroutable.Code);

        // Unregistering frees the identifier at once; another client may take it.
        await registration.DisposeAsync();
        Assert.Equal(ErrorCode.Unroutable, (await Assert.ThrowsAsync<TatzelwurmException>(() => caller.CallAsync("aiida", "pid-7", [1], cancellationToken: Ct))).Code);
        await using var taken = await caller.RegisterRpcAsync("aiida", "pid-7", (_, _) => Task.FromResult(new byte[] { 9 }), Ct);
        Assert.Equal([9], await recipient.CallAsync("aiida", "pid-7", [], cancellationToken: Ct));
        var duplicate = await Assert.ThrowsAsync<TatzelwurmException>(() => recipient.RegisterRpcAsync("aiida", "pid-7", (_, _) => Task.FromResult(Array.Empty<byte>()), Ct));
        Assert.Equal(ErrorCode.DuplicateIdentifier, duplicate.Code);
    }

    // The coordinator closes the connection on a frame over its max_frame, failing everything in flight:
    // the client refuses such a request itself, naming the sizes, and the connection goes on serving.
    [Fact]
    public async Task Requests_OverTheMaxFrame_RefusedLocallyWithTheSizesAndTheConnectionStays()
    {
        await using var host = await TestHost.StartAsync(o => o with { MaxFrame = 16 * 1024 });
        var client = await host.ClientAsync();
        var big = new byte[20_000];

        var add = await Assert.ThrowsAsync<TatzelwurmException>(() => client.AddAsync(big, "t", cancellationToken: Ct));
        var call = await Assert.ThrowsAsync<TatzelwurmException>(() => client.CallAsync("ns", "svc", big, cancellationToken: Ct));
        var broadcast = await Assert.ThrowsAsync<TatzelwurmException>(() => client.BroadcastAsync("ns", big, cancellationToken: Ct));

        foreach (var (error, message) in new[] { (add, "AddTasks"), (call, "RpcCall"), (broadcast, "Broadcast") })
        {
            Assert.Equal(ErrorCode.FrameTooLarge, error.Code);
            Assert.Matches($"^{message} of 20,0[0-9][0-9] bytes exceeds the coordinator's max_frame of 16,384 bytes$", error.Message);
        }

        Assert.True(await client.AddAsync([1], "t", cancellationToken: Ct) > 0);
    }

    // An RPC reply too large for the coordinator used to close the recipient's connection and leave the
    // caller with DeliveryFailed; the caller gets the sizes instead and the recipient stays registered.
    [Fact]
    public async Task Rpc_ReplyOverTheMaxFrame_CallerGetsTheSizesAndTheRecipientStays()
    {
        await using var host = await TestHost.StartAsync(o => o with { MaxFrame = 16 * 1024 });
        var recipient = await host.ClientAsync();
        var caller = await host.ClientAsync();
        await using var registration = await recipient.RegisterRpcAsync("ns", "svc", (payload, _) => payload[0] switch
        {
            1 => Task.FromResult(new byte[20_000]),
            2 => throw new InvalidOperationException(new string('x', 20_000)),
            _ => Task.FromResult(new byte[] { 7 }),
        }, Ct);

        var result = await Assert.ThrowsAsync<RemoteException>(() => caller.CallAsync("ns", "svc", [1], cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct));
        Assert.Equal("RPC result of 20,000 bytes exceeds the coordinator's max_frame of 16,384 bytes", result.Message);
        var error = await Assert.ThrowsAsync<RemoteException>(() => caller.CallAsync("ns", "svc", [2], cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct));
        Assert.Equal("error text of 20,027 bytes exceeds the coordinator's max_frame of 16,384 bytes; the error text began: InvalidOperationException: " + new string('x', 973), error.Message);
        Assert.Equal([7], await caller.CallAsync("ns", "svc", [3], cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct));
    }

    [Fact]
    public async Task Rpc_RecipientClientDisposedMidCall_CallerGetsDeliveryFailed()
    {
        await using var host = await TestHost.StartAsync();
        var recipient = await TatzelwurmClient.ConnectAsync(host.Connection(name: "recipient"), Ct);
        var caller = await host.ClientAsync("caller");
        var called = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await recipient.RegisterRpcAsync("ns", "x", async (_, ct) =>
        {
            called.TrySetResult();
            await Task.Delay(Timeout.Infinite, ct);
            return [];
        }, Ct);

        var call = caller.CallAsync("ns", "x", [], cancellationToken: Ct);
        await called.Task.WaitAsync(PipeClient.Patience, Ct);
        await recipient.DisposeAsync();

        // No timer is advanced: the delivery error comes from the disconnect, not from a timeout.
        var failed = await Assert.ThrowsAsync<TatzelwurmException>(() => call.WaitAsync(PipeClient.Patience, Ct));
        Assert.Equal(ErrorCode.DeliveryFailed, failed.Code);
    }

    [Fact]
    public async Task Wait_ThroughTheClient_LayersReportedAndOutcomeReturned()
    {
        await using var host = await TestHost.StartAsync();
        var actioner = await host.ClientAsync();
        var worker = await Connection.ConnectAsync(host.Connection(name: "raw-worker"), Roles.Worker, Ct);
        await using var _ = worker;
        await worker.RequestAsync<WorkerRegistered>(id => new RegisterWorker(id, "w1", "w1", [], 1, []), cancellationToken: Ct);
        var id = await actioner.AddAsync([1], "t", cancellationToken: Ct);
        var assigned = (AssignTask)await worker.Pushes.ReadAsync(Ct).AsTask().WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal(id, assigned.TaskId);

        var layers = new List<int>();
        var layerSeen = new SemaphoreSlim(0);
        var wait = actioner.WaitAsync(id, depth =>
        {
            lock (layers)
            {
                layers.Add(depth);
            }

            layerSeen.Release();
        }, Ct);
        // WaitTask is on the wire before this read on the same connection is answered.
        await actioner.TagLimitsAsync(Ct);
        await worker.RequestAsync<OkReply>(rid => new TaskUpdate(rid, id, TaskUpdateKind.Pending, 0, null, null), cancellationToken: Ct);
        await layerSeen.WaitAsync(PipeClient.Patience, Ct);
        await worker.RequestAsync<OkReply>(rid => new TaskUpdate(rid, id, TaskUpdateKind.Finished, 2, null, "boom"), cancellationToken: Ct);

        var result = await wait.WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal(new TaskResult(id, 2, null, "boom", 1), result);
        Assert.False(result.Completed);
        Assert.Equal([1], layers);
        Assert.Equal(ErrorCode.UnknownTask, (await Assert.ThrowsAsync<TatzelwurmException>(() => actioner.WaitAsync(id + 1, cancellationToken: Ct))).Code);
    }

    [Fact]
    public async Task Host_MoreConnectionsThanItsLimit_ExtraOneClosedOthersServed()
    {
        await using var host = await TestHost.StartAsync(o => o with { MaxConnections = 2 });
        var a = await host.ClientAsync("a");
        var b = await host.ClientAsync("b");

        var refused = await Assert.ThrowsAnyAsync<Exception>(() => TatzelwurmClient.ConnectAsync(host.Connection(name: "c"), Ct));

        Assert.True(refused is TatzelwurmException or IOException or SocketException, refused.ToString());
        var id = await a.AddAsync([1], "t", cancellationToken: Ct);
        Assert.Equal(id, (await b.ShowAsync(id, Ct)).Id);
    }

    private static async Task<List<IMessage>> ReadToEndAsync(NetworkStream stream)
    {
        var reader = PipeReader.Create(stream);
        var messages = new List<IMessage>();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        deadline.CancelAfter(PipeClient.Patience);
        while (true)
        {
            var read = await reader.ReadAsync(deadline.Token);
            var buffer = read.Buffer;
            while (FrameCodec.TryReadFrame(ref buffer, int.MaxValue, out var body, out _) == FrameStatus.Complete)
            {
                messages.Add(FrameCodec.Decode(body));
            }

            reader.AdvanceTo(buffer.Start, buffer.End);
            if (read.IsCompleted)
            {
                Assert.True(buffer.IsEmpty, "the coordinator closed the connection inside a frame");
                await reader.CompleteAsync();
                return messages;
            }
        }
    }
}
