using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;
using Tatzelwurm.Client;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Tests.Harness;
using Tatzelwurm.Storage;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// The worker runner (<see cref="Worker"/>) against an in-process <see cref="CoordinatorHost"/>: it runs
/// tasks within its slots, obeys pause/play/kill, and after a cut connection or a coordinator restart
/// reconnects and reclaims what it runs without running anything twice.
/// </summary>
public class WorkerRunnerTests
{
    private const int Running = 3;
    private const int Paused = 4;
    private const int Terminated = 5;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Worker_TwentyTasks_AllCompleteWithResultsAndAtMostItsSlotsAtOnce()
    {
        await using var host = await TestHost.StartAsync();
        var actioner = await host.ClientAsync();
        var now = 0;
        var full = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var worker = new RunningWorker(host.Connection(name: "worker"), "w-run", slots: 3, async (task, control) =>
        {
            // The first three wait for each other: the worker must run three at once to get past this.
            if (Interlocked.Increment(ref now) >= 3)
            {
                full.TrySetResult();
            }

            await full.Task.WaitAsync(control.Killed);
            Interlocked.Decrement(ref now);
            return TaskOutcomeReport.Completed([.. task.Payload.Reverse()]);
        });

        var ids = await actioner.AddAsync(Enumerable.Range(0, 20).Select(i => new TaskSpec([(byte)i, 0xff], "t", 0, [], DeliveryPolicy.Default, true, false)).ToList(), Ct);

        for (var i = 0; i < ids.Count; i++)
        {
            var result = await actioner.WaitAsync(ids[i], cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
            Assert.Equal((0, (string?)null), (result.ExitCode, result.Error));
            Assert.Equal([0xff, (byte)i], result.Result);
        }

        Assert.Equal(3, worker.Worker.MaxConcurrent);
        Assert.Equal(20, worker.Worker.Completed);
        var info = Assert.Single(await actioner.WorkersAsync(Ct));
        Assert.Equal(("w-run", 3, 0, "t"), (info.WorkerId, info.Slots, info.Load, Assert.Single(info.Types)));
    }

    [Fact]
    public async Task Worker_PauseThenPlay_SuspendedAndResumedOnTheWorker()
    {
        await using var host = await TestHost.StartAsync();
        var actioner = await host.ClientAsync();
        await using var events = await Feed<TaskEvent>.StartAsync(actioner, ct => actioner.WatchAsync(cancellationToken: ct));
        var control = new TaskCompletionSource<TaskControl>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var worker = new RunningWorker(host.Connection(name: "worker"), "w-pause", slots: 1, async (task, c) =>
        {
            control.TrySetResult(c);
            await release.Task.WaitAsync(c.Killed);
            await c.WaitWhilePausedAsync();
            return TaskOutcomeReport.Completed([1]);
        });
        var id = await actioner.AddAsync([], "t", cancellationToken: Ct);
        var running = await control.Task.WaitAsync(PipeClient.Patience, Ct);
        await events.NextAsync(e => e.TaskId == id && e.State == Running);

        Assert.Equal([id], (await actioner.ControlAsync(TaskAction.Pause, [id], cancellationToken: Ct)).Applied);
        var paused = await events.NextAsync(e => e.TaskId == id && e.State != Running);
        Assert.Equal((Paused, "w-pause"), (paused.State, paused.Worker));
        Assert.True(running.IsPaused);

        // Released while paused: it must wait at its checkpoint until played.
        release.SetResult();
        Assert.Equal([id], (await actioner.ControlAsync(TaskAction.Play, [id], cancellationToken: Ct)).Applied);
        Assert.Equal(Running, (await events.NextAsync(e => e.TaskId == id)).State);
        Assert.False(running.IsPaused);
        Assert.Equal(0, (await actioner.WaitAsync(id, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct)).ExitCode);
        var history = (await actioner.ShowAsync(id, Ct)).History.Select(h => h.State);
        Assert.Equal([1, 2, 3, 4, 3, 5], history);
    }

    [Fact]
    public async Task Worker_MalformedServerAddress_RunThrowsInsteadOfRetrying()
    {
        using var worker = new Worker(
            new WorkerOptions { Connection = new ConnectionOptions { Server = "no-port-here", Token = "t" }, WorkerId = "w-bad" },
            (_, _) => Task.FromResult(TaskOutcomeReport.Completed()));

        var ex = await Assert.ThrowsAsync<FormatException>(() => worker.RunAsync(Ct)).WaitAsync(PipeClient.Patience, Ct);
        Assert.Contains("'no-port-here' is not host:port", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(TaskAction.Play, 0)]
    [InlineData(TaskAction.Kill, -1)]
    public async Task Worker_BlockingHandlerPaused_WaitsAtItsCheckpointUntilPlayedOrKilled(TaskAction then, int exitCode)
    {
        await using var host = await TestHost.StartAsync();
        var actioner = await host.ClientAsync();
        await using var events = await Feed<TaskEvent>.StartAsync(actioner, ct => actioner.WatchAsync(cancellationToken: ct));
        var control = new TaskCompletionSource<TaskControl>(TaskCreationOptions.RunContinuationsAsynchronously);
        var checkpoints = 0;
        using var release = new ManualResetEventSlim();
        using var atCheckpoint = new ManualResetEventSlim();
        await using var worker = new RunningWorker(host.Connection(name: "worker"), "w-block", slots: 1, (task, c) =>
        {
            // A handler that blocks its thread: the synchronous checkpoint, passed once while running.
            c.WaitWhilePaused();
            checkpoints++;
            control.TrySetResult(c);
            release.Wait(Ct);
            atCheckpoint.Set();
            c.WaitWhilePaused();
            return Task.FromResult(TaskOutcomeReport.Completed([1]));
        });
        var id = await actioner.AddAsync([], "t", cancellationToken: Ct);
        var running = await control.Task.WaitAsync(PipeClient.Patience, Ct);
        await events.NextAsync(e => e.TaskId == id && e.State == Running);

        Assert.Equal([id], (await actioner.ControlAsync(TaskAction.Pause, [id], cancellationToken: Ct)).Applied);
        Assert.Equal(Paused, (await events.NextAsync(e => e.TaskId == id && e.State != Running)).State);
        Assert.True(running.IsPaused);
        release.Set();
        Assert.True(atCheckpoint.Wait(PipeClient.Patience, Ct));

        Assert.Equal([id], (await actioner.ControlAsync(then, [id], cancellationToken: Ct)).Applied);
        var result = await actioner.WaitAsync(id, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal((exitCode, 1), (result.ExitCode, checkpoints));
        Assert.Equal(then == TaskAction.Kill, running.Killed.IsCancellationRequested);
    }

    [Fact]
    public async Task Worker_Kill_HandlerCancelledAndTaskEndsWithMinusOne()
    {
        await using var host = await TestHost.StartAsync();
        var actioner = await host.ClientAsync();
        var started = Channel.CreateUnbounded<long>();
        await using var worker = new RunningWorker(host.Connection(name: "worker"), "w-kill", slots: 1, async (task, c) =>
        {
            started.Writer.TryWrite(task.Id);
            await Task.Delay(Timeout.Infinite, c.Killed);
            return TaskOutcomeReport.Completed();
        });

        // Twice: the first kill must also have freed the worker's only slot for the second task.
        for (var i = 0; i < 2; i++)
        {
            var id = await actioner.AddAsync([], "t", cancellationToken: Ct);
            Assert.Equal(id, await started.Reader.ReadAsync(Ct).AsTask().WaitAsync(PipeClient.Patience, Ct));

            Assert.Equal([id], (await actioner.ControlAsync(TaskAction.Kill, [id], cancellationToken: Ct)).Applied);

            var result = await actioner.WaitAsync(id, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
            Assert.Equal(-1, result.ExitCode);
            var info = await actioner.ShowAsync(id, Ct);
            Assert.Equal((Terminated, (int?)-1, "killed by actioner"), (info.State, info.ExitCode, info.Reason));
        }
    }

    [Fact]
    public async Task Worker_ConnectionCut_ReconnectsAndReclaimsWithoutRerunning()
    {
        await using var host = await TestHost.StartAsync();
        await using var proxy = new TcpProxy(host.EndPoint);
        var actioner = await host.ClientAsync();
        var runs = 0;
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var worker = new RunningWorker(host.Connection(via: proxy.EndPoint, name: "worker"), "w-cut", slots: 1, async (task, c) =>
        {
            Interlocked.Increment(ref runs);
            started.TrySetResult();
            await release.Task.WaitAsync(c.Killed);
            return TaskOutcomeReport.Completed([7]);
        });
        var id = await actioner.AddAsync([], "t", policy: DeliveryPolicy.AtLeastOnce, cancellationToken: Ct);
        await started.Task.WaitAsync(PipeClient.Patience, Ct);
        await worker.LogAsync("registered as w-cut (0 tasks reclaimed, 0 dropped)");

        proxy.Cut();

        await worker.LogAsync("registered as w-cut (1 tasks reclaimed, 0 dropped)");
        var info = await actioner.ShowAsync(id, Ct);
        Assert.Equal((Running, "w-cut", 0), (info.State, info.Worker, info.Attempts));
        release.SetResult();
        var result = await actioner.WaitAsync(id, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal((0, (byte)7), (result.ExitCode, result.Result!.Single()));
        Assert.Equal(1, runs);
        Assert.Equal(0, (await actioner.ShowAsync(id, Ct)).Attempts);
    }

    [Fact]
    public async Task Worker_TaskFinishesWhileDisconnected_ReportedAfterReclaim()
    {
        await using var host = await TestHost.StartAsync();
        await using var proxy = new TcpProxy(host.EndPoint);
        var actioner = await host.ClientAsync();
        var runs = 0;
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var finished = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var worker = new RunningWorker(host.Connection(via: proxy.EndPoint, name: "worker"), "w-late", slots: 1, async (task, c) =>
        {
            Interlocked.Increment(ref runs);
            started.TrySetResult();
            await release.Task.WaitAsync(c.Killed);
            finished.TrySetResult();
            return TaskOutcomeReport.Failed(3, "failed while nobody listened");
        });
        var id = await actioner.AddAsync([], "t", cancellationToken: Ct);
        await started.Task.WaitAsync(PipeClient.Patience, Ct);

        proxy.Cut();
        await worker.LogAsync("connection lost");
        release.SetResult();
        await finished.Task.WaitAsync(PipeClient.Patience, Ct);

        await worker.LogAsync("registered as w-late (1 tasks reclaimed, 0 dropped)");
        var result = await actioner.WaitAsync(id, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal((3, "failed while nobody listened"), (result.ExitCode, result.Error));
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task Worker_CoordinatorRestarts_ReclaimsItsRunningTaskFromTheRecoveredStore()
    {
        var data = Directory.CreateTempSubdirectory("tatzelwurm-server-tests-").FullName;
        try
        {
            var store = new InMemoryTaskStore();
            var first = await TestHost.StartAsync(store: store, dataDirectory: data);
            await using var proxy = new TcpProxy(first.EndPoint);
            var runs = 0;
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await using var worker = new RunningWorker(first.Connection(via: proxy.EndPoint, name: "worker"), "w-restart", slots: 1, async (task, c) =>
            {
                Interlocked.Increment(ref runs);
                started.TrySetResult();
                await release.Task.WaitAsync(c.Killed);
                return TaskOutcomeReport.Completed([1]);
            });
            var id = await (await first.ClientAsync()).AddAsync([], "t", cancellationToken: Ct);
            await started.Task.WaitAsync(PipeClient.Patience, Ct);
            await worker.LogAsync("registered as w-restart (0 tasks reclaimed, 0 dropped)");

            // The coordinator goes away; a new one starts on the same store and data directory (same token)
            // on another port, and the relay follows it.
            await first.DisposeAsync();
            await using var second = await TestHost.StartAsync(store: store, dataDirectory: data);
            proxy.Target = second.EndPoint;
            Assert.Equal(first.Host.Token, second.Host.Token);

            await worker.LogAsync("registered as w-restart (1 tasks reclaimed, 0 dropped)");
            var actioner = await second.ClientAsync();
            var info = await actioner.ShowAsync(id, Ct);
            Assert.Equal((Running, "w-restart", 0, "connected"), (info.State, info.Worker, info.Attempts, info.WorkerLease));
            release.SetResult();
            Assert.Equal(0, (await actioner.WaitAsync(id, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct)).ExitCode);
            Assert.Equal(1, runs);
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    // Reports are batched within the coordinator's max_frame: a batch sized for the default limit would
    // be closed with FrameTooLarge by a coordinator started with a lower --max-frame, and re-sent forever.
    [Fact]
    public async Task Worker_CoordinatorWithSmallMaxFrame_BatchesOfLargeResultsStayWithinIt()
    {
        await using var host = await TestHost.StartAsync(o => o with { MaxFrame = 16 * 1024 });
        var actioner = await host.ClientAsync();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = 0;
        await using var worker = new RunningWorker(host.Connection(name: "worker"), "w-small", slots: 16, async (task, control) =>
        {
            // All sixteen finish together, so their Finished reports queue up behind one another.
            if (Interlocked.Increment(ref started) == 16)
            {
                release.TrySetResult();
            }

            await release.Task.WaitAsync(control.Killed);
            return TaskOutcomeReport.Completed(Enumerable.Repeat(task.Payload[0], 3000).ToArray());
        });

        var ids = await actioner.AddAsync(Enumerable.Range(0, 16).Select(i => new TaskSpec([(byte)i], "t", 0, [], DeliveryPolicy.Default, true, false)).ToList(), Ct);

        for (var i = 0; i < ids.Count; i++)
        {
            var result = await actioner.WaitAsync(ids[i], cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
            Assert.Equal(Enumerable.Repeat((byte)i, 3000), result.Result);
        }
    }

    // A report beyond the coordinator's max_frame used to close the connection, be re-sent after the
    // reconnect and close it again, for ever, with the task never ending. It becomes a failure that
    // names the sizes, on the same connection, and the worker goes on with the next task.
    [Fact]
    public async Task Worker_ResultOverMaxFrame_TaskFailsWithTheSizesAndTheNextTaskRuns()
    {
        await using var host = await TestHost.StartAsync(o => o with { MaxFrame = 16 * 1024 });
        var actioner = await host.ClientAsync();
        await using var worker = new RunningWorker(host.Connection(name: "worker"), "w-big-result", slots: 1,
            (task, _) => Task.FromResult(TaskOutcomeReport.Completed(new byte[task.Payload[0] == 1 ? 20_000 : 3])));

        var big = await actioner.AddAsync([1], "t", cancellationToken: Ct);
        var failed = await actioner.WaitAsync(big, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal((1, (byte[]?)null, "result of 20,000 bytes exceeds the coordinator's max_frame of 16,384 bytes"),
            (failed.ExitCode, failed.Result, failed.Error));

        var small = await actioner.AddAsync([2], "t", cancellationToken: Ct);
        var done = await actioner.WaitAsync(small, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal((0, 3), (done.ExitCode, done.Result?.Length));
        Assert.Equal(
            ["registered as w-big-result (0 tasks reclaimed, 0 dropped)", $"task {big}: reported failed: {failed.Error}"],
            worker.Lines());
    }

    // An error text too large keeps the task's exit code and quotes the start of the text. One that the
    // cheap bound (three bytes per character) refuses but that fits byte for byte goes out unchanged.
    [Fact]
    public async Task Worker_ErrorTextOverMaxFrame_TaskFailsWithItsCodeAndTheStartOfTheText()
    {
        await using var host = await TestHost.StartAsync(o => o with { MaxFrame = 16 * 1024 });
        var actioner = await host.ClientAsync();
        var fits = new string('\u00e9', 6000);
        await using var worker = new RunningWorker(host.Connection(name: "worker"), "w-big-error", slots: 1,
            (task, _) => Task.FromResult(task.Payload[0] == 1 ? TaskOutcomeReport.Failed(3, new string('e', 20_000)) : TaskOutcomeReport.Failed(4, fits)));

        var big = await actioner.AddAsync([1], "t", cancellationToken: Ct);
        var failed = await actioner.WaitAsync(big, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal(3, failed.ExitCode);
        Assert.Equal("error text of 20,000 bytes exceeds the coordinator's max_frame of 16,384 bytes; the error text began: " + new string('e', 1000), failed.Error);

        var other = await actioner.AddAsync([2], "t", cancellationToken: Ct);
        var unchanged = await actioner.WaitAsync(other, cancellationToken: Ct).WaitAsync(PipeClient.Patience, Ct);
        Assert.Equal((4, fits), (unchanged.ExitCode, unchanged.Error));
    }

    // A registration beyond the coordinator's max_frame would be refused on every reconnect: the run ends
    // with the sizes instead of retrying for ever.
    [Fact]
    public async Task Worker_RegistrationOverMaxFrame_RunEndsWithFrameTooLarge()
    {
        await using var host = await TestHost.StartAsync(o => o with { MaxFrame = 16 * 1024 });
        using var worker = new Worker(new WorkerOptions
        {
            Connection = host.Connection(name: "worker"),
            WorkerId = "w-many-types",
            Types = [.. Enumerable.Range(0, 2000).Select(i => $"type-{i:D5}")],
        }, (_, _) => Task.FromResult(TaskOutcomeReport.Completed()));

        var error = await Assert.ThrowsAsync<TatzelwurmException>(() => worker.RunAsync(Ct).WaitAsync(PipeClient.Patience, Ct));
        Assert.Equal(ErrorCode.FrameTooLarge, error.Code);
        Assert.Matches("^RegisterWorker of [0-9,]+ bytes exceeds the coordinator's max_frame of 16,384 bytes$", error.Message);
    }

    // A failure code the worker has no rule for (here Internal) drops that report, as for a refused one;
    // it must not end the acknowledgement loop and leave the task's later reports unacknowledged.
    [Fact]
    public async Task Worker_ReportFailedWithUnexpectedCode_DroppedAndLaterReportsAcknowledged()
    {
        using var coordinator = ScriptedCoordinator.Start();
        await using var worker = new RunningWorker(coordinator.Connection, "w-internal", slots: 1, (task, _) => Task.FromResult(TaskOutcomeReport.Completed(task.Payload)));
        await using var link = await coordinator.AcceptAsync();
        await link.SendAsync(new WorkerRegistered(link.Register.RequestId, [], Batches: true));
        await link.SendAsync(new AssignTasks([new AssignTask(7, "t", [7], 1, false)]));

        var kinds = new List<TaskUpdateKind>();
        while (!kinds.Contains(TaskUpdateKind.Finished))
        {
            var updates = Assert.IsType<TaskUpdates>(await link.ReadAsync());
            var failed = updates.Reports.Select((r, i) => (r, i)).Where(x => x.r.Kind == TaskUpdateKind.Accepted)
                .Select(x => new ReportFailure(x.i, ErrorCode.Internal, "internal error; see the coordinator's log")).ToList();
            kinds.AddRange(updates.Reports.Select(r => r.Kind));
            await link.SendAsync(new TaskUpdatesResult(updates.RequestId, failed));
        }

        await worker.LogAsync("task 7: Accepted not applied (Internal)");
        Assert.Equal([TaskUpdateKind.Accepted, TaskUpdateKind.Finished], kinds);

        // The Finished was acknowledged, so the task is gone: the next registration holds nothing and
        // nothing is sent again.
        await link.DisposeAsync();
        await using var again = await coordinator.AcceptAsync();
        Assert.Empty(again.Register.Held);
    }

    // A report the coordinator could not persist goes again after a pause, and so does the task's report
    // sent behind it: the store had recovered for that one, which was refused only because the first was
    // not applied yet. Dropping it would lose the task's outcome.
    [Fact]
    public async Task Worker_ReportNotPersisted_SentAgainWithTheReportsBehindIt()
    {
        var time = new FakeTimeProvider();
        using var coordinator = ScriptedCoordinator.Start();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var worker = new RunningWorker(coordinator.Connection, "w-retry", slots: 1, async (task, _) =>
        {
            await release.Task;
            return TaskOutcomeReport.Completed(task.Payload);
        }, time);
        await using var link = await coordinator.AcceptAsync();
        await link.SendAsync(new WorkerRegistered(link.Register.RequestId, [], Batches: true));
        await link.SendAsync(new AssignTasks([new AssignTask(7, "t", [7], 1, false)]));
        var accepted = Assert.IsType<TaskUpdates>(await link.ReadAsync());
        Assert.Equal([TaskUpdateKind.Accepted], accepted.Reports.Select(r => r.Kind));
        release.SetResult();
        var finished = Assert.IsType<TaskUpdates>(await link.ReadAsync());
        Assert.Equal([TaskUpdateKind.Finished], finished.Reports.Select(r => r.Kind));

        await link.SendAsync(new TaskUpdatesResult(accepted.RequestId, [new ReportFailure(0, ErrorCode.StoreUnavailable, "the store is failing")]));
        await link.SendAsync(new TaskUpdatesResult(finished.RequestId, [new ReportFailure(0, ErrorCode.IllegalTransition, "task 7 is submit")]));
        await worker.LogAsync("task 7: Accepted not persisted");
        time.Advance(TimeSpan.FromMilliseconds(500));

        var kinds = new List<TaskUpdateKind>();
        while (kinds.Count < 2)
        {
            var again = Assert.IsType<TaskUpdates>(await link.ReadAsync());
            kinds.AddRange(again.Reports.Select(r => r.Kind));
            await link.SendAsync(new TaskUpdatesResult(again.RequestId, []));
        }

        Assert.Equal([TaskUpdateKind.Accepted, TaskUpdateKind.Finished], kinds);
    }

    [Fact]
    public async Task Worker_RunAsyncCalledTwice_SecondCallRefused()
    {
        using var worker = new Worker(new WorkerOptions { Connection = new ConnectionOptions { Server = "127.0.0.1:1", Token = "x" } }, (_, _) => Task.FromResult(TaskOutcomeReport.Completed()));
        await worker.RunAsync(new CancellationToken(canceled: true));

        await Assert.ThrowsAsync<InvalidOperationException>(() => worker.RunAsync(new CancellationToken(canceled: true)));
    }

    // A coordinator from before the batched worker messages answers RegisterWorker with the 2-field
    // WorkerRegistered: the worker must keep to one TaskUpdate per report, which such a coordinator knows.
    [Fact]
    public async Task Worker_CoordinatorWithoutBatches_ReportsAsSingleTaskUpdates()
    {
        using var coordinator = ScriptedCoordinator.Start();
        await using var worker = new RunningWorker(coordinator.Connection, "w-old", slots: 2, (task, _) => Task.FromResult(TaskOutcomeReport.Completed(task.Payload)));
        await using var link = await coordinator.AcceptAsync();
        Assert.True(link.Register.Batches);
        await link.SendRawAsync(RawFrames.Frame(RawFrames.Body(11, new object[] { link.Register.RequestId, Array.Empty<object>() })));
        await link.SendAsync(new AssignTask(7, "t", [7], 1, false));
        await link.SendAsync(new AssignTask(8, "t", [8], 1, false));

        var reports = new List<(long, TaskUpdateKind)>();
        while (reports.Count < 4)
        {
            var update = Assert.IsType<TaskUpdate>(await link.ReadAsync());
            reports.Add((update.TaskId, update.Kind));
            await link.SendAsync(new OkReply(update.RequestId));
        }

        // Each task's reports in order; the two tasks may interleave.
        Assert.Equal([(7L, TaskUpdateKind.Accepted), (7L, TaskUpdateKind.Finished)], reports.Where(r => r.Item1 == 7));
        Assert.Equal([(8L, TaskUpdateKind.Accepted), (8L, TaskUpdateKind.Finished)], reports.Where(r => r.Item1 == 8));
        Assert.Equal(2, worker.Worker.Completed);
    }

    /// <summary>
    /// A coordinator played by the test over real TCP: each accepted connection is taken through the
    /// handshake (Hello, Welcome, RegisterWorker), and the test answers the registration and the rest.
    /// </summary>
    private sealed class ScriptedCoordinator : IDisposable
    {
        private readonly System.Net.Sockets.TcpListener _listener = new(System.Net.IPAddress.Loopback, 0);

        private ScriptedCoordinator()
        {
            _listener.Start();
            Connection = new ConnectionOptions { Server = $"127.0.0.1:{((System.Net.IPEndPoint)_listener.LocalEndpoint).Port}", Token = "fake", ClientName = "worker" };
        }

        public ConnectionOptions Connection { get; }

        public static ScriptedCoordinator Start() => new();

        public async Task<ScriptedLink> AcceptAsync()
        {
            var link = new ScriptedLink(await _listener.AcceptSocketAsync(Ct));
            await link.HandshakeAsync();
            return link;
        }

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>One worker connection to a <see cref="ScriptedCoordinator"/>, past its handshake.</summary>
    private sealed class ScriptedLink(System.Net.Sockets.Socket socket) : IAsyncDisposable
    {
        private readonly System.Net.Sockets.NetworkStream _stream = new(socket, ownsSocket: true);
        private System.IO.Pipelines.PipeReader? _input;

        public RegisterWorker Register { get; private set; } = null!;

        public async Task HandshakeAsync()
        {
            Assert.IsType<Hello>(await ReadAsync());
            await SendAsync(new Welcome(1, "fake", 60_000, 600_000, ProtocolConstants.DefaultMaxFrame));
            Register = Assert.IsType<RegisterWorker>(await ReadAsync());
        }

        public Task<IMessage> ReadAsync() => ReadFrameAsync(_input ??= System.IO.Pipelines.PipeReader.Create(_stream));

        public ValueTask SendAsync(IMessage message) => SendRawAsync(FrameCodec.EncodeFrame(message));

        public ValueTask SendRawAsync(byte[] frame) => _stream.WriteAsync(frame, Ct);

        public async ValueTask DisposeAsync()
        {
            if (_input is not null)
            {
                await _input.CompleteAsync();
                _input = null;
            }

            await _stream.DisposeAsync();
        }
    }

    // Reads the next frame a worker sends to a scripted coordinator.
    private static async Task<IMessage> ReadFrameAsync(System.IO.Pipelines.PipeReader input)
    {
        while (true)
        {
            var read = await input.ReadAsync(Ct).AsTask().WaitAsync(PipeClient.Patience, Ct);
            var buffer = read.Buffer;
            if (FrameCodec.TryReadFrame(ref buffer, ProtocolConstants.DefaultMaxFrame, out var body, out _) == FrameStatus.Complete)
            {
                var message = FrameCodec.Decode(body);
                input.AdvanceTo(buffer.Start);
                return message;
            }

            Assert.False(read.IsCompleted, "the worker closed the connection");
            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    /// <summary>A <see cref="Worker"/> running in the background, with its log lines readable in order.</summary>
    private sealed class RunningWorker : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Channel<string> _log = Channel.CreateUnbounded<string>();
        private readonly Task _run;

        public RunningWorker(ConnectionOptions connection, string workerId, int slots, TaskHandler handler, TimeProvider? time = null)
        {
            Worker = new Worker(new WorkerOptions
            {
                Connection = connection,
                WorkerId = workerId,
                Name = workerId,
                Types = ["t"],
                Slots = slots,
                MaxReconnectDelay = TimeSpan.FromMilliseconds(200),
                Log = line => _log.Writer.TryWrite(line),
                Time = time ?? TimeProvider.System,
            }, handler);
            _run = Worker.RunAsync(_stop.Token);
        }

        public Worker Worker { get; }

        /// <summary>The log lines written so far that no <see cref="LogAsync"/> has consumed.</summary>
        public List<string> Lines()
        {
            var lines = new List<string>();
            while (_log.Reader.TryRead(out var line))
            {
                lines.Add(line);
            }

            return lines;
        }

        /// <summary>Waits for the next log line that starts with <paramref name="prefix"/>, skipping others.</summary>
        public async Task LogAsync(string prefix)
        {
            while (true)
            {
                var line = await _log.Reader.ReadAsync(Ct).AsTask().WaitAsync(PipeClient.Patience, Ct);
                if (line.StartsWith(prefix, StringComparison.Ordinal))
                {
                    return;
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _run.WaitAsync(PipeClient.Patience);
            Worker.Dispose();
            _stop.Dispose();
        }
    }
}
