using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Tatzelwurm.App;
using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using Tatzelwurm.Server;
using Tatzelwurm.Storage;

// tatzelwurm: the coordinator. Every setting comes from a flag, else the environment variable
// TATZELWURM_<NAME> (e.g. TATZELWURM_LISTEN), else <data>/tatzelwurm.json, else the default.
var listen = new Option<string?>("--listen") { Description = "host:port to listen on (port 0: the OS picks; the bound address is written to <data>/address) [default 127.0.0.1:7600]" };
var data = new Option<string?>("--data") { Description = "data directory (store, token, address) [default $TATZELWURM_DATA or ~/.local/share/tatzelwurm]" };
var store = new Option<string?>("--store") { Description = "sqlite (durable, <data>/tatzelwurm.db) or memory (nothing survives a restart) [default sqlite]" };
var durability = new Option<string?>("--durability") { Description = "sqlite: full (fsync before every ack), interval[:100ms] (fsync every interval) or none [default full]" };
var maxFrame = new Option<int?>("--max-frame") { Description = "largest frame accepted, in bytes [default 16777216]" };
var heartbeat = new Option<string?>("--heartbeat") { Description = "worker heartbeat interval, e.g. 2s [default 2s]" };
var lease = new Option<string?>("--lease") { Description = "a worker silent this long is suspect [default 10s]" };
var grace = new Option<string?>("--grace") { Description = "a suspect worker is dead after this long [default 30s]" };
var killTimeout = new Option<string?>("--kill-timeout") { Description = "an unconfirmed kill is escalated to abandon after this long [default 30s]" };
var policy = new Option<string?>("--default-policy") { Description = "at-most-once or at-least-once, for tasks that name none [default at-most-once]" };
var retention = new Option<string?>("--retention") { Description = "terminated tasks are purged after this long, e.g. 7d [default 7d]" };
var http = new Option<string?>("--http") { Description = "serve the dashboard, JSON API, /metrics and health on host:port (port 0: the OS picks; the URL is written to <data>/http); reads need no token, so keep it on 127.0.0.1 [default off]" };
var logFormat = new Option<string?>("--log-format") { Description = "text or json [default text]" };
var logLevel = new Option<string?>("--log-level") { Description = "trace, debug, information, warning, error [default information]" };

var root = new RootCommand("tatzelwurm: the coordinator of a persistent task queue for long-running processes")
{
    listen, data, store, durability, maxFrame, heartbeat, lease, grace, killTimeout, policy, retention, http, logFormat, logLevel,
};

