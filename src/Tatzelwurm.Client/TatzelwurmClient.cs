using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Client;

/// <summary>The outcome of a task: its exit code and result payload or error text.</summary>
public sealed record TaskResult(long TaskId, int ExitCode, byte[]? Result, string? Error, int Layers)
{
    /// <summary>True for exit code 0.</summary>
    public bool Completed => ExitCode == 0;
}

/// <summary>What an RPC handler answers.</summary>
public sealed record RpcReply(byte[] Payload);

/// <summary>A broadcast as received.</summary>
public sealed record BroadcastMessage(string Namespace, byte[] Body, string? Sender, string? Subject, string? CorrelationId);

/// <summary>
/// The actioner API (and what workers share with it): add and control tasks, read the tables, wait for
/// results, RPC and broadcast. One connection; safe for concurrent use.
/// </summary>
public sealed class TatzelwurmClient : IAsyncDisposable
{
    private readonly Connection _connection;
    private readonly AddCoalescer _adds;
    private readonly ConcurrentDictionary<(string, string), Func<byte[], CancellationToken, Task<byte[]>>> _rpcHandlers = new();
    private readonly ConcurrentDictionary<string, Channel<BroadcastMessage>> _subscriptions = new();
    private readonly ConcurrentDictionary<long, Channel<TaskEvent>> _watchers = new();
    private readonly Task _dispatch;
    private long _nextSubscription;

    private TatzelwurmClient(Connection connection)
    {
        _connection = connection;
        _adds = new AddCoalescer(connection);
        _dispatch = Task.Run(DispatchAsync);
    }

    /// <summary>The underlying connection.</summary>
    public Connection Connection => _connection;

    /// <summary>Connects as an actioner.</summary>
    public static async Task<TatzelwurmClient> ConnectAsync(ConnectionOptions? options = null, CancellationToken cancellationToken = default) =>
        new(await Connection.ConnectAsync(options ?? ConnectionOptions.Default, Roles.Actioner, cancellationToken));

    /// <summary>
    /// Adds tasks; returns their ids, in the order of <paramref name="tasks"/>, once they are durable.
    /// Concurrent calls share AddTasks requests; each still gets only its own ids and its own errors.
    /// </summary>
    public Task<IReadOnlyList<long>> AddAsync(IReadOnlyList<TaskSpec> tasks, CancellationToken cancellationToken = default) =>
        tasks is null or { Count: 0 } ? AddNothingAsync(tasks, cancellationToken) : _adds.AddAsync(tasks, cancellationToken);

    // Sent on its own, never coalesced (it would vanish in a batch): the coordinator refuses it.
    private async Task<IReadOnlyList<long>> AddNothingAsync(IReadOnlyList<TaskSpec>? tasks, CancellationToken cancellationToken) =>
        (await _connection.RequestAsync<TasksAdded>(id => new AddTasks(id, tasks!), cancellationToken: cancellationToken)).Ids;

    /// <summary>Adds one ready task of <paramref name="type"/>.</summary>
    public Task<long> AddAsync(byte[] payload, string type, int priority = 0, IReadOnlyList<string>? tags = null,
        DeliveryPolicy policy = DeliveryPolicy.Default, bool ready = true, bool noReply = false, CancellationToken cancellationToken = default) =>
        _adds.AddOneAsync(new TaskSpec(payload, type, priority, tags ?? [], policy, ready, noReply), cancellationToken);

    /// <summary>Plays, pauses or kills tasks (or with <paramref name="all"/> every task the action applies to).</summary>
    public Task<ControlResult> ControlAsync(TaskAction action, IReadOnlyList<long> ids, bool all = false, CancellationToken cancellationToken = default) =>
        _connection.RequestAsync<ControlResult>(id => new ControlTasks(id, action, ids, all), cancellationToken: cancellationToken);

    /// <summary>One page of tasks in id order after <paramref name="afterId"/>.</summary>
    public Task<TaskList> ListAsync(int? state = null, string? type = null, string? tag = null, string? worker = null,
        long afterId = 0, int limit = 1000, CancellationToken cancellationToken = default) =>
        _connection.RequestAsync<TaskList>(id => new ListTasks(id, state, type, tag, worker, afterId, limit), cancellationToken: cancellationToken);

    /// <summary>Every task matching the filter, page by page.</summary>
    public async IAsyncEnumerable<TaskInfo> ListAllAsync(int? state = null, string? type = null, string? tag = null, string? worker = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var after = 0L;
        while (true)
        {
            var page = await ListAsync(state, type, tag, worker, after, 5000, cancellationToken);
            foreach (var task in page.Tasks)
            {
                yield return task;
            }

            if (page.Tasks.Count < 5000)
            {
                yield break;
            }

            after = page.Tasks[^1].Id;
        }
    }

