using Tatzelwurm.Client;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// <see cref="TatzelwurmClient.AddAsync(IReadOnlyList{TaskSpec}, CancellationToken)"/> coalesces
/// concurrent calls into one AddTasks. Each test holds the client's write loop in the flush of a large
/// first add (a held <see cref="TcpProxy"/> takes none of it), so the calls made meanwhile are queued
/// together, deterministically; then it releases the connection and checks what each caller got.
/// </summary>
public class AddCoalescingTests
{
    private const int BlockerBytes = 12 * 1024 * 1024;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static TaskSpec Spec(string type, int payloadBytes = 8) => new(new byte[payloadBytes], type, 0, [], DeliveryPolicy.Default, true, false);

    [Fact]
    public async Task Add_ManyConcurrentCallers_OneRequestAndEachCallerGetsTheIdsOfItsOwnTasks()
    {
        await using var host = await TestHost.StartAsync();
        await using var proxy = new TcpProxy(host.EndPoint, smallReceiveBuffer: true);
        await using var client = await TatzelwurmClient.ConnectAsync(host.Connection(proxy.EndPoint), Ct);
        var blocker = await HoldWriteLoopAsync(proxy, client);

        // Caller k adds k % 3 + 1 tasks whose types name the caller and the position.
        var calls = Enumerable.Range(0, 40)
            .Select(k => Enumerable.Range(0, (k % 3) + 1).Select(i => Spec($"c{k}-{i}")).ToList())
            .Select(specs => (Specs: specs, Ids: client.AddAsync(specs, Ct)))
            .ToList();
        proxy.Release();
        await blocker;

        var all = new List<long>();
        foreach (var (specs, ids) in calls)
        {
            var own = await ids;
            Assert.Equal(specs.Count, own.Count);
            for (var i = 0; i < own.Count; i++)
            {
                Assert.Equal(specs[i].Type, (await client.ShowAsync(own[i], Ct)).Type);
            }

            all.AddRange(own);
        }

        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.Equal([1, calls.Sum(c => c.Specs.Count)], AddedCounts(proxy));
    }

    [Fact]
    public async Task Add_OneCallerHasABadTask_OnlyThatCallerFailsAndTheOthersTasksAreAddedOnce()
    {
        await using var host = await TestHost.StartAsync();
        await using var proxy = new TcpProxy(host.EndPoint, smallReceiveBuffer: true);
        await using var client = await TatzelwurmClient.ConnectAsync(host.Connection(proxy.EndPoint), Ct);
        var blocker = await HoldWriteLoopAsync(proxy, client);

        var first = client.AddAsync([Spec("first"), Spec("first")], Ct);
        var bad = client.AddAsync([Spec("fine"), Spec("")], Ct);
        var last = client.AddAsync([Spec("last")], Ct);
        proxy.Release();
        await blocker;

        var refused = await Assert.ThrowsAsync<TatzelwurmException>(() => bad);
        Assert.Equal(ErrorCode.InvalidRequest, refused.Code);
        Assert.Equal(["first", "first"], await TypesAsync(client, await first));
        Assert.Equal(["last"], await TypesAsync(client, await last));
        // The coalesced request was refused as a whole, then each caller's tasks went on their own.
        Assert.Equal([1, 5, 2, 2, 1], AddedCounts(proxy));
        Assert.Equal(4, (await client.ListAsync(cancellationToken: Ct)).Tasks.Count);
    }

    [Fact]
    public async Task Add_CallerCancelledWhileQueued_ItsTasksAreNotAddedAndTheOthersAre()
    {
        await using var host = await TestHost.StartAsync();
        await using var proxy = new TcpProxy(host.EndPoint, smallReceiveBuffer: true);
        await using var client = await TatzelwurmClient.ConnectAsync(host.Connection(proxy.EndPoint), Ct);
        var blocker = await HoldWriteLoopAsync(proxy, client);

        using var cancel = new CancellationTokenSource();
        var before = client.AddAsync([Spec("before")], Ct);
        var cancelled = client.AddAsync([Spec("cancelled"), Spec("cancelled")], cancel.Token);
        var after = client.AddAsync([Spec("after")], Ct);
        await cancel.CancelAsync();
        proxy.Release();
        await blocker;

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.Equal(["before"], await TypesAsync(client, await before));
        Assert.Equal(["after"], await TypesAsync(client, await after));
        Assert.Empty((await client.ListAsync(type: "cancelled", cancellationToken: Ct)).Tasks);
        Assert.Equal([1, 2], AddedCounts(proxy));
    }

    [Fact]
    public async Task Add_CallersTogetherAboveTheMaxFrame_SplitIntoRequestsWithinIt()
    {
        await using var host = await TestHost.StartAsync();
        await using var proxy = new TcpProxy(host.EndPoint, smallReceiveBuffer: true);
        await using var client = await TatzelwurmClient.ConnectAsync(host.Connection(proxy.EndPoint), Ct);
        Assert.Equal(ProtocolConstants.DefaultMaxFrame, client.Connection.Welcome.MaxFrame);
        var blocker = await HoldWriteLoopAsync(proxy, client);

        // 4 MiB each: three fit in the 16 MiB frame limit, five would close the connection.
        var calls = Enumerable.Range(0, 5).Select(k => client.AddAsync([Spec($"big{k}", 4 * 1024 * 1024)], Ct)).ToList();
        proxy.Release();
        await blocker;

        for (var k = 0; k < calls.Count; k++)
        {
            Assert.Equal([$"big{k}"], await TypesAsync(client, await calls[k]));
        }

        Assert.Equal([1, 3, 2], AddedCounts(proxy));
    }

    [Fact]
    public async Task Add_ConnectionLostWithCallsSentAndQueued_EveryCallerFailsWithConnectionLost()
    {
        await using var host = await TestHost.StartAsync();
        await using var proxy = new TcpProxy(host.EndPoint, smallReceiveBuffer: true);
        await using var client = await TatzelwurmClient.ConnectAsync(host.Connection(proxy.EndPoint), Ct);
        var blocker = await HoldWriteLoopAsync(proxy, client);

        var queued = Enumerable.Range(0, 10).Select(k => client.AddAsync([Spec($"q{k}")], Ct)).ToList();
        proxy.Cut();

        await Assert.ThrowsAsync<ConnectionLostException>(() => blocker);
        foreach (var call in queued)
        {
            await Assert.ThrowsAsync<ConnectionLostException>(() => call);
        }

        await Assert.ThrowsAsync<ConnectionLostException>(() => client.AddAsync([Spec("later")], Ct));
    }

    /// <summary>Starts an add too large for the socket buffers and holds it: the write loop is then inside its flush.</summary>
    private static async Task<Task<IReadOnlyList<long>>> HoldWriteLoopAsync(TcpProxy proxy, TatzelwurmClient client)
    {
        var held = proxy.HoldAsync();
        var blocker = client.AddAsync([Spec("blocker", BlockerBytes)], Ct);
        // Bytes reach the socket only in the flush, after the write loop took everything queued.
        await held;
        return blocker;
    }

    private static List<int> AddedCounts(TcpProxy proxy) => proxy.FromClient.OfType<AddTasks>().Select(a => a.Tasks.Count).ToList();

    private static async Task<List<string>> TypesAsync(TatzelwurmClient client, IReadOnlyList<long> ids)
    {
        var types = new List<string>();
        foreach (var id in ids)
        {
            types.Add((await client.ShowAsync(id, Ct)).Type);
        }

        return types;
    }
}