root.SetAction(async (parse, cancellationToken) =>
{
    // A setting, the data directory, the store file or an address in use is the user's to fix: one
    // line on stderr and exit code 2 (usage) or 1, not a stack trace.
    ILoggerFactory? loggers = null;
    CoordinatorHost host;
    try
    {
        host = await StartAsync();
    }
    catch (Exception ex) when (ex is ArgumentException or FormatException or OverflowException
                               or StoreException or IOException or UnauthorizedAccessException)
    {
        loggers?.Dispose(); // writes out what the console logger still holds
        await Console.Error.WriteLineAsync($"tatzelwurm: {ex.Message}");
        return ex is ArgumentException or FormatException or OverflowException ? 2 : 1;
    }

    using (loggers)
    {
        try
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }

        // SIGTERM / Ctrl-C: stop accepting, let the loop and the writer finish, close the store cleanly.
        await host.DisposeAsync();
        return 0;
    }

    async Task<CoordinatorHost> StartAsync()
    {
        var dataDir = DataDirectory.Resolve(parse.GetValue(data));
        Directory.CreateDirectory(dataDir);
        var settings = Settings.Load(dataDir);
        string Get(Option<string?> option, string fallback) => parse.GetValue(option) ?? settings.Get(option.Name, fallback);
        TimeSpan Duration(Option<string?> option, string fallback)
        {
            try
            {
                return Settings.Duration(Get(option, fallback));
            }
            catch (Exception ex) when (ex is FormatException or OverflowException)
            {
                throw new FormatException($"{option.Name}: {ex.Message}", ex);
            }
        }

        var levelText = Get(logLevel, "information");
        var level = Enum.TryParse<LogLevel>(levelText, ignoreCase: true, out var parsed)
            ? parsed
            : throw new ArgumentException($"--log-level: '{levelText}' is not one of trace, debug, information, warning, error");
        loggers = LoggerFactory.Create(builder =>
        {
            builder.SetMinimumLevel(level);

            // ASP.NET Core logs every HTTP request at Information; the dashboard polls and Prometheus scrapes.
            builder.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
            builder.AddFilter("Microsoft.Hosting", LogLevel.Warning);
            if (Get(logFormat, "text") == "json")
            {
                builder.AddJsonConsole(o => o.IncludeScopes = true);
            }
            else
            {
                builder.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.IncludeScopes = true;
                    o.TimestampFormat = "HH:mm:ss.fff ";
                });
            }
        });

        var coordinatorOptions = new CoordinatorOptions
        {
            HeartbeatInterval = Duration(heartbeat, "2s"),
            Lease = Duration(lease, "10s"),
            Grace = Duration(grace, "30s"),
            KillTimeout = Duration(killTimeout, "30s"),
            DefaultPolicy = Get(policy, "at-most-once") switch
            {
                "at-most-once" => Tatzelwurm.Core.DeliveryPolicy.AtMostOnce,
                "at-least-once" => Tatzelwurm.Core.DeliveryPolicy.AtLeastOnce,
                var other => throw new ArgumentException($"--default-policy: '{other}' is neither at-most-once nor at-least-once"),
            },
            Retention = Duration(retention, "7d"),
        };
        var hostOptions = new HostOptions
        {
            Listen = Endpoint(listen, Get(listen, "127.0.0.1:7600")),
            DataDirectory = dataDir,
            MaxFrame = parse.GetValue(maxFrame) ?? MaxFrame(settings.Get(maxFrame.Name, "")),
            Coordinator = coordinatorOptions,
            Http = Get(http, "off") switch
            {
                "" or "off" => null,
                var port when int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var p) => new IPEndPoint(IPAddress.Loopback, p),
                var endpoint => Endpoint(http, endpoint),
            },
        };

        ITaskStore taskStore = Get(store, "sqlite") switch
        {
            "sqlite" => SqliteTaskStore.Open(new SqliteStoreOptions(Path.Combine(dataDir, "tatzelwurm.db")).WithDurability(Get(durability, "full"))),
            "memory" => new InMemoryTaskStore { VerifyStoredHistory = false },
            var other => throw new ArgumentException($"--store: unknown store '{other}'"),
        };

        // --max-frame from the environment or the file (the flag itself is parsed as an int already).
        static int MaxFrame(string text) => text.Length == 0
            ? ProtocolConstants.DefaultMaxFrame
            : int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var bytes) ? bytes : throw new FormatException($"--max-frame: '{text}' is not a number of bytes");

        static IPEndPoint Endpoint(Option<string?> option, string text) =>
            IPEndPoint.TryParse(text, out var endpoint) ? endpoint : throw new FormatException($"{option.Name}: '{text}' is not an address:port");

        try
        {
            return await CoordinatorHost.StartAsync(hostOptions, taskStore, TimeProvider.System, loggers, cancellationToken);
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.AddressAlreadyInUse or SocketError.AddressNotAvailable or SocketError.AccessDenied)
        {
            throw new IOException(ex.SocketErrorCode == SocketError.AddressAlreadyInUse
                ? $"cannot listen on {hostOptions.Listen}: address already in use (is another coordinator running there? --listen picks another address; port 0 lets the OS choose)"
                : $"cannot listen on {hostOptions.Listen}: {ex.Message}", ex);
        }
    }
});

return await root.Parse(args).InvokeAsync();
