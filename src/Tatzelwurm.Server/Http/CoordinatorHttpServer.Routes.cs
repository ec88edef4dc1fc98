using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using WorkerAction = Tatzelwurm.Protocol.WorkerAction;

namespace Tatzelwurm.Server.Http;

public sealed partial class CoordinatorHttpServer
{
    /// <summary>Largest page of tasks one request returns.</summary>
    public const int MaxPageSize = 500;

    private const int DefaultPageSize = 50;

    private void MapRoutes(IEndpointRouteBuilder app)
    {
        foreach (var path in _assets.Paths)
        {
            app.MapGet(path == "/index.html" ? "/" : path, context => _assets.ServeAsync(context, path));
        }

        app.MapGet("/healthz", HealthAsync);
        app.MapGet("/readyz", ReadyAsync);
        app.MapGet("/events", EventsAsync);
        app.MapGet("/api/counts", CountsAsync);
        app.MapGet("/api/tasks", ListTasksAsync);
        app.MapGet("/api/tasks/{id}", ShowTaskAsync);
        app.MapGet("/api/workers", WorkersAsync);
        app.MapGet("/api/tag-limits", TagLimitsAsync);
        app.MapGet("/api/auth", AuthAsync);
        app.MapPost("/api/tasks/{id}/{action}", TaskActionAsync);
        app.MapPost("/api/workers/{id}/{action}", WorkerActionAsync);
    }

    // ---- health ---------------------------------------------------------------------------------

    // Liveness: the loop answers. A wedged loop is the one failure a restart can fix.
    private async Task HealthAsync(HttpContext context)
    {
        try
        {
            await _coordinator.QueryAsync(_ => true).WaitAsync(LivenessTimeout, _time, context.RequestAborted);
            await WriteJsonAsync(context, new HealthDto("ok"), ApiJson.Default.HealthDto);
        }
        catch (TimeoutException)
        {
            LogLoopSlow(_logger, "healthz", LivenessTimeout.TotalSeconds);
            await WriteJsonAsync(context, new HealthDto("unhealthy", $"the coordinator loop did not answer within {LivenessTimeout.TotalSeconds:0} s"),
                ApiJson.Default.HealthDto, StatusCodes.Status503ServiceUnavailable);
        }
    }

    // Readiness: accepting connections and the store commits. While the store fails, changes are
    // refused (SPEC §10), so a load balancer or supervisor should not send work here.
    private Task ReadyAsync(HttpContext context) =>
        (_accepting, _coordinator.StoreHealthy) switch
        {
            (true, true) => WriteJsonAsync(context, new HealthDto("ready"), ApiJson.Default.HealthDto),
            (false, _) => WriteJsonAsync(context, new HealthDto("not ready", "not accepting connections (starting or stopping)"),
                ApiJson.Default.HealthDto, StatusCodes.Status503ServiceUnavailable),
            _ => WriteJsonAsync(context, new HealthDto("not ready", "the store is failing; changes are refused until it recovers"),
                ApiJson.Default.HealthDto, StatusCodes.Status503ServiceUnavailable),
        };

    // ---- reads ----------------------------------------------------------------------------------

    private async Task CountsAsync(HttpContext context)
    {
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var healthy = _coordinator.StoreHealthy;
        var commits = _coordinator.Commits;
        var counts = await QueryAsync(context, state => new CountsDto(
            ApiMapping.Counts(state),
            state.Tasks.Count,
            state.Workers.Count,
            state.Workers.Values.Count(w => w.Lease == WorkerLease.Connected),
            state.Workers.Values.Sum(w => w.Slots),
            state.Workers.Values.Sum(w => w.Load),
            state.TagLimits.Count,
            healthy,
            commits,
            now));
        if (counts is not null)
        {
            await WriteJsonAsync(context, counts, ApiJson.Default.CountsDto);
        }
    }