    /// <summary>One task with its history.</summary>
    public async Task<TaskInfo> ShowAsync(long taskId, CancellationToken cancellationToken = default) =>
        (await _connection.RequestAsync<TaskDetail>(id => new ShowTask(id, taskId), cancellationToken: cancellationToken)).Task;

    /// <summary>The worker table.</summary>
    public async Task<IReadOnlyList<WorkerInfo>> WorkersAsync(CancellationToken cancellationToken = default) =>
        (await _connection.RequestAsync<WorkerList>(id => new ListWorkers(id), cancellationToken: cancellationToken)).Workers;

    /// <summary>Drains, stops or undrains a worker by id or name.</summary>
    public Task CommandWorkerAsync(string worker, WorkerAction action, CancellationToken cancellationToken = default) =>
        _connection.RequestAsync<OkReply>(id => new WorkerCommand(id, worker, action), cancellationToken: cancellationToken);

    /// <summary>Sets (or with null removes) a tag's concurrency limit.</summary>
    public Task SetTagLimitAsync(string tag, int? limit, CancellationToken cancellationToken = default) =>
        _connection.RequestAsync<OkReply>(id => new SetTagLimit(id, tag, limit), cancellationToken: cancellationToken);

    /// <summary>The tag limits with their running counts.</summary>
    public async Task<IReadOnlyList<TagLimitInfo>> TagLimitsAsync(CancellationToken cancellationToken = default) =>
        (await _connection.RequestAsync<TagLimitList>(id => new ListTagLimits(id), cancellationToken: cancellationToken)).Limits;

    /// <summary>
    /// Waits for a task to terminate. <paramref name="layer"/> is called for each "result to follow" layer
    /// the worker reports first (kiwipy's nested futures).
    /// </summary>
    public async Task<TaskResult> WaitAsync(long taskId, Action<int>? layer = null, CancellationToken cancellationToken = default)
    {
        var outcome = await _connection.RequestAsync<TaskOutcome>(id => new WaitTask(id, taskId), layer, cancellationToken);
        return new TaskResult(outcome.TaskId, outcome.ExitCode, outcome.Result, outcome.Error, outcome.Layers);
    }

    /// <summary>Streams task state changes (optionally of one type or tag) until cancelled.</summary>
    public async IAsyncEnumerable<TaskEvent> WatchAsync(string? type = null, string? tag = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var key = Interlocked.Increment(ref _nextSubscription);
        var channel = Channel.CreateUnbounded<TaskEvent>();
        _watchers[key] = channel;
        try
        {
            await _connection.RequestAsync<OkReply>(id => new WatchTasks(id, type, tag), cancellationToken: cancellationToken);
            // The coordinator filters; several watches on one connection each see every event they asked for.
            await foreach (var change in channel.Reader.ReadAllAsync(cancellationToken))
            {
                if (type is null || change.Type == type)
                {
                    yield return change;
                }
            }
        }
        finally
        {
            _watchers.TryRemove(key, out _);
        }
    }

    /// <summary>Registers an RPC identifier; once this returns, calls to it reach <paramref name="handler"/>. Dispose to unregister.</summary>
    public async Task<IAsyncDisposable> RegisterRpcAsync(string ns, string identifier, Func<byte[], CancellationToken, Task<byte[]>> handler, CancellationToken cancellationToken = default)
    {
        _rpcHandlers[(ns, identifier)] = handler;
        try
        {
            await _connection.RequestAsync<OkReply>(id => new RpcRegister(id, ns, identifier), cancellationToken: cancellationToken);
        }
        catch
        {
            _rpcHandlers.TryRemove((ns, identifier), out _);
            throw;
        }

        return new Registration(async () =>
        {
            await _connection.RequestAsync<OkReply>(id => new RpcUnregister(id, ns, identifier));
            _rpcHandlers.TryRemove((ns, identifier), out _);
        });
    }

    /// <summary>Calls an RPC identifier; throws <see cref="TatzelwurmException"/> with Unroutable at once if nobody holds it.</summary>
    public async Task<byte[]> CallAsync(string ns, string identifier, byte[] payload, Action<int>? layer = null, CancellationToken cancellationToken = default)
    {
        var result = await _connection.RequestAsync<RpcResult>(id => new RpcCall(id, ns, identifier, payload), layer, cancellationToken);
        return result.Ok ? result.Payload ?? [] : throw new RemoteException(result.Error ?? "");
    }

