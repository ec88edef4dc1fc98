using System.Collections.Concurrent;
using System.Threading.Channels;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Client;

/// <summary>A task handed to this worker.</summary>
public sealed record AssignedTask(long Id, string Type, byte[] Payload, int Attempt, bool NoReply);

/// <summary>
/// How a handler ended: exit code (0 completed, -1 killed, other failed) and a result or error text. One
/// too large for the coordinator's max_frame is reported as a failure that names the sizes.
/// </summary>
public sealed record TaskOutcomeReport(int ExitCode, byte[]? Result = null, string? Error = null)
{
    /// <summary>Exit code 0 with an optional result payload.</summary>
    public static TaskOutcomeReport Completed(byte[]? result = null) => new(0, result);

    /// <summary>A failure with an exit code other than 0 and -1.</summary>
    public static TaskOutcomeReport Failed(int exitCode, string error) => new(exitCode, null, error);
}

/// <summary>Runs one assigned task; honour <see cref="TaskControl"/> to support pause and kill.</summary>
public delegate Task<TaskOutcomeReport> TaskHandler(AssignedTask task, TaskControl control);

/// <summary>
/// The control surface of a running task. Kill cancels <see cref="Killed"/>; pause holds the task at its
/// next <see cref="WaitWhilePausedAsync"/> or <see cref="WaitWhilePaused"/> checkpoint until play.
/// </summary>
// The kill source and the pause event have no timers or kernel handles, so nothing needs disposing;
// not disposing them lets late controls (a pause arriving as the task ends) stay harmless.
#pragma warning disable CA1001
public sealed class TaskControl
#pragma warning restore CA1001
{
    // Made on first use: most tasks are never paused or killed, and a busy worker starts thousands a
    // second. Pause, play and kill come from the worker's one push loop; the handler only reads.
    private CancellationTokenSource? _kill;
    private ManualResetEventSlim? _running;
    private TaskCompletionSource? _resumed;

    /// <summary>Cancelled when the coordinator kills (or drops) the task.</summary>
    public CancellationToken Killed => KillSource.Token;

    /// <summary>True while the task is paused.</summary>
    public bool IsPaused => Volatile.Read(ref _running) is { IsSet: false };

    internal bool IsKilled => Volatile.Read(ref _kill) is { IsCancellationRequested: true };

    private CancellationTokenSource KillSource
    {
        get
        {
            var kill = Volatile.Read(ref _kill);
            if (kill is null)
            {
                var made = new CancellationTokenSource();
                kill = Interlocked.CompareExchange(ref _kill, made, null) ?? made;
            }

            return kill;
        }
    }

    /// <summary>Completes at once while running; while paused, when played (or throws when killed).</summary>
    public Task WaitWhilePausedAsync() => Volatile.Read(ref _resumed) is { } resumed ? resumed.Task.WaitAsync(Killed) : Task.CompletedTask;

    /// <summary>Blocks the calling thread while paused; throws <see cref="OperationCanceledException"/> when killed.</summary>
    public void WaitWhilePaused()
    {
        if (Volatile.Read(ref _running) is { } running)
        {
            running.Wait(Killed);
        }
        else if (IsKilled)
        {
            throw new OperationCanceledException(Killed);
        }
    }

    internal void Pause()
    {
        if (!IsPaused)
        {
            Volatile.Write(ref _resumed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            if (_running is null)
            {
                Volatile.Write(ref _running, new ManualResetEventSlim(initialState: false));
            }
            else
            {
                _running.Reset();
            }
        }
    }

    internal void Resume()
    {
        _running?.Set();
        Volatile.Read(ref _resumed)?.TrySetResult();
    }

    internal void Kill() => KillSource.Cancel();
}

/// <summary>Identity and capacity of a worker.</summary>
public sealed record WorkerOptions
{
    /// <summary>How to reach the coordinator.</summary>
    public ConnectionOptions Connection { get; init; } = ConnectionOptions.Default;

    /// <summary>Stable identity across reconnects; defaults to host-pid-random.</summary>
    public string WorkerId { get; init; } = $"{Environment.MachineName}-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}";

    /// <summary>Shown in worker lists; defaults to the host name.</summary>
    public string Name { get; init; } = Environment.MachineName;

    /// <summary>Accepted task types; empty accepts every type.</summary>
    public IReadOnlyList<string> Types { get; init; } = [];

    /// <summary>How many tasks run at once.</summary>
    public int Slots { get; init; } = 1;

    /// <summary>Longest wait between reconnect attempts.</summary>
    public TimeSpan MaxReconnectDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Clock for heartbeats and reconnect delays.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>Receives one-line notes about connection changes (for logs); may be null.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// Receives warnings: a task's outcome replaced by a failure because it exceeded the coordinator's
    /// max_frame. Null sends them to <see cref="Log"/>.
    /// </summary>
    public Action<string>? Warning { get; init; }
}

/// <summary>
/// The worker runner: registers, heartbeats on the coordinator's interval independently of the tasks it
/// runs, runs assigned tasks through a handler, reports every state change until acknowledged, obeys
/// pause/play/kill/abandon/drop and drain/stop, and reconnects and reclaims its tasks after a dropped
/// connection or a coordinator restart.
/// </summary>
public sealed class Worker(WorkerOptions options, TaskHandler handler) : IDisposable
{
    private readonly ConcurrentDictionary<long, RunningTask> _tasks = new();
    private static readonly IReadOnlyDictionary<int, ReportFailure> NoFailures = new Dictionary<int, ReportFailure>();

    // A frame of reports is closed at the smaller of this and the coordinator's max_frame (by an upper
    // bound of its size), or at this many reports, well within the coordinator's count limit
    // (ProtocolConstants.MaxReportsPerTaskUpdates); one larger report still goes alone.
    private const int MaxReportBatchBytes = 1 << 20;
    private const int MaxReportBatch = 1024;

    // The pause before a report the coordinator could not persist (StoreUnavailable) goes again.
    private static readonly TimeSpan StoreRetryDelay = TimeSpan.FromMilliseconds(500);

    private readonly CancellationTokenSource _stop = new();
    private readonly Channel<Outgoing> _outgoing = Channel.CreateUnbounded<Outgoing>(new UnboundedChannelOptions { SingleReader = true });
    private volatile Link? _link;
    private volatile bool _stopRequested;
    private int _started;
    private int _running;
    private int _executing;
    private int _maxRunning;
    private long _completed;
    private long _lastHeard;

    private sealed class RunningTask(AssignedTask task)
    {
        public AssignedTask Task { get; } = task;
        public TaskControl Control { get; } = new();
        public bool Paused { get; set; }
        public bool Abandoned { get; set; }
        public bool Dropped { get; set; }

        /// <summary>Guards <see cref="Unacknowledged"/> and <see cref="Acknowledging"/>.</summary>
        public Lock Gate { get; } = new();

        /// <summary>Reports not yet acknowledged, oldest first; re-sent after a reconnect.</summary>
        public List<PendingReport> Unacknowledged { get; } = [];

        /// <summary>True while a loop awaits this task's acknowledgements in order.</summary>
        public bool Acknowledging { get; set; }
    }

    /// <summary>
    /// A report, the connection it was queued for and, once sent, the reply of the frame it went out in
    /// and its index there: the frame's failures by index (a lone TaskUpdate's reply has none).
    /// </summary>
    private sealed class PendingReport(TaskReport update)
    {
        /// <summary>The report as a <see cref="TaskUpdates"/> frame carries it (a lone TaskUpdate adds a request id).</summary>
        public TaskReport Update { get; } = update;
        public Task<IReadOnlyDictionary<int, ReportFailure>>? Reply { get; set; }
        public int Index { get; set; }
        public Connection? Via { get; set; }
    }

    /// <summary>The registered connection, and whether its coordinator takes TaskUpdates.</summary>
    private sealed record Link(Connection Connection, bool Batches);

    private readonly record struct Outgoing(RunningTask Running, PendingReport Report, Link Via);

    /// <summary>The stable identity this worker registers with.</summary>
    public string WorkerId => options.WorkerId;

    /// <summary>Most tasks that ever ran at once (never more than the slots).</summary>
    public int MaxConcurrent => Volatile.Read(ref _maxRunning);

    /// <summary>Tasks this worker ran to termination.</summary>
    public long Completed => Interlocked.Read(ref _completed);

    /// <summary>Tasks held now.</summary>
    public int Running => Volatile.Read(ref _running);

    /// <summary>Releases the stop signal.</summary>
    public void Dispose() => _stop.Dispose();

    /// <summary>
    /// Runs until cancelled, or until the coordinator says stop and the running tasks are done. A worker
    /// runs once: create a new one to run again.
    /// </summary>
    /// <exception cref="InvalidOperationException">RunAsync was called before on this worker.</exception>
    /// <exception cref="FormatException">The coordinator address given is not host:port.</exception>
    /// <exception cref="TatzelwurmException">The coordinator refused the worker for good (token, protocol version, registration too large).</exception>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        // The report queue is completed when a run ends, and a stop from the coordinator stays in force:
        // a second run would lose every report it queued.
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("this worker has already been run; create a new Worker to run again");
        }

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stop.Token);
        var sender = Task.Run(SendLoopAsync, CancellationToken.None);
        try
        {
            await ConnectLoopAsync(linked);
        }
        finally
        {
            _outgoing.Writer.TryComplete();
            await sender;
        }
    }

    private async Task ConnectLoopAsync(CancellationTokenSource linked)
    {
        var delay = TimeSpan.FromMilliseconds(100);
        while (!linked.IsCancellationRequested)
        {
            var connected = false;
            try
            {
                await using var connection = await Connection.ConnectAsync(options.Connection, Roles.Worker, linked.Token);
                connected = true;
                delay = TimeSpan.FromMilliseconds(100);
                await ServeAsync(connection, linked.Token);
            }
            catch (OperationCanceledException) when (linked.IsCancellationRequested)
            {
                break;
            }
            // FrameTooLarge here is the registration itself (its types or held tasks) refused unsent:
            // it would be refused again on every reconnect.
            catch (TatzelwurmException ex) when (ex.Code is ErrorCode.AuthFailed or ErrorCode.UnsupportedVersion or ErrorCode.FrameTooLarge)
            {
                throw;
            }
            catch (Exception ex) when (ex is ConnectionLostException or TatzelwurmException or IOException or System.Net.Sockets.SocketException or OperationCanceledException or InvalidOperationException)
            {
                options.Log?.Invoke($"{(connected ? "connection lost" : "cannot connect")} ({ex.Message}); trying again in {delay.TotalMilliseconds:0} ms");
            }
            finally
            {
                _link = null;
            }

            if (linked.IsCancellationRequested)
            {
                break;
            }

            try
            {
                await Task.Delay(delay, options.Time, linked.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, options.MaxReconnectDelay.Ticks));
        }
    }

    private async Task ServeAsync(Connection connection, CancellationToken cancellationToken)
    {
        var held = _tasks.Values.Where(t => !t.Dropped).Select(t => new HeldTask(t.Task.Id, t.Paused)).ToList();
        var registered = await connection.RequestAsync<WorkerRegistered>(
            id => new RegisterWorker(id, options.WorkerId, options.Name, options.Types, options.Slots, held, Batches: true), cancellationToken: cancellationToken);
        foreach (var id in registered.Drop)
        {
            Forget(id, kill: true);
        }

        _link = new Link(connection, registered.Batches);
        options.Log?.Invoke($"registered as {options.WorkerId} ({held.Count} tasks reclaimed, {registered.Drop.Count} dropped)");

        // Reports that were not acknowledged before the connection dropped go out again, in order.
        foreach (var running in _tasks.Values)
        {
            SendReports(running);
        }

        using var serving = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, connection.Closed);
        Volatile.Write(ref _lastHeard, options.Time.GetTimestamp());
        var heartbeats = HeartbeatAsync(connection, serving);
        try
        {
            await foreach (var push in connection.Pushes.ReadAllAsync(serving.Token))
            {
                // Heartbeat acks arrive as pushes, so a live coordinator is heard at least once an interval.
                Volatile.Write(ref _lastHeard, options.Time.GetTimestamp());
                Handle(push);
                if (_stopRequested && _tasks.IsEmpty)
                {
                    await _stop.CancelAsync();
                }
            }
        }
        finally
        {
            await serving.CancelAsync();
            await heartbeats;
        }

        throw new ConnectionLostException("connection to the coordinator closed");
    }

    // Heartbeats run on their own timer, so a handler that blocks its thread never delays them. A
    // coordinator that stays silent for a whole lease is taken as gone: the connection is dropped
    // and the worker reconnects and reclaims.
    private async Task HeartbeatAsync(Connection connection, CancellationTokenSource serving)
    {
        var interval = TimeSpan.FromMilliseconds(Math.Max(10, connection.Welcome.HeartbeatMs));
        var lease = TimeSpan.FromMilliseconds(Math.Max(2 * interval.TotalMilliseconds, connection.Welcome.LeaseMs));
        using var timer = new PeriodicTimer(interval, options.Time);
        var sequence = 0L;
        try
        {
            while (await timer.WaitForNextTickAsync(serving.Token))
            {
                // A silent network (no FIN, no RST) never closes the socket; without this the worker
                // would wait forever while the coordinator declares it dead and re-queues its tasks.
                if (options.Time.GetElapsedTime(Volatile.Read(ref _lastHeard)) >= lease)
                {
                    options.Log?.Invoke($"coordinator silent for {lease.TotalMilliseconds:0} ms; dropping the connection");
                    await serving.CancelAsync();
                    return;
                }

                connection.Send(new Heartbeat(++sequence));
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ConnectionLostException)
        {
        }
    }

    private void Handle(IMessage push)
    {
        switch (push)
        {
            case AssignTask assign:
                Start(assign);
                break;
            case AssignTasks assigns:
                foreach (var assign in assigns.Tasks)
                {
                    Start(assign);
                }

                break;
            case ControlTask control when _tasks.TryGetValue(control.TaskId, out var running):
                Control(running, control.Action);
                break;
            case DrainNotice drain:
                _stopRequested |= drain.Stop;
                options.Log?.Invoke(drain.Stop ? "asked to stop: finishing running tasks" : "drained: no new tasks");
                if (_stopRequested && _tasks.IsEmpty)
                {
                    _stop.Cancel();
                }

                break;
        }
    }

    private void Start(AssignTask assign)
    {
        var task = new AssignedTask(assign.TaskId, assign.Type, assign.Payload, assign.Attempt, assign.NoReply);
        var running = new RunningTask(task);
        if (!_tasks.TryAdd(task.Id, running))
        {
            return;
        }

        Interlocked.Increment(ref _running);
        Report(running, TaskUpdateKind.Accepted);
        // On the thread pool, so a handler that blocks its thread never holds up the push loop; queued
        // directly rather than with Task.Run, which would add a closure, a task and its unwrapping
        // proxy to every task.
        ThreadPool.QueueUserWorkItem(static state => _ = state.Worker.ExecuteAsync(state.Running), (Worker: this, Running: running), preferLocal: true);
    }

    private async Task ExecuteAsync(RunningTask running)
    {
        // Peak concurrency counts handlers actually executing. A finished task stays in _running
        // until its Finished report is acknowledged, and the acknowledgement can be processed
        // after the next assignment that the freed slot allowed, so _running may briefly exceed
        // the slots without any task running beyond them.
        var now = Interlocked.Increment(ref _executing);
        for (var max = Volatile.Read(ref _maxRunning); now > max; max = Volatile.Read(ref _maxRunning))
        {
            Interlocked.CompareExchange(ref _maxRunning, now, max);
        }

        TaskOutcomeReport outcome;
        try
        {
            outcome = await handler(running.Task, running.Control);
        }
        catch (OperationCanceledException) when (running.Control.IsKilled)
        {
            outcome = new TaskOutcomeReport(-1, null, "killed");
        }
        catch (Exception ex)
        {
            outcome = TaskOutcomeReport.Failed(1, $"{ex.GetType().Name}: {ex.Message}");
        }

        // Before the report goes out: once the coordinator has it, it may fill the slot again.
        Interlocked.Decrement(ref _executing);
        Finish(running, outcome);
    }

    private void Control(RunningTask running, ControlAction action)
    {
        switch (action)
        {
            case ControlAction.Pause:
                running.Control.Pause();
                running.Paused = true;
                Report(running, TaskUpdateKind.Paused);
                break;
            case ControlAction.Play:
                running.Control.Resume();
                running.Paused = false;
                Report(running, TaskUpdateKind.Resumed);
                break;
            case ControlAction.Kill:
                running.Control.Kill();
                break;
            case ControlAction.Abandon:
                // The task did not stop in time: report it killed now and ignore whatever it does later.
                running.Abandoned = true;
                running.Control.Kill();
                Report(running, TaskUpdateKind.Finished, -1, null, "abandoned after an unconfirmed kill");
                break;
            case ControlAction.Drop:
                Forget(running.Task.Id, kill: true);
                break;
        }
    }

    private void Finish(RunningTask running, TaskOutcomeReport outcome)
    {
        if (running.Dropped || running.Abandoned)
        {
            Release(running);
            return;
        }

        Interlocked.Increment(ref _completed);
        Report(running, TaskUpdateKind.Finished, outcome.ExitCode, outcome.Result, outcome.Error);
    }

    private void Report(RunningTask running, TaskUpdateKind kind, int exitCode = 0, byte[]? result = null, string? error = null)
    {
        lock (running.Gate)
        {
            running.Unacknowledged.Add(new PendingReport(new TaskReport(running.Task.Id, kind, exitCode, result, error)));
        }

        SendReports(running);
    }

    // A task's reports are queued at once and in order, without waiting for the previous one's
    // acknowledgement: the coordinator applies one connection's frames in order, so a Finished right
    // behind an Accepted is still applied after it, and the two usually share one store commit instead
    // of costing one each. The send loop puts whatever is queued when it runs into one TaskUpdates frame.
    // Acknowledgements are then taken in order by AcknowledgeAsync; a report is forgotten only once
    // acknowledged, and a lost connection leaves it to be queued again after the next registration
    // (which calls this again).
    private void SendReports(RunningTask running)
    {
        var link = _link;
        if (link is null)
        {
            return;
        }

        List<string>? replaced = null;
        lock (running.Gate)
        {
            for (var i = 0; i < running.Unacknowledged.Count; i++)
            {
                var pending = running.Unacknowledged[i];
                if (!ReferenceEquals(pending.Via, link.Connection))
                {
                    if (!Oversize.Fits(pending.Update, link.Connection.Welcome.MaxFrame))
                    {
                        pending = running.Unacknowledged[i] = Shrink(pending.Update, link.Connection.Welcome.MaxFrame);
                        (replaced ??= []).Add(pending.Update.Error!);
                    }

                    pending.Via = link.Connection;
                    pending.Reply = null;
                    if (!_outgoing.Writer.TryWrite(new Outgoing(running, pending, link)))
                    {
                        // The run is ending: the report stays unsent (and unacknowledged).
                        pending.Via = null;
                        break;
                    }
                }
            }
        }

        foreach (var error in replaced ?? [])
        {
            (options.Warning ?? options.Log)?.Invoke($"task {running.Task.Id}: reported failed: {error}");
        }

        Acknowledge(running);
    }

    // A report beyond the coordinator's max_frame would close the connection, be re-sent after the
    // reconnect and close it again, for ever, with the task never ending. It becomes a failure that
    // fits and says why: a completed outcome fails with 1 (as a throwing handler does), a failed or
    // killed one keeps its code. Only a Finished carries a result or error text to be too large.
    private static PendingReport Shrink(TaskReport update, int maxFrame) => new(update with
    {
        ExitCode = update.ExitCode == 0 ? 1 : update.ExitCode,
        Result = null,
        Error = Oversize.Describe("result", update.Result, update.Error, maxFrame),
    });

    // Starts the in-order acknowledgement loop once the oldest report has been sent.
    private void Acknowledge(RunningTask running)
    {
        lock (running.Gate)
        {
            if (running.Acknowledging || running.Unacknowledged.Count == 0 || running.Unacknowledged[0].Reply is null)
            {
                return;
            }

            running.Acknowledging = true;
        }

        _ = AcknowledgeAsync(running);
    }

    // The only sender of reports, so frames leave in queue order. It never waits for an acknowledgement:
    // when idle a lone report leaves as soon as it is queued; under load the reports queued while the
    // previous frame was written go out together, one frame and one reply for many tasks.
    private async Task SendLoopAsync()
    {
        var reader = _outgoing.Reader;
        var batch = new List<Outgoing>();
        while (await reader.WaitToReadAsync())
        {
            long bytes = WireSize.Envelope;
            while (reader.TryPeek(out var next))
            {
                var size = WireSize.Report(next.Report.Update);
                if (batch.Count > 0 && (!ReferenceEquals(batch[0].Via, next.Via) || batch.Count == MaxReportBatch || bytes + size > BatchLimit(next.Via)))
                {
                    break;
                }

                reader.TryRead(out _);
                if (!next.Running.Dropped && ReferenceEquals(next.Report.Via, next.Via.Connection))
                {
                    batch.Add(next);
                    bytes += size;
                }
            }

            if (batch.Count > 0)
            {
                Send(batch);
                batch.Clear();
            }
        }
    }

    // A frame beyond the coordinator's max_frame (which `tatzelwurm --max-frame` can set far below the
    // default) is refused unsent by the connection, so a batch sized for the default would lose its
    // reports. A lone report is within the limit already (SendReports).
    private static long BatchLimit(Link via) => Math.Min(MaxReportBatchBytes, via.Connection.Welcome.MaxFrame);

    private void Send(List<Outgoing> batch)
    {
        var via = batch[0].Via;
        Task<IReadOnlyDictionary<int, ReportFailure>>? shared = null;
        if (via.Batches)
        {
            var reports = new TaskReport[batch.Count];
            for (var i = 0; i < batch.Count; i++)
            {
                reports[i] = batch[i].Report.Update;
            }

            shared = SendBatchAsync(via.Connection, reports);
        }

        for (var i = 0; i < batch.Count; i++)
        {
            var (running, pending, _) = batch[i];
            var reply = shared ?? SendOneAsync(via.Connection, pending.Update);
            lock (running.Gate)
            {
                // Queued again for a newer connection meanwhile: that copy's reply is the one to wait for.
                if (!ReferenceEquals(pending.Via, via.Connection) || pending.Reply is not null)
                {
                    continue;
                }

                pending.Reply = reply;
                pending.Index = i;
            }
        }

        foreach (var (running, _, _) in batch)
        {
            Acknowledge(running);
        }
    }

    // Indexed once per frame, so each of its tasks finds its own failure without a scan.
    private static async Task<IReadOnlyDictionary<int, ReportFailure>> SendBatchAsync(Connection connection, TaskReport[] reports)
    {
        var result = await connection.RequestAsync<TaskUpdatesResult>(id => new TaskUpdates(id, reports));
        if (result.Failed.Count == 0)
        {
            return NoFailures;
        }

        var failures = new Dictionary<int, ReportFailure>(result.Failed.Count);
        foreach (var failure in result.Failed)
        {
            failures.TryAdd(failure.Index, failure);
        }

        return failures;
    }

    // A coordinator without TaskUpdates gets one TaskUpdate per report, as before.
    private static async Task<IReadOnlyDictionary<int, ReportFailure>> SendOneAsync(Connection connection, TaskReport report)
    {
        await connection.RequestAsync<OkReply>(id => new TaskUpdate(id, report.TaskId, report.Kind, report.ExitCode, report.Result, report.Error));
        return NoFailures;
    }

    // Fire and forget, one loop per task at a time, taking its acknowledgements in order. It returns
    // once it has cleared Acknowledging itself (under the gate, together with the check that nothing is
    // left to wait for, so a report sent meanwhile starts a new loop); whatever else ends it clears the
    // flag too, so a later report of the task starts a new loop instead of waiting behind a dead one.
    // One method rather than a wrapper around the loop: a task's reports cost one state machine.
    private async Task AcknowledgeAsync(RunningTask running)
    {
        try
        {
            while (true)
            {
                PendingReport head;
                Task<IReadOnlyDictionary<int, ReportFailure>> reply;
                int index;
                lock (running.Gate)
                {
                    if (running.Unacknowledged.Count == 0 || running.Unacknowledged[0].Reply is null)
                    {
                        running.Acknowledging = false;
                        return;
                    }

                    head = running.Unacknowledged[0];
                    reply = head.Reply!;
                    index = head.Index;
                }

                var update = head.Update;
                var via = head.Via;
                try
                {
                    if ((await reply).TryGetValue(index, out var failure))
                    {
                        throw new TatzelwurmException(failure.Code, failure.Message);
                    }
                }
                catch (TatzelwurmException ex) when (ex.Code is ErrorCode.IllegalTransition or ErrorCode.UnknownTask)
                {
                    // The coordinator no longer gives this task to us (killed, re-queued, purged): drop the report.
                    options.Log?.Invoke($"task {update.TaskId}: {ex.Message}");
                }
                catch (TatzelwurmException ex) when (ex.Code == ErrorCode.StoreUnavailable)
                {
                    // Not persisted: keep it and send it again shortly, and with it every later report of
                    // the task. Those were sent behind it and may have been refused only because it was not
                    // applied yet (the store recovering in between); one that was applied is refused as
                    // illegal when it comes again, and dropped like any such report.
                    var pause = Task.Delay(StoreRetryDelay, options.Time);
                    options.Log?.Invoke($"task {update.TaskId}: {update.Kind} not persisted ({ex.Message}); sending it again shortly");
                    await pause;
                    lock (running.Gate)
                    {
                        foreach (var pending in running.Unacknowledged)
                        {
                            pending.Via = null;
                            pending.Reply = null;
                        }

                        running.Acknowledging = false;
                    }

                    SendReports(running);
                    return;
                }
                catch (TatzelwurmException ex)
                {
                    // Any other refusal (Internal, InvalidRequest, ...) was not applied and would only be
                    // refused again if re-sent: drop it like a refused report, so the task's later reports
                    // are still acknowledged.
                    options.Log?.Invoke($"task {update.TaskId}: {update.Kind} not applied ({ex.Code}): {ex.Message}");
                }
                catch (ConnectionLostException)
                {
                    lock (running.Gate)
                    {
                        running.Acknowledging = false;
                    }

                    // Registration on the next connection sends what is left. If that already happened (the
                    // report was re-sent while we waited for the lost copy), acknowledge from here.
                    if (!ReferenceEquals(head.Via, via) || (_link is { } current && !ReferenceEquals(current.Connection, via)))
                    {
                        SendReports(running);
                    }

                    return;
                }

                lock (running.Gate)
                {
                    if (running.Unacknowledged.Count > 0 && ReferenceEquals(running.Unacknowledged[0], head))
                    {
                        running.Unacknowledged.RemoveAt(0);
                    }
                }

                if (update.Kind == TaskUpdateKind.Finished)
                {
                    Release(running);
                }
            }
        }
        catch (Exception ex)
        {
            // The flag first: a log callback that throws must not leave the task's reports unacknowledged.
            lock (running.Gate)
            {
                running.Acknowledging = false;
            }

            options.Log?.Invoke($"task {running.Task.Id}: acknowledging reports failed ({ex.GetType().Name}: {ex.Message})");
        }
    }

    private void Forget(long taskId, bool kill)
    {
        if (_tasks.TryGetValue(taskId, out var running))
        {
            running.Dropped = true;
            lock (running.Gate)
            {
                running.Unacknowledged.Clear();
            }

            if (kill)
            {
                running.Control.Kill();
            }

            Release(running);
        }
    }

    private void Release(RunningTask running)
    {
        // Remove this run only: a dropped run that ends late must not remove a new run of the same task.
        if (_tasks.TryRemove(new KeyValuePair<long, RunningTask>(running.Task.Id, running)))
        {
            Interlocked.Decrement(ref _running);
        }
    }
}
