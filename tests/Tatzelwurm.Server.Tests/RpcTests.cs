using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>Issue 5 §3 over in-memory pipes: routing, errors, layering, registration rules.</summary>
public class RpcTests
{
    [Fact]
    public async Task Call_RegisteredIdentifier_RecipientAnswersAndCallerGetsTheValue()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var recipient = await coordinator.ConnectAsync();
        var caller = await coordinator.ConnectAsync(Roles.Worker);
        await recipient.RequestAsync<OkReply>(id => new RpcRegister(id, "aiida", "pid-42"));

        var call = caller.NextId();
        await caller.SendAsync(new RpcCall(call, "aiida", "pid-42", [1, 2]));
        var delivery = await recipient.ReceiveAsync<RpcDelivery>();
        Assert.Equal(("aiida", "pid-42"), (delivery.Namespace, delivery.Identifier));
        Assert.Equal([1, 2], delivery.Payload);
        await recipient.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Value, [3], null));

        var result = await caller.ReceiveAsync<RpcResult>();
        Assert.Equal((call, true, (string?)null, 0), (result.RequestId, result.Ok, result.Error, result.Layers));
        Assert.Equal([3], result.Payload);
    }

    [Fact]
    public async Task Call_RecipientAnswersWithAnError_CallerGetsTheErrorText()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var recipient = await coordinator.ConnectAsync();
        var caller = await coordinator.ConnectAsync();
        await recipient.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));
        var call = caller.NextId();
        await caller.SendAsync(new RpcCall(call, "ns", "x", []));

        var delivery = await recipient.ReceiveAsync<RpcDelivery>();
        await recipient.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Error, null, "KeyError: 'state'"));

        Assert.Equal(new RpcResult(call, false, null, "KeyError: 'state'", 0), await caller.ReceiveAsync<RpcResult>());
    }

    [Fact]
    public async Task Call_LayeredReply_CallerSeesEachLayerThenTheValue()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var recipient = await coordinator.ConnectAsync();
        var caller = await coordinator.ConnectAsync();
        await recipient.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));
        var call = caller.NextId();
        await caller.SendAsync(new RpcCall(call, "ns", "x", []));
        var delivery = await recipient.ReceiveAsync<RpcDelivery>();

        await recipient.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Pending, null, null));
        Assert.Equal(new RpcLayer(call, 1), await caller.ReceiveAsync<RpcLayer>());
        await recipient.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Pending, null, null));
        Assert.Equal(new RpcLayer(call, 2), await caller.ReceiveAsync<RpcLayer>());
        await recipient.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Value, [7], null));

        var result = await caller.ReceiveAsync<RpcResult>();
        Assert.Equal((call, true, 2), (result.RequestId, result.Ok, result.Layers));
        Assert.Equal([7], result.Payload);

        // A second answer to a finished call goes nowhere.
        await recipient.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Value, [8], null));
        Assert.Empty(await caller.DrainAsync());
        Assert.Empty(await recipient.DrainAsync());
    }

    [Fact]
    public async Task Call_NobodyHoldsTheIdentifier_UnroutableAtOnce()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var caller = await coordinator.ConnectAsync();

        // No timer is advanced: the refusal cannot be a timeout.
        var error = await caller.RequestErrorAsync(id => new RpcCall(id, "ns", "pid-1", []), ErrorCode.Unroutable);

        Assert.Contains("pid-1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Call_RecipientDisconnectsMidCall_CallerGetsDeliveryFailed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var recipient = await coordinator.ConnectAsync();
        var caller = await coordinator.ConnectAsync();
        await recipient.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));
        var first = caller.NextId();
        await caller.SendAsync(new RpcCall(first, "ns", "x", []));
        var second = caller.NextId();
        await caller.SendAsync(new RpcCall(second, "ns", "x", []));
        var delivery = await recipient.ReceiveAsync<RpcDelivery>();
        await recipient.ReceiveAsync<RpcDelivery>();
        await recipient.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Pending, null, null));
        await caller.ReceiveAsync<RpcLayer>();

        await recipient.CompleteAsync();

        var errors = new[] { await caller.ReceiveAsync<ErrorReply>(), await caller.ReceiveAsync<ErrorReply>() };
        Assert.Equal([first, second], errors.Select(e => e.RequestId).Order());
        Assert.All(errors, e => Assert.Equal(ErrorCode.DeliveryFailed, e.Code));
        // The identifier went with the connection.
        await caller.RequestErrorAsync(id => new RpcCall(id, "ns", "x", []), ErrorCode.Unroutable);
    }

    [Fact]
    public async Task Call_CallerDisconnectsMidCall_LateAnswerIsDroppedQuietly()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var recipient = await coordinator.ConnectAsync();
        var caller = await coordinator.ConnectAsync();
        await recipient.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));
        await caller.SendAsync(new RpcCall(caller.NextId(), "ns", "x", []));
        var delivery = await recipient.ReceiveAsync<RpcDelivery>();

        await caller.CompleteAsync();
        await caller.ExpectClosedAsync();
        await recipient.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Value, [1], null));

        Assert.Empty(await recipient.DrainAsync());
    }

    [Fact]
    public async Task Register_IdentifierAlreadyHeld_DuplicateIdentifier()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var first = await coordinator.ConnectAsync();
        var second = await coordinator.ConnectAsync();
        await first.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));

        await second.RequestErrorAsync(id => new RpcRegister(id, "ns", "x"), ErrorCode.DuplicateIdentifier);
        await first.RequestErrorAsync(id => new RpcRegister(id, "ns", "x"), ErrorCode.DuplicateIdentifier);
        // Only the holder may unregister it.
        await second.RequestErrorAsync(id => new RpcUnregister(id, "ns", "x"), ErrorCode.UnknownIdentifier);

        await second.SendAsync(new RpcCall(second.NextId(), "ns", "x", []));
        Assert.IsType<RpcDelivery>(await first.ReceiveAsync());
    }

    [Fact]
    public async Task Register_AfterUnregister_AnotherClientTakesTheIdentifierAtOnce()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var first = await coordinator.ConnectAsync();
        var second = await coordinator.ConnectAsync();
        var caller = await coordinator.ConnectAsync();
        await first.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));

        await first.RequestAsync<OkReply>(id => new RpcUnregister(id, "ns", "x"));
        await caller.RequestErrorAsync(id => new RpcCall(id, "ns", "x", []), ErrorCode.Unroutable);
        await second.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));
        var call = caller.NextId();
        await caller.SendAsync(new RpcCall(call, "ns", "x", [5]));

        var delivery = await second.ReceiveAsync<RpcDelivery>();
        await second.SendAsync(new RpcResponse(delivery.CallId, RpcResponseKind.Value, [6], null));
        Assert.Equal([6], (await caller.ReceiveAsync<RpcResult>()).Payload);
        Assert.Empty(await first.DrainAsync());
        await first.RequestErrorAsync(id => new RpcUnregister(id, "ns", "x"), ErrorCode.UnknownIdentifier);
    }

    [Fact]
    public async Task Register_SameIdentifierInTwoNamespaces_CallsStayInTheirNamespace()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var inA = await coordinator.ConnectAsync();
        var inB = await coordinator.ConnectAsync();
        var caller = await coordinator.ConnectAsync();
        await inA.RequestAsync<OkReply>(id => new RpcRegister(id, "a", "x"));
        await inB.RequestAsync<OkReply>(id => new RpcRegister(id, "b", "x"));

        await caller.SendAsync(new RpcCall(caller.NextId(), "b", "x", [2]));

        var delivery = await inB.ReceiveAsync<RpcDelivery>();
        Assert.Equal(("b", (byte)2), (delivery.Namespace, delivery.Payload.Single()));
        Assert.Empty(await inA.DrainAsync());
        await caller.RequestErrorAsync(id => new RpcCall(id, "c", "x", []), ErrorCode.Unroutable);
    }

    [Fact]
    public async Task Register_NilNamespaceOrIdentifier_InvalidRequestAndConnectionStays()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();

        await client.RequestErrorAsync(id => new RpcRegister(id, null!, "x"), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new RpcRegister(id, "ns", null!), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new RpcCall(id, null!, "x", []), ErrorCode.InvalidRequest);

        await client.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));
    }
}
