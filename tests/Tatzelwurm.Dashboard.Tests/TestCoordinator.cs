using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Microsoft.Extensions.Logging;
using Tatzelwurm.Client;
using Tatzelwurm.Core;
using Tatzelwurm.Server;
using Tatzelwurm.Storage;
using Xunit;

// The metrics are process-wide instruments and the machine has two cores: one coordinator at a time.
[assembly: Xunit.v3.Parallelization(Mode = Xunit.Sdk.ParallelMode.None)]

namespace Tatzelwurm.Dashboard.Tests;

/// <summary>
/// A real coordinator in this process: TCP and HTTP on 127.0.0.1 port 0, an in-memory store (whose
/// FailCommit hook simulates a failing disk), a temporary data directory, and every log line kept.
/// </summary>
internal sealed class TestCoordinator : IAsyncDisposable
{
    private readonly List<RunningWorker> _workers = [];

    private TestCoordinator(CoordinatorHost host, InMemoryTaskStore store, string dataDirectory, CapturingLoggerProvider logs)
    {
        Host = host;
        Store = store;
        DataDirectory = dataDirectory;
        Logs = logs;
        // No draining of abandoned responses (an event stream never ends): close at once.
        Http = new HttpClient(new SocketsHttpHandler { ResponseDrainTimeout = TimeSpan.Zero })
        {
            BaseAddress = host.HttpAddress,
            Timeout = TimeSpan.FromSeconds(30),
        };
    }

    public CoordinatorHost Host { get; }

    public InMemoryTaskStore Store { get; }

    public string DataDirectory { get; }

    public CapturingLoggerProvider Logs { get; }

    public HttpClient Http { get; }

    public Uri Url => Host.HttpAddress!;

    public ConnectionOptions Connection => new()
    {
        Server = $"127.0.0.1:{Host.LocalEndPoint.Port}",
        Token = Host.Token,
        ClientName = "dashboard-tests",
    };

    public static async Task<TestCoordinator> StartAsync(bool http = true, CoordinatorOptions? options = null)
    {
        var dataDirectory = Directory.CreateTempSubdirectory("tatzelwurm-dashboard-").FullName;
        var store = new InMemoryTaskStore();
        var logs = new CapturingLoggerProvider();
        var loggers = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        var host = await CoordinatorHost.StartAsync(
            new HostOptions
            {
                Listen = new IPEndPoint(IPAddress.Loopback, 0),
                Http = http ? new IPEndPoint(IPAddress.Loopback, 0) : null,
                DataDirectory = dataDirectory,
                Coordinator = options ?? CoordinatorOptions.Default,
            },
            store, TimeProvider.System, loggers, TestDeadline.Token);
        return new TestCoordinator(host, store, dataDirectory, logs);
    }

    public Task<TatzelwurmClient> ClientAsync() => TatzelwurmClient.ConnectAsync(Connection, TestDeadline.Token);

    public Task<T> QueryAsync<T>(Func<CoordinatorState, T> read) => Host.Coordinator.QueryAsync(read).WaitAsync(Eventually.DefaultTimeout, TestDeadline.Token);

    /// <summary>Starts a worker running <see cref="TestTasks"/>; returns once the coordinator lists it as connected.</summary>
    public async Task<RunningWorker> StartWorkerAsync(string id, int slots, TestTasks tasks, string? name = null, IReadOnlyList<string>? types = null)
    {
        var worker = new RunningWorker(new Worker(
            new WorkerOptions
            {
                Connection = Connection,
                WorkerId = id,
                Name = name ?? id,
                Slots = slots,
                Types = types ?? [],
            },
            tasks.RunAsync));
        _workers.Add(worker);
        await Eventually.TrueAsync(
            () => QueryAsync(s => s.Workers.TryGetValue(id, out var w) && w.Registered && w.Lease == WorkerLease.Connected),
            $"worker {id} registered");
        return worker;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var worker in _workers)
        {
            await worker.DisposeAsync();
        }

        Http.Dispose();
        await Host.DisposeAsync();
        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A <see cref="Worker"/> running until disposed.</summary>
internal sealed class RunningWorker : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _run;

    public RunningWorker(Worker worker)
    {
        Worker = worker;
        _run = Task.Run(() => worker.RunAsync(_stop.Token));
    }

    public Worker Worker { get; }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await _run;
        }
        catch (OperationCanceledException)
        {
        }

        Worker.Dispose();
        _stop.Dispose();
    }
}

/// <summary>
/// What the test workers do, chosen by the payload text: <c>fail</c> fails
/// with exit code 3, <c>hold</c> runs until killed or released, honouring pause; anything else
/// completes with the result <c>result-of-&lt;payload&gt;</c>.
/// </summary>
internal sealed class TestTasks
{
    private readonly ConcurrentDictionary<long, TaskCompletionSource> _held = new();
    private TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public static byte[] Ok => "ok"u8.ToArray();

    public static byte[] Fail => "fail"u8.ToArray();

    public static byte[] Hold => "hold"u8.ToArray();

    /// <summary>Ends every held task (completed).</summary>
    public void ReleaseAll() => Interlocked.Exchange(ref _release, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    public async Task<TaskOutcomeReport> RunAsync(AssignedTask task, TaskControl control)
    {
        switch (Encoding.UTF8.GetString(task.Payload))
        {
            case "fail":
                return TaskOutcomeReport.Failed(3, "failed on purpose");
            case "hold":
                var release = Volatile.Read(ref _release).Task;
                while (!release.IsCompleted)
                {
                    await control.WaitWhilePausedAsync();
                    await Task.WhenAny(release, Task.Delay(Timeout.Infinite, control.Killed));
                    control.Killed.ThrowIfCancellationRequested();
                }

                return TaskOutcomeReport.Completed();
            case var text:
                return TaskOutcomeReport.Completed(Encoding.UTF8.GetBytes("result-of-" + text));
        }
    }
}

/// <summary>Keeps every log line (message, state values, scope values) for assertions.</summary>
internal sealed class CapturingLoggerProvider : ILoggerProvider, ISupportExternalScope
{
    private readonly ConcurrentQueue<string> _lines = new();
    private IExternalScopeProvider _scopes = new LoggerExternalScopeProvider();

    public IReadOnlyCollection<string> Lines => _lines;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _scopes = scopeProvider;

    public void Dispose()
    {
    }

    private sealed class Logger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => owner._scopes.Push(state);

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var line = new StringBuilder($"{logLevel} {category}: {formatter(state, exception)}");
            if (state is IEnumerable<KeyValuePair<string, object?>> values)
            {
                foreach (var (key, value) in values)
                {
                    line.Append($" {key}={value}");
                }
            }

            owner._scopes.ForEachScope((scope, text) =>
            {
                text.Append($" [scope {scope}");
                if (scope is IEnumerable<KeyValuePair<string, object?>> pairs)
                {
                    foreach (var (key, value) in pairs)
                    {
                        text.Append($" {key}={value}");
                    }
                }

                text.Append(']');
            }, line);
            if (exception is not null)
            {
                line.Append(' ').Append(exception);
            }

            owner._lines.Enqueue(line.ToString());
        }
    }
}
