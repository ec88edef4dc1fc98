using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Xunit;
using WorkerAction = Tatzelwurm.Protocol.WorkerAction;

namespace Tatzelwurm.Server.Tests;

/// <summary>docs/protocol.md §3 (handshake) and §2 (request ids, one reply per request) over in-memory pipes.</summary>
public class SessionTests
{
    [Fact]
    public async Task Handshake_ValidHello_WelcomeCarriesHeartbeatLeaseAndMaxFrame()
    {
        var options = CoordinatorOptions.Default with { HeartbeatInterval = TimeSpan.FromMilliseconds(1500), Lease = TimeSpan.FromSeconds(7) };
        await using var coordinator = await TestCoordinator.StartAsync(options);
        var client = coordinator.Open();

        await client.SendAsync(new Hello(ProtocolConstants.Version, Roles.Worker, TestCoordinator.Token, "tests"));
        var welcome = await client.ReceiveAsync<Welcome>();

        Assert.Equal(ProtocolConstants.Version, welcome.Version);
        Assert.Equal(1500, welcome.HeartbeatMs);
        Assert.Equal(7000, welcome.LeaseMs);
        Assert.Equal(coordinator.SessionOptions.MaxFrame, welcome.MaxFrame);
        Assert.False(string.IsNullOrEmpty(welcome.SessionId));
        Assert.IsType<WorkerList>(await client.RequestAsync<WorkerList>(id => new ListWorkers(id)));
    }

    [Fact]
    public async Task Handshake_TwoConnections_GetDistinctSessionIds()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var a = coordinator.Open();
        var b = coordinator.Open();
        await a.SendAsync(new Hello(1, Roles.Actioner, TestCoordinator.Token, "a"));
        await b.SendAsync(new Hello(1, Roles.Actioner, TestCoordinator.Token, "b"));

