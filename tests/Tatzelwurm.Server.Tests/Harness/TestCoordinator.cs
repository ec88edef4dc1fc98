using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using Tatzelwurm.Storage;
using Xunit;

namespace Tatzelwurm.Server.Tests.Harness;

/// <summary>
/// A coordinator on an <see cref="InMemoryTaskStore"/> and a <see cref="FakeTimeProvider"/>, with sessions
/// over in-memory pipes. Nothing here runs on a timer unless the test advances <see cref="Time"/>.
/// </summary>
internal sealed class TestCoordinator : IAsyncDisposable
{
    public const string Token = "test-token";

    private readonly CancellationTokenSource _stop = new();
    private readonly List<PipeClient> _clients = [];

    private TestCoordinator(InMemoryTaskStore store, FakeTimeProvider time, Coordinator coordinator, SessionOptions sessionOptions)
    {
        Store = store;
        Time = time;
        Coordinator = coordinator;
        SessionOptions = sessionOptions;
    }

    public InMemoryTaskStore Store { get; }

    public FakeTimeProvider Time { get; }

    public Coordinator Coordinator { get; }

    public SessionOptions SessionOptions { get; }

    public static async Task<TestCoordinator> StartAsync(
        CoordinatorOptions? options = null, Func<SessionOptions, SessionOptions>? configure = null, InMemoryTaskStore? store = null)
    {
        options ??= CoordinatorOptions.Default;
        store ??= new InMemoryTaskStore();
        var time = new FakeTimeProvider();
        var sessionOptions = new SessionOptions
        {
            Token = Token,
            MaxFrame = 4096,
            HeartbeatInterval = options.HeartbeatInterval,
            Lease = options.Lease,
        };
        sessionOptions = configure?.Invoke(sessionOptions) ?? sessionOptions;
        var coordinator = new Coordinator(store, options, time, NullLogger<Coordinator>.Instance);
        await coordinator.StartAsync(TestContext.Current.CancellationToken);
        return new TestCoordinator(store, time, coordinator, sessionOptions);
    }

    /// <summary>
    /// Opens a connection without a handshake. <see cref="Session.RunAsync"/> is called on this thread, so by
    /// the time this returns the session waits for its first frame and its handshake timer is armed.
    /// </summary>
    public PipeClient Open(PipeOptions? toClientOptions = null, SessionOptions? sessionOptions = null)
    {
        var toServer = new Pipe();
        var toClient = new Pipe(toClientOptions ?? PipeOptions.Default);
        var session = new Session(new DuplexPipe(toServer.Reader, toClient.Writer), sessionOptions ?? SessionOptions, Coordinator, NullLogger.Instance, Time);
        var run = RunAsync(session, session.RunAsync(_stop.Token));
        var client = new PipeClient(toClient.Reader, toServer.Writer, run);
        _clients.Add(client);
        return client;

        static async Task RunAsync(Session session, Task run)
        {
            try
            {
                await run;
            }
            finally
            {
                session.Dispose();
            }
        }
    }

    public async Task<PipeClient> ConnectAsync(string role = Roles.Actioner, PipeOptions? toClientOptions = null, SessionOptions? sessionOptions = null)
    {
        var client = Open(toClientOptions, sessionOptions);
        await client.SendAsync(new Hello(ProtocolConstants.Version, role, Token, "server-tests"));
        await client.ReceiveAsync<Welcome>();
        return client;
    }

    /// <summary>Connects and registers a worker; returns once the registration is durable.</summary>
    public async Task<PipeClient> ConnectWorkerAsync(string workerId, int slots = 1, params string[] types)
    {
        var client = await ConnectAsync(Roles.Worker);
        var registered = await client.RequestAsync<WorkerRegistered>(id => new RegisterWorker(id, workerId, workerId, types, slots, []));
        Assert.Empty(registered.Drop);
        return client;
    }

    /// <summary>Runs a read on the coordinator loop after everything posted before it.</summary>
    public Task<T> QueryAsync<T>(Func<CoordinatorState, T> read) => Coordinator.QueryAsync(read).WaitAsync(PipeClient.Patience);

    public Task<TaskRecord> TaskAsync(long id) => QueryAsync(state => state.Tasks[id]);

    /// <summary>
    /// Waits until the loop has heard from the store writer that a commit failed. The writer posts that
    /// as soon as the commit throws; each probe here is a round trip through the loop, not a timer.
    /// </summary>
    public async Task UntilStoreFailingAsync()
    {
        using var deadline = new CancellationTokenSource(PipeClient.Patience);
        while (await QueryAsync(_ => Coordinator.StoreHealthy))
        {
            deadline.Token.ThrowIfCancellationRequested();
            await Task.Yield();
        }
    }

    /// <summary>
    /// Waits until the loop has handled a worker's disconnect. The client sees its connection closed
    /// before the session's close reaches the loop, and the grace period counts from the latter, so
    /// a test that advances the clock must wait for it; each probe is a round trip through the loop.
    /// </summary>
    public async Task UntilDisconnectedAsync(string workerId)
    {
        using var deadline = new CancellationTokenSource(PipeClient.Patience);
        while (await QueryAsync(state => state.Workers.TryGetValue(workerId, out var worker) && worker.Connection is not null))
        {
            deadline.Token.ThrowIfCancellationRequested();
            await Task.Yield();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        foreach (var client in _clients)
        {
            await client.DisposeAsync();
            await client.SessionTask.WaitAsync(PipeClient.Patience);
        }

        await Coordinator.DisposeAsync();
        _stop.Dispose();
    }

    private sealed record DuplexPipe(PipeReader Input, PipeWriter Output) : IDuplexPipe;
}

/// <summary>Task specs and small request helpers shared by the tests.</summary>
internal static class Specs
{
    public static TaskSpec New(string type = "t", bool ready = true, bool noReply = false, int priority = 0, byte[]? payload = null, params string[] tags) =>
        new(payload ?? [1, 2, 3], type, priority, tags, Protocol.DeliveryPolicy.Default, ready, noReply);

    public static async Task<long> AddAsync(this PipeClient client, TaskSpec? spec = null) =>
        (await client.RequestAsync<TasksAdded>(id => new AddTasks(id, [spec ?? New()]))).Ids.Single();

    public static async Task<IReadOnlyList<long>> AddManyAsync(this PipeClient client, int count, string type = "t") =>
        (await client.RequestAsync<TasksAdded>(id => new AddTasks(id, Enumerable.Range(0, count).Select(_ => New(type)).ToList()))).Ids;

    /// <summary>Sends a worker's report and expects it acknowledged.</summary>
    public static Task ReportAsync(this PipeClient worker, long taskId, TaskUpdateKind kind, int exitCode = 0, byte[]? result = null, string? error = null) =>
        worker.RequestAsync<OkReply>(id => new TaskUpdate(id, taskId, kind, exitCode, result, error));

    public static async Task<IReadOnlyList<TaskInfo>> ListAllAsync(this PipeClient client) =>
        (await client.RequestAsync<TaskList>(id => new ListTasks(id, null, null, null, null, 0, 10_000))).Tasks;
}
