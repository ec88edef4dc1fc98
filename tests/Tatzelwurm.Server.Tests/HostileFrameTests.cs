using System.Globalization;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// SPEC §10: garbage, truncated, oversized and hostile frames each get a clear error or a closed
/// connection, and a bystander connected to the same coordinator keeps being served with nothing lost.
/// </summary>
public class HostileFrameTests
{
    public static TheoryData<string, byte[], ErrorCode> FatalFrames => new()
    {
        { "zero length", RawFrames.Header(0), ErrorCode.BadFrame },
        { "undecodable MessagePack (0xc1 is never used)", RawFrames.Frame([0xc1]), ErrorCode.BadFrame },
        { "MessagePack cut short inside the body", RawFrames.Frame([0x92, 0x1a]), ErrorCode.BadFrame },
        { "a map, not an envelope", RawFrames.Frame(RawFrames.Value(new Dictionary<string, int> { ["code"] = 26 })), ErrorCode.BadFrame },
        { "a string, not an envelope", RawFrames.Frame(RawFrames.Value("ShowTask")), ErrorCode.BadFrame },
        { "nil body", RawFrames.Frame([0xc0]), ErrorCode.BadFrame },
        { "three-element envelope", RawFrames.Frame(RawFrames.Body(26, new object[] { 1, 1 }, 0)), ErrorCode.BadFrame },
        { "code is a string", RawFrames.Frame(RawFrames.Body("26", new object[] { 1, 1 })), ErrorCode.BadFrame },
        { "fields are not an array", RawFrames.Frame(RawFrames.Body(26, 1)), ErrorCode.BadFrame },
        { "task id is a string", RawFrames.Frame(RawFrames.Body(26, new object[] { 1, "one" })), ErrorCode.BadFrame },
        { "request id is negative", RawFrames.Frame(RawFrames.Body(26, new object[] { -1, 1 })), ErrorCode.BadFrame },
        { "limit beyond 32 bits", RawFrames.Frame(RawFrames.Body(24, new object?[] { 1, null, null, null, null, 0, 1L << 40 })), ErrorCode.BadFrame },
        { "a map with a duplicate key (TaskList counts)", RawFrames.Frame([0x92, 25, 0x94, 0x01, 0x90, 0x82, 0x01, 0x01, 0x01, 0x01, 0x00]), ErrorCode.BadFrame },
        { "tasks is an integer", RawFrames.Frame(RawFrames.Body(20, new object[] { 1, 5 })), ErrorCode.BadFrame },
        { "a task spec with a map for tags", RawFrames.Frame(RawFrames.Body(20, new object[] { 1, new object[] { new object?[] { new byte[] { 1 }, "t", 0, new Dictionary<string, int>(), 0, true, false } } })), ErrorCode.BadFrame },
        { "trailing bytes after the envelope", RawFrames.Frame([.. RawFrames.Body(28, new object[] { 1 }), 0x00]), ErrorCode.BadFrame },
        { "length over the maximum, header only", RawFrames.Header(4097), ErrorCode.FrameTooLarge },
        { "length 4 GiB - 1, header only", RawFrames.Header(uint.MaxValue), ErrorCode.FrameTooLarge },
    };

    [Theory]
    [MemberData(nameof(FatalFrames))]
    public async Task HostileFrame_AfterHandshake_ErrorThenCloseAndBystanderUnaffected(string what, byte[] bytes, ErrorCode expected)
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var bystander = await coordinator.ConnectAsync();
        var before = await bystander.AddManyAsync(3);
        var hostile = await coordinator.ConnectAsync(Roles.Worker);

        await hostile.SendRawAsync(bytes);