    private async Task ListTasksAsync(HttpContext context)
    {
        var query = context.Request.Query;
        TaskState? state = null;
        if (Text(query["state"]) is { } stateName)
        {
            if (!TaskStateNames.TryParse(stateName, out var parsed))
            {
                await ProblemAsync(context, StatusCodes.Status400BadRequest, $"unknown state '{stateName}'; use one of {string.Join(", ", ApiMapping.StateNames)}");
                return;
            }

            state = parsed;
        }

        var after = 0L;
        if (Text(query["after"]) is { } afterText && (!long.TryParse(afterText, NumberStyles.None, CultureInfo.InvariantCulture, out after) || after < 0))
        {
            await ProblemAsync(context, StatusCodes.Status400BadRequest, "after must be a task id ≥ 0");
            return;
        }

        var limit = DefaultPageSize;
        if (Text(query["limit"]) is { } limitText
            && (!int.TryParse(limitText, NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > MaxPageSize))
        {
            await ProblemAsync(context, StatusCodes.Status400BadRequest, $"limit must be 1…{MaxPageSize}");
            return;
        }

        var filter = new TaskFilter(state, Text(query["type"]), Text(query["tag"]), Text(query["worker"]));

        // One pass over the table keeping the best limit + 1 ids (TaskQueries.Page): the extra one
        // tells whether a next page exists without a second query.
        var page = await QueryAsync(context, s =>
        {
            var (tasks, matched) = s.Page(filter, after, limit + 1);
            var shown = tasks.Take(limit).Select(t => t.ToDto(s, detail: false)).ToList();
            return new TaskPageDto(shown, matched, tasks.Count > limit ? shown[^1].Id : null, ApiMapping.Counts(s));
        });
        if (page is not null)
        {
            await WriteJsonAsync(context, page, ApiJson.Default.TaskPageDto);
        }
    }

    private async Task ShowTaskAsync(HttpContext context)
    {
        if (!long.TryParse(Route(context, "id"), NumberStyles.None, CultureInfo.InvariantCulture, out var id))
        {
            await ProblemAsync(context, StatusCodes.Status400BadRequest, "a task id is a number");
            return;
        }

        var found = await QueryAsync(context, s => new[] { s.Tasks.TryGetValue(id, out var task) ? task.ToDto(s, detail: true) : null });
        if (found is null)
        {
            return;
        }

        if (found[0] is { } task)
        {
            await WriteJsonAsync(context, task, ApiJson.Default.TaskDto);
        }
        else
        {
            await ProblemAsync(context, StatusCodes.Status404NotFound, $"no task {id}", "UnknownTask");
        }
    }

    private async Task WorkersAsync(HttpContext context)
    {
        var now = _time.GetUtcNow();
        var workers = await QueryAsync(context, s => new WorkersDto(
            now.ToUnixTimeMilliseconds(),
            s.Workers.Values
                .OrderBy(w => w.Name, StringComparer.Ordinal)
                .ThenBy(w => w.Id, StringComparer.Ordinal)
                .Select(w => w.ToDto(now))
                .ToList()));
        if (workers is not null)
        {
            await WriteJsonAsync(context, workers, ApiJson.Default.WorkersDto);
        }
    }

    private async Task TagLimitsAsync(HttpContext context)
    {
        var limits = await QueryAsync(context, s => new TagLimitsDto(
            s.TagLimits
                .OrderBy(kv => kv.Key, StringComparer.Ordinal)
                .Select(kv => new TagLimitDto(kv.Key, kv.Value, s.TagRunning(kv.Key)))
                .ToList()));
        if (limits is not null)
        {
            await WriteJsonAsync(context, limits, ApiJson.Default.TagLimitsDto);
        }
    }

    // ---- live events ------------------------------------------------------------------------------

    // Server-sent events: "hello" once subscribed (every later change will arrive, so the page loads
    // its data after it), "task" for each state change once durable, "resync" when this client
    // missed events and must reload its view, and a comment line every 15 s to keep proxies open.
    private async Task EventsAsync(HttpContext context)
    {
        if (_events.Subscribers >= MaxEventClients)
        {
            await ProblemAsync(context, StatusCodes.Status503ServiceUnavailable, $"more than {MaxEventClients} event-stream clients");
            return;
        }

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping.Token);
        var cancellationToken = linked.Token;
        EventHub.Subscriber subscriber;
        try
        {
            subscriber = await _events.SubscribeAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is ConnectionClosedException or ObjectDisposedException or OperationCanceledException)
        {
            if (!context.RequestAborted.IsCancellationRequested)
            {
                await ProblemAsync(context, StatusCodes.Status503ServiceUnavailable, "the event stream is not available (shutting down?)");
            }

            return;
        }

        try
        {
            var response = context.Response;
            response.ContentType = "text/event-stream";
            response.Headers.CacheControl = "no-store";
            response.Headers["X-Accel-Buffering"] = "no";
            context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
            await response.WriteAsync("retry: 2000\n\nevent: hello\ndata: {}\n\n", cancellationToken);
            await response.Body.FlushAsync(cancellationToken);

            var reader = subscriber.Events;
            var text = new StringBuilder();
            while (true)
            {
                bool more;
                using (var idle = new CancellationTokenSource(KeepAliveInterval, _time))
                using (var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, idle.Token))
                {
                    try
                    {
                        more = await reader.WaitToReadAsync(wait.Token);
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        await response.WriteAsync(": keep-alive\n\n", cancellationToken);
                        await response.Body.FlushAsync(cancellationToken);
                        continue;
                    }
                }

                if (!more)
                {
                    break;
                }

                text.Clear();
                if (subscriber.TakeResync())
                {
                    while (reader.TryRead(out _))
                    {
                    }

                    text.Append("event: resync\ndata: {}\n\n");
                }
                else
                {
                    for (var n = 0; n < 1000 && reader.TryRead(out var change); n++)
                    {
                        if (!ReferenceEquals(change, EventHub.Subscriber.ResyncMarker))
                        {
                            text.Append("event: task\ndata: ").Append(JsonSerializer.Serialize(change, ApiJson.Default.TaskEventDto)).Append("\n\n");
                        }
                    }
                }

                if (text.Length > 0)
                {
                    await response.WriteAsync(text.ToString(), cancellationToken);
                    await response.Body.FlushAsync(cancellationToken);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException)
        {
            // The client went away, or the server is stopping.
        }
        finally
        {
            _events.Unsubscribe(subscriber);
        }
    }

    // ---- actions (token required) ---------------------------------------------------------------

    private async Task AuthAsync(HttpContext context)
    {
        if (await Unauthorized(context, "check", "token"))
        {
            return;
        }

        context.Response.StatusCode = StatusCodes.Status204NoContent;
    }

    private async Task TaskActionAsync(HttpContext context)
    {
        var action = Route(context, "action") ?? "";
        var idText = Route(context, "id") ?? "";
        if (await Unauthorized(context, action, "task " + idText))
        {
            return;
        }

        TaskAction? verb = action switch
        {
            "play" => TaskAction.Play,
            "pause" => TaskAction.Pause,
            "kill" => TaskAction.Kill,
            _ => null,
        };
        if (verb is null || !long.TryParse(idText, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
        {
            await ProblemAsync(context, StatusCodes.Status404NotFound, "use POST /api/tasks/{id}/play|pause|kill");
            return;
        }

        using var scope = TaskScope(_logger, id);
        var reply = await ActAsync(context, rid => new ControlTasks(rid, verb.Value, [id], false));
        var target = $"task {id}";
        (int Status, ActionDto Dto)? result = reply switch
        {
            null => null,
            ControlResult r when r.Applied.Contains(id) => (StatusCodes.Status200OK, new ActionDto(true, action, target)),
            ControlResult { Failed: [var failure, ..] } => (Status(failure.Code), new ActionDto(false, action, target, failure.Code.ToString(), failure.Message)),
            ErrorReply error => (Status(error.Code), new ActionDto(false, action, target, error.Code.ToString(), error.Message)),
            _ => (StatusCodes.Status500InternalServerError, new ActionDto(false, action, target, "Internal", $"unexpected reply {reply.GetType().Name}")),
        };
        if (result is var (status, dto))
        {
            LogAction(_logger, action, target, dto.Ok ? "applied" : dto.Code + ": " + dto.Message);
            await WriteJsonAsync(context, dto, ApiJson.Default.ActionDto, status);
        }
    }

    private async Task WorkerActionAsync(HttpContext context)
    {
        var action = Route(context, "action") ?? "";
        var worker = Route(context, "id") ?? "";
        if (await Unauthorized(context, action, "worker " + worker))
        {
            return;
        }

        WorkerAction? verb = action switch
        {
            "drain" => WorkerAction.Drain,
            "undrain" => WorkerAction.Undrain,
            "stop" => WorkerAction.Stop,
            _ => null,
        };
        if (verb is null || worker.Length == 0)
        {
            await ProblemAsync(context, StatusCodes.Status404NotFound, "use POST /api/workers/{id}/drain|undrain|stop");
            return;
        }

        using var scope = WorkerScope(_logger, worker);
        var reply = await ActAsync(context, rid => new WorkerCommand(rid, worker, verb.Value));
        var target = $"worker {worker}";
        (int Status, ActionDto Dto)? result = reply switch
        {
            null => null,
            OkReply => (StatusCodes.Status200OK, new ActionDto(true, action, target)),
            ErrorReply error => (Status(error.Code), new ActionDto(false, action, target, error.Code.ToString(), error.Message)),
            _ => (StatusCodes.Status500InternalServerError, new ActionDto(false, action, target, "Internal", $"unexpected reply {reply.GetType().Name}")),
        };
        if (result is var (status, dto))
        {
            LogAction(_logger, action, target, dto.Ok ? "applied" : dto.Code + ": " + dto.Message);
            await WriteJsonAsync(context, dto, ApiJson.Default.ActionDto, status);
        }
    }

    private async Task<bool> Unauthorized(HttpContext context, string action, string target)
    {
        if (_token.Authorized(context.Request))
        {
            return false;
        }

        LogUnauthorized(_logger, action, target, context.Connection.RemoteIpAddress?.ToString() ?? "?");
        context.Response.Headers.WWWAuthenticate = "Bearer";
        await ProblemAsync(context, StatusCodes.Status401Unauthorized, "actions need the coordinator's token as 'Authorization: Bearer <token>'", "AuthFailed");
        return true;
    }

    // The reply to an action arrives only once the change is durable. While the store is known to
    // fail the coordinator refuses at once (StoreUnavailable: nothing happened); a change caught in
    // the commit that failed stays applied and is acknowledged when the retry succeeds, which may
    // take longer than a request should wait: then the answer says it is not confirmed (yet).
    private async Task<IMessage?> ActAsync(HttpContext context, Func<uint, IRequest> request)
    {
        try
        {
            return await _actions.RequestAsync(request, context.RequestAborted).WaitAsync(QueryTimeout, _time, context.RequestAborted);
        }
        catch (TimeoutException)
        {
            await ProblemAsync(context, StatusCodes.Status503ServiceUnavailable,
                $"not confirmed within {QueryTimeout.TotalSeconds:0} s (is the store failing? see /readyz); the action takes effect if the store recovers",
                "Unconfirmed");
            return null;
        }
        catch (Exception ex) when (ex is ConnectionClosedException or ObjectDisposedException)
        {
            await ProblemAsync(context, StatusCodes.Status503ServiceUnavailable, $"the action could not be confirmed: {ex.Message}", "Unavailable");
            return null;
        }
    }

    private static int Status(ErrorCode code) => code switch
    {
        ErrorCode.UnknownTask or ErrorCode.UnknownWorker => StatusCodes.Status404NotFound,
        ErrorCode.IllegalTransition => StatusCodes.Status409Conflict,
        ErrorCode.StoreUnavailable or ErrorCode.Overloaded => StatusCodes.Status503ServiceUnavailable,
        ErrorCode.Internal => StatusCodes.Status500InternalServerError,
        _ => StatusCodes.Status400BadRequest,
    };

    // ---- helpers --------------------------------------------------------------------------------

    // Runs a read on the loop; a loop that does not answer in time gets a 503, not a hung request.
    private async Task<T?> QueryAsync<T>(HttpContext context, Func<CoordinatorState, T> read)
        where T : class
    {
        try
        {
            return await _coordinator.QueryAsync(read).WaitAsync(QueryTimeout, _time, context.RequestAborted);
        }
        catch (TimeoutException)
        {
            LogLoopSlow(_logger, context.Request.Path.Value ?? "", QueryTimeout.TotalSeconds);
            await ProblemAsync(context, StatusCodes.Status503ServiceUnavailable, "the coordinator did not answer in time");
            return null;
        }
    }

    private static string? Text(Microsoft.Extensions.Primitives.StringValues values) =>
        values.Count > 0 && !string.IsNullOrEmpty(values[0]) ? values[0] : null;

    private static string? Route(HttpContext context, string name) => context.Request.RouteValues[name] as string;

    private static Task WriteJsonAsync<T>(HttpContext context, T value, JsonTypeInfo<T> type, int status = StatusCodes.Status200OK)
    {
        context.Response.StatusCode = status;
        context.Response.Headers.CacheControl = "no-store";
        return context.Response.WriteAsJsonAsync(value, type, contentType: null, context.RequestAborted);
    }

    private static Task ProblemAsync(HttpContext context, int status, string message, string? code = null) =>
        WriteJsonAsync(context, new ProblemDto(message, code), ApiJson.Default.ProblemDto, status);
}
