using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace Tatzelwurm.Server.Http;

/// <summary>
/// The coordinator's HTTP endpoint (Kestrel, minimal routing): the dashboard at <c>/</c>, the JSON
/// API under <c>/api</c>, the live event stream at <c>/events</c>, <c>/healthz</c>, <c>/readyz</c>
/// and <c>/metrics</c> (Prometheus text, OpenTelemetry's exporter). Off unless
/// <see cref="HostOptions.Http"/> is set; the URL actually bound is written to <c>&lt;data&gt;/http</c>.
/// </summary>
/// <remarks>
/// Security model (docs/operations.md): reads need no token, so the endpoint listens on 127.0.0.1
/// by default and, while it does, answers only requests whose Host header is a loopback name (a
/// web page elsewhere cannot read it through DNS rebinding). Actions (play, pause, kill, drain) need
/// the coordinator's token as <c>Authorization: Bearer</c>, which a browser never attaches on its
/// own, so another site cannot forge them; no CORS headers are sent.
/// </remarks>
public sealed partial class CoordinatorHttpServer : IAsyncDisposable
{
    /// <summary>Most concurrent event-stream clients; more are refused with 503.</summary>
    public const int MaxEventClients = 256;

    private static readonly TimeSpan QueryTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan LivenessTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan KeepAliveInterval = TimeSpan.FromSeconds(15);

    private readonly Coordinator _coordinator;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly BearerToken _token;
    private readonly EventHub _events;
    private readonly LocalActioner _actions;
    private readonly DashboardAssets _assets = DashboardAssets.Load();
    private readonly CancellationTokenSource _stopping = new();
    private WebApplication? _app;
    private volatile bool _accepting;

    private CoordinatorHttpServer(Coordinator coordinator, SessionOptions sessionOptions, TimeProvider time, ILoggerFactory loggers)
    {
        _coordinator = coordinator;
        _time = time;
        _logger = loggers.CreateLogger<CoordinatorHttpServer>();
        _token = new BearerToken(sessionOptions.Token);
        var sessionLogger = loggers.CreateLogger<Session>();

        // The watcher may receive a burst of events (100,000 tasks added at once): give its
        // connection room for one, rather than have it closed as overloaded and resync everyone.
        var watcherOptions = sessionOptions with { OutboundCapacity = Math.Max(sessionOptions.OutboundCapacity, 200_000) };
        _events = new EventHub((onPush, ct) => LocalConnection.OpenAsync(coordinator, watcherOptions, "dashboard-events", onPush, sessionLogger, time, ct));
        _actions = new LocalActioner(ct => LocalConnection.OpenAsync(coordinator, sessionOptions, "dashboard", null, sessionLogger, time, ct));
    }

    /// <summary>Event-stream clients connected now.</summary>
    internal int EventClients => _events.Subscribers;

    /// <summary>True while the hub holds its in-process watcher connection.</summary>
    internal bool WatcherOpen => _events.WatcherOpen;

    /// <summary>The base URL the endpoint listens on, e.g. <c>http://127.0.0.1:43117</c>.</summary>
    public Uri Address { get; private set; } = null!;

    /// <summary>Starts listening on <paramref name="endpoint"/> (port 0: the OS picks).</summary>
    public static async Task<CoordinatorHttpServer> StartAsync(
        IPEndPoint endpoint, Coordinator coordinator, SessionOptions sessionOptions, TimeProvider time, ILoggerFactory loggers,
        CancellationToken cancellationToken)
    {
        var server = new CoordinatorHttpServer(coordinator, sessionOptions, time, loggers);
        try
        {
            await server.StartAsync(endpoint, loggers, cancellationToken);
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }

        return server;
    }