    /// <summary>Sends a broadcast; returns once the coordinator accepted it.</summary>
    public Task BroadcastAsync(string ns, byte[] body, string? sender = null, string? subject = null, string? correlationId = null, CancellationToken cancellationToken = default) =>
        _connection.RequestAsync<OkReply>(id => new Broadcast(id, ns, body, sender, subject, correlationId), cancellationToken: cancellationToken);

    /// <summary>Subscribes to broadcasts, filtered on the coordinator; yields them until cancelled.</summary>
    public async IAsyncEnumerable<BroadcastMessage> SubscribeAsync(string ns, BroadcastFilter? sender = null, BroadcastFilter? subject = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var subscription = "s" + Interlocked.Increment(ref _nextSubscription);
        var channel = Channel.CreateUnbounded<BroadcastMessage>();
        _subscriptions[subscription] = channel;
        try
        {
            await _connection.RequestAsync<OkReply>(id => new Subscribe(id, ns, subscription, sender, subject), cancellationToken: cancellationToken);
            await foreach (var message in channel.Reader.ReadAllAsync(cancellationToken))
            {
                yield return message;
            }
        }
        finally
        {
            _subscriptions.TryRemove(subscription, out _);
            if (!_connection.Closed.IsCancellationRequested)
            {
                try
                {
                    await _connection.RequestAsync<OkReply>(id => new Unsubscribe(id, ns, subscription), cancellationToken: CancellationToken.None);
                }
                catch (Exception ex) when (ex is TatzelwurmException or ConnectionLostException)
                {
                }
            }
        }
    }

    private async Task DispatchAsync()
    {
        await foreach (var push in _connection.Pushes.ReadAllAsync())
        {
            switch (push)
            {
                case RpcDelivery delivery:
                    _ = AnswerAsync(delivery);
                    break;
                case BroadcastDelivery broadcast:
                    foreach (var id in broadcast.Subscriptions)
                    {
                        if (_subscriptions.TryGetValue(id, out var channel))
                        {
                            channel.Writer.TryWrite(new BroadcastMessage(broadcast.Namespace, broadcast.Body, broadcast.Sender, broadcast.Subject, broadcast.CorrelationId));
                        }
                    }

                    break;
                case TaskEvent change:
                    foreach (var watcher in _watchers.Values)
                    {
                        watcher.Writer.TryWrite(change);
                    }

                    break;
            }
        }

        foreach (var channel in _subscriptions.Values)
        {
            channel.Writer.TryComplete(new ConnectionLostException("connection to the coordinator lost"));
        }

        foreach (var channel in _watchers.Values)
        {
            channel.Writer.TryComplete(new ConnectionLostException("connection to the coordinator lost"));
        }
    }

    private async Task AnswerAsync(RpcDelivery delivery)
    {
        RpcResponse response;
        if (!_rpcHandlers.TryGetValue((delivery.Namespace, delivery.Identifier), out var handler))
        {
            response = new RpcResponse(delivery.CallId, RpcResponseKind.Error, null, $"no handler for '{delivery.Identifier}'");
        }
        else
        {
            try
            {
                response = new RpcResponse(delivery.CallId, RpcResponseKind.Value, await handler(delivery.Payload, _connection.Closed), null);
            }
            catch (Exception ex)
            {
                response = new RpcResponse(delivery.CallId, RpcResponseKind.Error, null, $"{ex.GetType().Name}: {ex.Message}");
            }
        }

        try
        {
            try
            {
                _connection.Send(response);
            }
            catch (TatzelwurmException ex) when (ex.Code == ErrorCode.FrameTooLarge)
            {
                // Unsent, the caller would wait until this connection closes: it gets the reason instead.
                _connection.Send(response with
                {
                    Kind = RpcResponseKind.Error,
                    Payload = null,
                    Error = Oversize.Describe("RPC result", response.Payload, response.Error, _connection.Welcome.MaxFrame),
                });
            }
        }
        catch (ConnectionLostException)
        {
        }
    }

    /// <summary>Closes the connection.</summary>
    public async ValueTask DisposeAsync()
    {
        await _connection.DisposeAsync();
        await _dispatch;
    }

    private sealed class Registration(Func<Task> dispose) : IAsyncDisposable
    {
        private int _disposed;

        public async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                await dispose();
            }
        }
    }
}

/// <summary>The RPC recipient or a task's worker reported an error; only its text crosses the wire.</summary>
public sealed class RemoteException(string message) : Exception(message);