        Assert.NotEqual((await a.ReceiveAsync<Welcome>()).SessionId, (await b.ReceiveAsync<Welcome>()).SessionId);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(-1)]
    public async Task Handshake_WrongVersion_UnsupportedVersionAndClosed(int version)
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        await client.SendAsync(new Hello(version, Roles.Actioner, TestCoordinator.Token, "tests"));

        var error = await client.ExpectFatalAsync(ErrorCode.UnsupportedVersion);
        Assert.Contains(version.ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("wrong")]
    [InlineData("")]
    [InlineData("test-token-and-more")]
    [InlineData("test-toke")]
    [InlineData(null)]
    public async Task Handshake_WrongToken_AuthFailedAndClosed(string? token)
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        await client.SendAsync(new Hello(ProtocolConstants.Version, Roles.Worker, token!, "tests"));

        await client.ExpectFatalAsync(ErrorCode.AuthFailed);
    }

    [Theory]
    [InlineData("admin")]
    [InlineData("")]
    [InlineData("Worker")]
    [InlineData(null)]
    public async Task Handshake_UnknownRole_InvalidRequestAndClosed(string? role)
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        await client.SendAsync(new Hello(ProtocolConstants.Version, role!, TestCoordinator.Token, "tests"));

        await client.ExpectFatalAsync(ErrorCode.InvalidRequest);
    }

    [Fact]
    public async Task Handshake_FirstFrameIsARequest_HandshakeRequiredAndClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        await client.SendAsync(new AddTasks(1, [Specs.New()]));

        await client.ExpectFatalAsync(ErrorCode.HandshakeRequired);
        Assert.Empty(coordinator.Store.Snapshot().Tasks);
    }

    [Fact]
    public async Task Handshake_FirstFrameHasUnknownCode_HandshakeRequiredAndClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        await client.SendBodyAsync(RawFrames.Body(99, new object[] { 1 }));

        await client.ExpectFatalAsync(ErrorCode.HandshakeRequired);
    }

    [Fact]
    public async Task Handshake_FirstFrameIsGarbage_BadFrameAndClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        await client.SendBodyAsync([0xc1]);

        await client.ExpectFatalAsync(ErrorCode.BadFrame);
    }

    [Fact]
    public async Task Handshake_SilentUntilOneTickBeforeTimeout_StillAccepted()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        coordinator.Time.Advance(coordinator.SessionOptions.HandshakeTimeout - TimeSpan.FromTicks(1));
        await client.SendAsync(new Hello(ProtocolConstants.Version, Roles.Actioner, TestCoordinator.Token, "tests"));

        await client.ReceiveAsync<Welcome>();
    }

    [Fact]
    public async Task Handshake_SilentForTheTimeout_HandshakeRequiredAndClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        coordinator.Time.Advance(coordinator.SessionOptions.HandshakeTimeout);

        await client.ExpectFatalAsync(ErrorCode.HandshakeRequired);
    }

    [Fact]
    public async Task Handshake_PartialHelloAtTimeout_HandshakeRequiredAndClosed()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();
        var hello = FrameCodec.EncodeFrame(new Hello(ProtocolConstants.Version, Roles.Actioner, TestCoordinator.Token, "tests"));

        // A client that trickles half a frame and stops must not hold the connection open forever.
        await client.SendRawAsync(hello[..(hello.Length / 2)]);
        coordinator.Time.Advance(coordinator.SessionOptions.HandshakeTimeout);

        await client.ExpectFatalAsync(ErrorCode.HandshakeRequired);
    }

    [Fact]
    public async Task Handshake_ClientClosesBeforeHello_SessionEndsQuietly()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = coordinator.Open();

        await client.CompleteAsync();

        await client.ExpectClosedAsync();
    }

    [Fact]
    public async Task Requests_ManyInFlightWithScatteredIds_EachReplyCarriesItsOwnId()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();

        // Written back to back before reading anything: the replies must be told apart by id alone.
        await client.SendAsync(new AddTasks(7, [Specs.New("a"), Specs.New("b")]));
        await client.SendAsync(new ShowTask(4_000_000_000, 1));
        await client.SendAsync(new ShowTask(3, 999));
        await client.SendAsync(new ListTasks(11, null, "b", null, null, 0, 10));
        await client.SendAsync(new ListWorkers(5));
        await client.SendAsync(new ControlTasks(9, TaskAction.Pause, [2, 12345], false));

        var replies = new Dictionary<uint, IReply>();
        for (var i = 0; i < 6; i++)
        {
            var reply = Assert.IsAssignableFrom<IReply>(await client.ReceiveAsync());
            Assert.True(replies.TryAdd(reply.RequestId, reply), $"two replies for request {reply.RequestId}");
        }

        Assert.Equal([1L, 2L], Assert.IsType<TasksAdded>(replies[7]).Ids);
        Assert.Equal(1, Assert.IsType<TaskDetail>(replies[4_000_000_000]).Task.Id);
        Assert.Equal(ErrorCode.UnknownTask, Assert.IsType<ErrorReply>(replies[3]).Code);
        Assert.Equal([2L], Assert.IsType<TaskList>(replies[11]).Tasks.Select(t => t.Id));
        Assert.Empty(Assert.IsType<WorkerList>(replies[5]).Workers);
        var control = Assert.IsType<ControlResult>(replies[9]);
        Assert.Equal([2L], control.Applied);
        Assert.Equal(ErrorCode.UnknownTask, Assert.Single(control.Failed).Code);
    }

    [Fact]
    public async Task Requests_TwoConnectionsReuseTheSameIds_RepliesDoNotCross()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var a = await coordinator.ConnectAsync();
        var b = await coordinator.ConnectAsync();

        await a.SendAsync(new AddTasks(1, [Specs.New("from-a")]));
        await b.SendAsync(new AddTasks(1, [Specs.New("from-b"), Specs.New("from-b")]));
        var addedA = await a.ReceiveAsync<TasksAdded>();
        var addedB = await b.ReceiveAsync<TasksAdded>();

        Assert.Single(addedA.Ids);
        Assert.Equal(2, addedB.Ids.Count);
        Assert.Equal("from-a", (await a.RequestAsync<TaskDetail>(id => new ShowTask(id, addedA.Ids[0]))).Task.Type);
        Assert.All(addedB.Ids, id => Assert.DoesNotContain(id, addedA.Ids));
    }

    [Fact]
    public async Task ErrorReply_UnknownTask_ConnectionStaysOpen()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();

        var error = await client.RequestErrorAsync(id => new ShowTask(id, 42), ErrorCode.UnknownTask);
        Assert.Contains("42", error.Message, StringComparison.Ordinal);
        await client.RequestErrorAsync(id => new WaitTask(id, 42), ErrorCode.UnknownTask);

        var added = await client.AddAsync();
        Assert.Equal(added, (await client.RequestAsync<TaskDetail>(id => new ShowTask(id, added))).Task.Id);
    }

    [Fact]
    public async Task ErrorReply_IllegalTransition_NothingChangesAndConnectionStaysOpen()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var worker = await coordinator.ConnectWorkerAsync("w1", slots: 0);
        var actioner = await coordinator.ConnectAsync();
        var ready = await actioner.AddAsync();

        // The worker reports on a task it was never given, and the actioner plays a task that is already ready.
        var refused = await worker.RequestErrorAsync(id => new TaskUpdate(id, ready, TaskUpdateKind.Accepted, 0, null, null), ErrorCode.IllegalTransition);
        Assert.Contains(ready.ToString(System.Globalization.CultureInfo.InvariantCulture), refused.Message, StringComparison.Ordinal);
        var control = await actioner.RequestAsync<ControlResult>(id => new ControlTasks(id, TaskAction.Play, [ready], false));

        Assert.Empty(control.Applied);
        Assert.Equal(ErrorCode.IllegalTransition, Assert.Single(control.Failed).Code);
        var task = await coordinator.TaskAsync(ready);
        Assert.Equal(TaskState.Ready, task.State);
        Assert.Single(task.History);
        Assert.Empty(await worker.DrainAsync());
        Assert.Equal(TaskState.Ready, (TaskState)(await actioner.RequestAsync<TaskDetail>(id => new ShowTask(id, ready))).Task.State);
    }

    [Fact]
    public async Task ErrorReply_InvalidRequests_CorrelatedAndConnectionStaysOpen()
    {
        await using var coordinator = await TestCoordinator.StartAsync();
        var client = await coordinator.ConnectAsync();

        await client.RequestErrorAsync(id => new ListTasks(id, null, null, null, null, 0, 0), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new ListTasks(id, null, null, null, null, 0, 10_001), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new ListTasks(id, 6, null, null, null, 0, 10), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new AddTasks(id, []), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new AddTasks(id, [Specs.New(type: "")]), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new AddTasks(id, [Specs.New(), Specs.New() with { Policy = (Protocol.DeliveryPolicy)7 }]), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new ControlTasks(id, TaskAction.Kill, [], true), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new ControlTasks(id, (TaskAction)9, [1], false), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new SetTagLimit(id, "", 3), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new WorkerCommand(id, "nobody", WorkerAction.Drain), ErrorCode.UnknownWorker);
        await client.RequestErrorAsync(id => new WorkerCommand(id, null!, WorkerAction.Drain), ErrorCode.InvalidRequest);
        await client.RequestErrorAsync(id => new RegisterWorker(id, "", "w", [], 1, []), ErrorCode.NotAllowedForRole);

        // Nothing of the refused adds was created; the connection still works.
        Assert.Empty(await client.ListAllAsync());
        Assert.Equal(1, await client.AddAsync());
        Assert.Single(coordinator.Store.Snapshot().Tasks);
    }
}