    private async Task StartAsync(IPEndPoint endpoint, ILoggerFactory loggers, CancellationToken cancellationToken)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions
        {
            ApplicationName = typeof(CoordinatorHttpServer).Assembly.GetName().Name,
        });

        // The coordinator's logger factory, and no console lifetime: the coordinator owns the
        // process and its signals; this is one of its parts.
        builder.Services.AddSingleton(loggers);
        builder.Services.AddLogging();
        builder.Services.AddSingleton<IHostLifetime, PassiveLifetime>();
        builder.Services.AddRoutingCore();
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = 64 * 1024;
            kestrel.Listen(endpoint);
        });

        var loopback = IPAddress.IsLoopback(endpoint.Address);
        if (loopback)
        {
            builder.Services.AddHostFiltering(options =>
            {
                options.AllowedHosts = ["localhost", "127.0.0.1", "[::1]", endpoint.Address.ToString()];
                options.IncludeFailureMessage = false;
            });
        }

        // Histogram buckets suited to each quantity (the SDK's defaults are for milliseconds).
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("tatzelwurm", serviceVersion: typeof(CoordinatorHttpServer).Assembly.GetName().Version?.ToString()))
            .WithMetrics(metrics => metrics
                .AddMeter(TatzelwurmMetrics.MeterName)
                .AddView("tatzelwurm.store.commit.duration", Buckets(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
                .AddView("tatzelwurm.store.commit.batch_size", Buckets(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000))
                // Tasks wait and run from milliseconds to weeks (SPEC §1).
                .AddView("tatzelwurm.task.queue_wait", Buckets(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400))
                .AddView("tatzelwurm.task.run_time", Buckets(0.01, 0.1, 1, 10, 60, 300, 900, 3600, 14400, 43200, 86400, 259200, 604800, 2419200))
                // Scrapes must see the gauges just refreshed, not a cached answer.
                .AddPrometheusExporter(options => options.ScrapeResponseCacheDurationMilliseconds = 0));

        var app = builder.Build();
        _app = app;
        if (loopback)
        {
            app.UseHostFiltering();
        }

        app.Use(SecurityHeaders);
        app.Use(async (context, next) =>
        {
            // Gauges read a snapshot the loop takes; take it right before the exporter reads them.
            if (context.Request.Path.Equals("/metrics", StringComparison.Ordinal))
            {
                await RefreshGaugesAsync(context.RequestAborted);
            }

            await next(context);
        });
        MapRoutes(app);
        app.MapPrometheusScrapingEndpoint("/metrics");

        await app.StartAsync(cancellationToken);
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? throw new InvalidOperationException("Kestrel reported no address");
        Address = new Uri(bound);
        _accepting = true;
        if (!loopback)
        {
            LogNotLoopback(_logger, endpoint.ToString());
        }

        LogListening(_logger, Address.ToString().TrimEnd('/'));
    }

    private static ExplicitBucketHistogramConfiguration Buckets(params double[] boundaries) => new() { Boundaries = boundaries };

    private async Task RefreshGaugesAsync(CancellationToken cancellationToken)
    {
        try
        {
            await CoordinatorGauges.RefreshAsync(_coordinator).WaitAsync(QueryTimeout, _time, cancellationToken);
        }
        catch (TimeoutException)
        {
            // Serve the previous snapshot; /healthz reports a stuck loop.
            LogLoopSlow(_logger, "metrics", QueryTimeout.TotalSeconds);
        }
    }

    private static Task SecurityHeaders(HttpContext context, RequestDelegate next)
    {
        var headers = context.Response.Headers;
        headers.XContentTypeOptions = "nosniff";
        headers["Referrer-Policy"] = "no-referrer";
        headers.XFrameOptions = "DENY";
        headers.ContentSecurityPolicy =
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
        return next(context);
    }

    /// <summary>Stops accepting (readiness turns false), ends event streams, stops Kestrel and the in-process connections.</summary>
    public async ValueTask DisposeAsync()
    {
        _accepting = false;
        await _stopping.CancelAsync();
        await _events.DisposeAsync();
        if (_app is not null)
        {
            await _app.StopAsync(CancellationToken.None);
            await _app.DisposeAsync();
        }

        await _actions.DisposeAsync();
        CoordinatorGauges.Remove(_coordinator);
        _stopping.Dispose();
    }

    private sealed class PassiveLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