        var error = await hostile.ExpectFatalAsync(expected);
        Assert.True(error.Message.Length > 5, $"{what}: the error should say what was wrong, got '{error.Message}'");
        await AssertBystanderServedAsync(coordinator, bystander, before);
    }

    [Fact]
    public async Task OversizedFrame_OnlyHeaderSent_RefusedBeforeTheBody()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var hostile = await coordinator.ConnectAsync();

        // Only the 4-byte header crosses: the refusal must not wait for (or allocate) the body.
        await hostile.SendRawAsync(RawFrames.Header((uint)coordinator.SessionOptions.MaxFrame + 1));

        var error = await hostile.ExpectFatalAsync(ErrorCode.FrameTooLarge);
        Assert.Contains(coordinator.SessionOptions.MaxFrame.ToString(CultureInfo.InvariantCulture), error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Frame_ExactlyTheMaximum_Accepted()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();
        var max = coordinator.SessionOptions.MaxFrame;

        // A ListTasks whose type filter pads the body to exactly MaxFrame bytes.
        var padding = max - FrameCodec.EncodeBody(new ListTasks(77, null, new string('x', 300), null, null, 0, 10)).Length + 300;
        var body = FrameCodec.EncodeBody(new ListTasks(77, null, new string('x', padding), null, null, 0, 10));
        Assert.Equal(max, body.Length);
        await client.SendBodyAsync(body);

        var list = await client.ReceiveAsync<TaskList>();
        Assert.Equal(77u, list.RequestId);
    }

    [Fact]
    public async Task TruncatedFrame_ThenEndOfStream_BadFrameAndClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var bystander = await coordinator.ConnectAsync();
        var before = await bystander.AddManyAsync(2);
        var hostile = await coordinator.ConnectAsync();
        var frame = FrameCodec.EncodeFrame(new AddTasks(5, [Specs.New(), Specs.New()]));

        await hostile.SendRawAsync(frame[..(frame.Length - 3)]);
        await hostile.CompleteAsync();

        var error = await hostile.ExpectFatalAsync(ErrorCode.BadFrame);
        Assert.Contains("truncated", error.Message, StringComparison.Ordinal);
        await AssertBystanderServedAsync(coordinator, bystander, before);
    }

    [Fact]
    public async Task TruncatedHeader_ThenEndOfStream_BadFrameAndClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var hostile = await coordinator.ConnectAsync();

        await hostile.SendRawAsync([0x00, 0x00]);
        await hostile.CompleteAsync();

        await hostile.ExpectFatalAsync(ErrorCode.BadFrame);
    }

    [Fact]
    public async Task UnknownMessageType_WithRequestId_ErrorCorrelatedAndConnectionStays()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var bystander = await coordinator.ConnectAsync();
        var before = await bystander.AddManyAsync(2);
        var client = await coordinator.ConnectAsync();

        await client.SendBodyAsync(RawFrames.Body(99, new object[] { 7, "whatever", 3 }));
        await client.SendBodyAsync(RawFrames.Body(5, new object[] { 8 }));

        var first = await client.ReceiveAsync<ErrorReply>();
        Assert.Equal((7u, ErrorCode.UnknownMessage), (first.RequestId, first.Code));
        Assert.Contains("99", first.Message, StringComparison.Ordinal);
        var second = await client.ReceiveAsync<ErrorReply>();
        Assert.Equal((8u, ErrorCode.UnknownMessage), (second.RequestId, second.Code));
        Assert.Equal(before, (await client.ListAllAsync()).Select(t => t.Id));
        await AssertBystanderServedAsync(coordinator, bystander, before);
    }

    [Theory]
    [InlineData("no fields")]
    [InlineData("field 0 is a string")]
    [InlineData("field 0 is zero")]
    public async Task UnknownMessageType_WithoutRequestId_ErrorZeroThenClosed(string shape)
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var bystander = await coordinator.ConnectAsync();
        var before = await bystander.AddManyAsync(1);
        var client = await coordinator.ConnectAsync();
        object[] fields = shape switch
        {
            "no fields" => [],
            "field 0 is a string" => ["seven"],
            _ => [0, 1],
        };

        // Nothing to correlate the refusal with: docs/protocol.md §4, an Error with request id 0 closes.
        await client.SendBodyAsync(RawFrames.Body(99, fields));

        var error = await client.ExpectFatalAsync(ErrorCode.UnknownMessage);
        Assert.Contains("99", error.Message, StringComparison.Ordinal);
        await AssertBystanderServedAsync(coordinator, bystander, before);
    }

    [Fact]
    public async Task SecondHello_AfterTheHandshake_InvalidRequestThenClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();

        await client.SendAsync(new Hello(ProtocolConstants.Version, Roles.Worker, TestCoordinator.Token, "again"));

        await client.ExpectFatalAsync(ErrorCode.InvalidRequest);
    }

    public static TheoryData<string, IMessage> ServerMessages => new()
    {
        { "Welcome", new Welcome(1, "1", 1, 1, 1) },
        { "ErrorReply", new ErrorReply(3, ErrorCode.Internal, "x") },
        { "TaskOutcome", new TaskOutcome(1, 1, 0, null, null, 0) },
        { "AssignTask", new AssignTask(1, "t", [], 1, false) },
        { "BroadcastDelivery", new BroadcastDelivery(["s"], "ns", [], null, null, null) },
    };

    [Theory]
    [MemberData(nameof(ServerMessages))]
    public async Task ServerToClientMessage_SentByAClient_InvalidRequestThenClosed(string name, IMessage message)
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var bystander = await coordinator.ConnectAsync();
        var before = await bystander.AddManyAsync(1);
        var client = await coordinator.ConnectAsync(Roles.Worker);

        await client.SendAsync(message);

        var error = await client.ExpectFatalAsync(ErrorCode.InvalidRequest);
        Assert.Contains(name, error.Message, StringComparison.Ordinal);
        await AssertBystanderServedAsync(coordinator, bystander, before);
    }

    [Fact]
    public async Task RpcResponse_UnknownKind_RecipientClosedAndCallerGetsDeliveryFailed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var recipient = await coordinator.ConnectAsync();
        var caller = await coordinator.ConnectAsync();
        await recipient.RequestAsync<OkReply>(id => new RpcRegister(id, "ns", "x"));
        var call = caller.NextId();
        await caller.SendAsync(new RpcCall(call, "ns", "x", []));
        var delivery = await recipient.ReceiveAsync<RpcDelivery>();

        await recipient.SendAsync(new RpcResponse(delivery.CallId, (RpcResponseKind)9, null, null));

        await recipient.ExpectFatalAsync(ErrorCode.InvalidRequest);
        var failed = await caller.ReceiveAsync<ErrorReply>();
        Assert.Equal((call, ErrorCode.DeliveryFailed), (failed.RequestId, failed.Code));
    }

    [Fact]
    public async Task WorkerMessageFromActioner_NotAllowedForRole_NothingChangesAndConnectionStays()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var bystander = await coordinator.ConnectAsync();
        var before = await bystander.AddManyAsync(2);
        var actioner = await coordinator.ConnectAsync();

        await actioner.RequestErrorAsync(id => new RegisterWorker(id, "sneaky", "sneaky", [], 10, []), ErrorCode.NotAllowedForRole);
        await actioner.RequestErrorAsync(id => new TaskUpdate(id, before[0], TaskUpdateKind.Finished, 0, null, null), ErrorCode.NotAllowedForRole);

        // Still served, registered as no worker, and the task it tried to finish is untouched.
        Assert.Empty((await actioner.RequestAsync<WorkerList>(id => new ListWorkers(id))).Workers);
        Assert.Equal(1, (await actioner.RequestAsync<TaskDetail>(id => new ShowTask(id, before[0]))).Task.State);
        await AssertBystanderServedAsync(coordinator, bystander, before);
    }

    [Fact]
    public async Task Heartbeat_FromAnActioner_NotAllowedForRoleAndClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var bystander = await coordinator.ConnectAsync();
        var before = await bystander.AddManyAsync(1);
        var actioner = await coordinator.ConnectAsync();

        // A heartbeat carries no request id to correlate a refusal with, so the connection is refused as a whole.
        await actioner.SendAsync(new Heartbeat(1));

        await actioner.ExpectFatalAsync(ErrorCode.NotAllowedForRole);
        await AssertBystanderServedAsync(coordinator, bystander, before);
    }

    [Fact]
    public async Task GarbageFromOneClient_WhileAnotherIsMidRequest_OtherGetsItsReply()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var bystander = await coordinator.ConnectAsync();
        var hostile = await coordinator.ConnectAsync();
        var frame = FrameCodec.EncodeFrame(new AddTasks(1, [Specs.New(), Specs.New(), Specs.New()]));

        // The bystander's request arrives in two pieces with the hostile client's garbage in between.
        await bystander.SendRawAsync(frame[..10]);
        await hostile.SendRawAsync(RawFrames.Frame([0xc1, 0xc1, 0xc1]));
        await hostile.ExpectFatalAsync(ErrorCode.BadFrame);
        await bystander.SendRawAsync(frame[10..]);

        Assert.Equal([1L, 2L, 3L], (await bystander.ReceiveAsync<TasksAdded>()).Ids);
        Assert.Equal(3, coordinator.Store.Snapshot().Tasks.Count);
    }

    private static async Task AssertBystanderServedAsync(TestCoordinator coordinator, PipeClient bystander, IReadOnlyList<long> before)
    {
        var after = await bystander.AddManyAsync(2);
        var listed = (await bystander.ListAllAsync()).Select(t => t.Id).ToList();
        Assert.Equal([.. before, .. after], listed);
        Assert.Equal(listed, coordinator.Store.Snapshot().Tasks.Select(t => t.Id));
    }
}
