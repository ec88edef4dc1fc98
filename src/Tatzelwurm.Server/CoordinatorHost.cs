using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server.Http;

namespace Tatzelwurm.Server;

/// <summary>How the coordinator is hosted: where it listens, where its data lives, its limits.</summary>
public sealed record HostOptions
{
    public IPEndPoint Listen { get; init; } = new(IPAddress.Loopback, 7600);
    public required string DataDirectory { get; init; }
    public int MaxFrame { get; init; } = ProtocolConstants.DefaultMaxFrame;
    public int MaxConnections { get; init; } = 10_000;
    public int OutboundCapacity { get; init; } = 10_000;
    public CoordinatorOptions Coordinator { get; init; } = CoordinatorOptions.Default;

    /// <summary>Where to serve the dashboard, JSON API, /metrics and health (port 0: the OS picks); null: off.</summary>
    public IPEndPoint? Http { get; init; }
}

/// <summary>
/// Runs a coordinator behind a TCP listener. Each accepted socket becomes a <see cref="Session"/> over
/// pipes; the address actually bound (port 0 lets the OS pick) and the token are written to the data
/// directory once connections are accepted.
/// </summary>
public sealed partial class CoordinatorHost : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly HostOptions _options;
    private readonly SessionOptions _sessionOptions;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private readonly HashSet<Task> _connections = [];
    private readonly Lock _connectionsLock = new();
    private Task? _acceptLoop;
    private CoordinatorHttpServer? _http;

    private CoordinatorHost(HostOptions options, Coordinator coordinator, string token, TimeProvider time, ILoggerFactory loggers)
    {
        _options = options;
        Coordinator = coordinator;
        _time = time;
        _loggers = loggers;
        _logger = loggers.CreateLogger<CoordinatorHost>();
        _sessionOptions = new SessionOptions
        {
            Token = token,
            MaxFrame = options.MaxFrame,
            OutboundCapacity = options.OutboundCapacity,
            HeartbeatInterval = options.Coordinator.HeartbeatInterval,
            Lease = options.Coordinator.Lease,
        };
        _listener = new Socket(options.Listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
    }

    public Coordinator Coordinator { get; }

    public IPEndPoint LocalEndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    public string Token => _sessionOptions.Token;

    /// <summary>The HTTP endpoint's base URL, or null when <see cref="HostOptions.Http"/> is off.</summary>
    public Uri? HttpAddress => _http?.Address;

    internal CoordinatorHttpServer? HttpServer => _http;

    public static async Task<CoordinatorHost> StartAsync(HostOptions options, ITaskStore store, TimeProvider time, ILoggerFactory loggers, CancellationToken cancellationToken)
    {
        var token = Protocol.DataDirectory.EnsureToken(options.DataDirectory);
        var coordinator = new Coordinator(store, options.Coordinator, time, loggers.CreateLogger<Coordinator>());
        await coordinator.StartAsync(cancellationToken);
        var host = new CoordinatorHost(options, coordinator, token, time, loggers);
        try
        {
            host._listener.Bind(options.Listen);
            host._listener.Listen(512);
        }
        catch
        {
            await host.DisposeAsync();
            throw;
        }

        host._acceptLoop = Task.Run(host.AcceptLoopAsync, CancellationToken.None);
        var address = $"{host.LocalEndPoint.Address}:{host.LocalEndPoint.Port}";
        Protocol.DataDirectory.WriteAddress(options.DataDirectory, address);
        if (options.Http is { } http)
        {
            try
            {
                host._http = await CoordinatorHttpServer.StartAsync(http, coordinator, host._sessionOptions, time, loggers, cancellationToken);
            }
            catch
            {
                await host.DisposeAsync();
                throw;
            }

            Protocol.DataDirectory.WriteHttpAddress(options.DataDirectory, host._http.Address.ToString().TrimEnd('/'));
        }
        else
        {
            Protocol.DataDirectory.RemoveHttpAddress(options.DataDirectory);
        }

        LogListening(host._logger, address, options.DataDirectory);
        return host;
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptAsync(_stopping.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException ex)
            {
                LogAcceptFailed(_logger, ex.Message);
                continue;
            }

            lock (_connectionsLock)
            {
                if (_connections.Count >= _options.MaxConnections)
                {
                    TatzelwurmMetrics.ConnectionsRefused.Add(1, new KeyValuePair<string, object?>("code", "TooManyConnections"));
                    socket.Dispose();
                    continue;
                }

                var task = Task.Run(() => RunConnectionAsync(socket));
                _connections.Add(task);
                _ = task.ContinueWith(t => { lock (_connectionsLock) { _connections.Remove(t); } }, TaskScheduler.Default);
            }
        }
    }

    private async Task RunConnectionAsync(Socket socket)
    {
        socket.NoDelay = true;
        await using var stream = new NetworkStream(socket, ownsSocket: true);
        var pipe = new SocketPipe(PipeReader.Create(stream), PipeWriter.Create(stream));
        using var session = new Session(pipe, _sessionOptions, Coordinator, _loggers.CreateLogger<Session>(), _time);
        await session.RunAsync(_stopping.Token);
    }

    public async ValueTask DisposeAsync()
    {
        if (_http is not null)
        {
            await _http.DisposeAsync();
        }

        await _stopping.CancelAsync();
        _listener.Dispose();
        if (_acceptLoop is not null)
        {
            await _acceptLoop;
        }

        Task[] connections;
        lock (_connectionsLock)
        {
            connections = [.. _connections];
        }

        await Task.WhenAll(connections);
        await Coordinator.DisposeAsync();
        _stopping.Dispose();
    }

    private sealed record SocketPipe(PipeReader Input, PipeWriter Output) : IDuplexPipe;

    [LoggerMessage(Level = LogLevel.Information, Message = "tatzelwurm listening on {Address}, data in {DataDirectory}")]
    private static partial void LogListening(ILogger logger, string address, string dataDirectory);

    [LoggerMessage(Level = LogLevel.Warning, Message = "accept failed: {Detail}")]
    private static partial void LogAcceptFailed(ILogger logger, string detail);
}
