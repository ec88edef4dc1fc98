using System.CommandLine;
using System.Globalization;
using System.Text;
using Spectre.Console;
using Tatzelwurm.Actionwurm;
using Tatzelwurm.Client;
using Tatzelwurm.Protocol;

var server = new Option<string?>("--server") { Description = "coordinator host:port [default $TATZELWURM_SERVER or <data>/address]", Recursive = true };
var token = new Option<string?>("--token") { Description = "auth token [default $TATZELWURM_TOKEN or <data>/token]", Recursive = true };
var data = new Option<string?>("--data") { Description = "a local coordinator's data directory", Recursive = true };
var json = new Option<bool>("--json") { Description = "machine-readable output", Recursive = true };

async Task<int> WithClient(ParseResult parse, CancellationToken cancellationToken, Func<TatzelwurmClient, Task<int>> action)
{
    try
    {
        var options = new ConnectionOptions { Server = parse.GetValue(server), Token = parse.GetValue(token), DataDirectory = parse.GetValue(data), ClientName = "actionwurm" };
        await using var client = await TatzelwurmClient.ConnectAsync(options, cancellationToken);
        return await action(client);
    }
    catch (TatzelwurmException ex)
    {
        Console.Error.WriteLine($"actionwurm: {ex.Code}: {ex.Message}");
        return 1;
    }
    catch (Exception ex) when (ex is ConnectionLostException or InvalidOperationException or System.Net.Sockets.SocketException or FormatException or ArgumentException or IOException)
    {
        Console.Error.WriteLine($"actionwurm: {ex.Message}");
        return 2;
    }
    catch (OperationCanceledException)
    {
        return 130;
    }
}

// ---- task add ------------------------------------------------------------------------------
var mock = new Option<string?>("--mock") { Description = "a mock task for workwurm: sleep:200ms, block:1s, eval:1+2*3, fail:3" };
var file = new Option<FileInfo?>("--file") { Description = "read the payload from a file ('-' for stdin)" };
var type = new Option<string?>("--type") { Description = "task type (routes it to workers accepting it) [default: the mock's type, else 'default']" };
var priority = new Option<int>("--priority") { Description = "higher runs first" };
var tags = new Option<string[]>("--tag") { Description = "tag (repeatable), e.g. computer:daint" };
var count = new Option<int>("-n", "--count") { Description = "how many identical tasks", DefaultValueFactory = _ => 1 };
var created = new Option<bool>("--created") { Description = "add in 'created' (needs play) instead of 'ready'" };
var policy = new Option<string?>("--policy") { Description = "at-most-once or at-least-once when its worker is lost [default: the coordinator's]" };
var noReply = new Option<bool>("--no-reply") { Description = "keep no result" };
var waitAfter = new Option<bool>("--wait") { Description = "wait for the task(s) to terminate" };
var add = new Command("add", "add tasks") { mock, file, type, priority, tags, count, created, policy, noReply, waitAfter };
add.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    byte[] payload;
    var taskType = parse.GetValue(type);
    if (parse.GetValue(mock) is { } spec)
    {
        var parsed = MockTask.Parse(spec);
        payload = parsed.ToPayload();
        taskType ??= parsed.DefaultType;
    }
    else if (parse.GetValue(file) is { } f)
    {
        payload = f.Name == "-" ? await ReadStdinAsync() : await File.ReadAllBytesAsync(f.FullName, ct);
    }
    else
    {
        throw new ArgumentException("give the payload with --mock SPEC or --file PATH ('-' for stdin)");
    }

    var taskPolicy = parse.GetValue(policy) switch
    {
        null => DeliveryPolicy.Default,
        "at-most-once" => DeliveryPolicy.AtMostOnce,
        "at-least-once" => DeliveryPolicy.AtLeastOnce,
        var other => throw new ArgumentException($"--policy: '{other}' is neither at-most-once nor at-least-once"),
    };
    var n = parse.GetValue(count);
    if (n < 1)
    {
        throw new ArgumentException("-n must be at least 1");
    }

    var taskSpec = new TaskSpec(payload, taskType ?? "default", parse.GetValue(priority), parse.GetValue(tags) ?? [], taskPolicy, !parse.GetValue(created), parse.GetValue(noReply));
    var ids = new List<long>(n);
    for (var done = 0; done < n; done += 1000)
    {
        ids.AddRange(await client.AddAsync(Enumerable.Repeat(taskSpec, Math.Min(1000, n - done)).ToList(), ct));
    }

    if (parse.GetValue(json))
    {
        Output.WriteJson(new { ids });
    }
    else
    {
        Console.WriteLine(ids.Count == 1 ? $"added task {ids[0]}" : $"added {ids.Count} tasks: {ids[0]}…{ids[^1]}");
    }

    return parse.GetValue(waitAfter) ? await WaitAll(client, ids, parse.GetValue(json), ct) : 0;
}));

static async Task<byte[]> ReadStdinAsync()
{
    using var buffer = new MemoryStream();
    await Console.OpenStandardInput().CopyToAsync(buffer);
    return buffer.ToArray();
}

// ---- play / pause / kill -----------------------------------------------------------------------
Command Control(string name, TaskAction action, string description, bool allowAll)
{
    var ids = new Argument<long[]>("id") { Description = "task ids", Arity = allowAll ? ArgumentArity.ZeroOrMore : ArgumentArity.OneOrMore };
    var all = new Option<bool>("--all", "-a") { Description = $"every task {name} applies to" };
    var command = new Command(name, description) { ids };
    if (allowAll)
    {
        command.Options.Add(all);
    }

    command.SetAction((parse, ct) => WithClient(parse, ct, async client =>
    {
        var list = parse.GetValue(ids) ?? [];
        var everything = allowAll && parse.GetValue(all);
        if (list.Length == 0 && !everything)
        {
            throw new ArgumentException(allowAll ? "give task ids or -a" : "give task ids");
        }

        var result = await client.ControlAsync(action, list, everything, ct);
        if (parse.GetValue(json))
        {
            Output.WriteJson(new { applied = result.Applied, failed = result.Failed.Select(f => new { id = f.TaskId, code = f.Code.ToString(), message = f.Message }) });
        }
        else
        {
            Console.WriteLine($"{name}: {result.Applied.Count} task(s)" + (result.Applied.Count is > 0 and <= 20 ? $" ({string.Join(", ", result.Applied)})" : ""));
            foreach (var failure in result.Failed)
            {
                Console.Error.WriteLine($"actionwurm: task {failure.TaskId}: {failure.Code}: {failure.Message}");
            }
        }

        return result.Failed.Count == 0 ? 0 : 1;
    }));
    return command;
}

// ---- list / show / wait -------------------------------------------------------------------------
var stateFilter = new Option<string?>("--state") { Description = "created, ready, submit, run, pause or terminated" };
var typeFilter = new Option<string?>("--type") { Description = "only this type" };
var tagFilter = new Option<string?>("--tag") { Description = "only tasks with this tag" };
var workerFilter = new Option<string?>("--worker") { Description = "only tasks on this worker (id or name)" };
var limit = new Option<int>("--limit") { Description = "rows per page", DefaultValueFactory = _ => 100 };
var after = new Option<long>("--after") { Description = "page after this task id" };
var listAll = new Option<bool>("--all") { Description = "every matching task, not one page" };
var list = new Command("list", "list tasks, with counts by state") { stateFilter, typeFilter, tagFilter, workerFilter, limit, after, listAll };
list.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    int? state = parse.GetValue(stateFilter) is { } s ? Output.ParseState(s) : null;
    TaskList page;
    IReadOnlyList<TaskInfo> tasks;
    if (parse.GetValue(listAll))
    {
        // Counts first, then the pages: a task that counts as terminated is terminated in every page
        // read after it (terminated is final), so "counts say all done" implies the list shows it.
        page = await client.ListAsync(state, parse.GetValue(typeFilter), parse.GetValue(tagFilter), parse.GetValue(workerFilter), 0, 1, ct);
        var collected = new List<TaskInfo>();
        await foreach (var task in client.ListAllAsync(state, parse.GetValue(typeFilter), parse.GetValue(tagFilter), parse.GetValue(workerFilter), ct))
        {
            collected.Add(task);
        }

        tasks = collected;
    }
    else
    {
        page = await client.ListAsync(state, parse.GetValue(typeFilter), parse.GetValue(tagFilter), parse.GetValue(workerFilter), parse.GetValue(after), parse.GetValue(limit), ct);
        tasks = page.Tasks;
    }

    if (parse.GetValue(json))
    {
        Output.WriteJson(new
        {
            tasks = tasks.Select(t => Output.ToJson(t, withHistory: false)),
            counts = Output.StateNames.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => page.Counts.GetValueOrDefault(x.i)),
            matched = page.Matched,
        });
    }
    else
    {
        Output.TaskTable(tasks, page.Counts, page.Matched);
    }

    return 0;
}));

var showId = new Argument<long>("id") { Description = "task id" };
var show = new Command("show", "one task with every field and its transition history") { showId };
show.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    var task = await client.ShowAsync(parse.GetValue(showId), ct);
    if (parse.GetValue(json))
    {
        Output.WriteJson(Output.ToJson(task, withHistory: true));
    }
    else
    {
        Output.TaskDetail(task);
    }

    return 0;
}));

var waitIds = new Argument<long[]>("id") { Description = "task ids", Arity = ArgumentArity.OneOrMore };
var wait = new Command("wait", "wait for tasks to terminate; the exit code is the (last failing) task's") { waitIds };
wait.SetAction((parse, ct) => WithClient(parse, ct, client => WaitAll(client, parse.GetValue(waitIds)!, parse.GetValue(json), ct)));

static async Task<int> WaitAll(TatzelwurmClient client, IReadOnlyList<long> ids, bool asJson, CancellationToken ct)
{
    var results = new List<TaskResult>();
    async Task Collect(Action<string>? status)
    {
        var started = TimeProvider.System.GetUtcNow();
        foreach (var id in ids)
        {
            var layers = 0;
            var waiting = client.WaitAsync(id, depth => layers = depth, ct);
            while (await Task.WhenAny(waiting, Task.Delay(250, ct)) != waiting)
            {
                status?.Invoke($"waiting for task {id} ({results.Count}/{ids.Count} done, {layers} layer(s), {(TimeProvider.System.GetUtcNow() - started).TotalSeconds:0}s)");
            }

            results.Add(await waiting);
        }
    }

    if (asJson || Console.IsErrorRedirected || Console.IsOutputRedirected)
    {
        await Collect(null);
    }
    else
    {
        await AnsiConsole.Status().StartAsync("waiting…", ctx => Collect(text => ctx.Status(Markup.Escape(text))));
    }

    foreach (var result in results)
    {
        var text = result.Result is { } bytes ? Encoding.UTF8.GetString(bytes) : null;
        if (asJson)
        {
            Output.WriteJson(new { id = result.TaskId, exit_code = result.ExitCode, result = text, result_base64 = result.Result is null ? null : Convert.ToBase64String(result.Result), error = result.Error, layers = result.Layers });
        }
        else
        {
            Console.WriteLine($"task {result.TaskId}: exit code {result.ExitCode}" + (text is { Length: > 0 } ? $", result {text}" : "") + (result.Error is { } e ? $", error {e}" : ""));
        }
    }

    return results.LastOrDefault(r => r.ExitCode != 0)?.ExitCode ?? 0;
}

// ---- watch ------------------------------------------------------------------------------------
var watchType = new Option<string?>("--type") { Description = "only this type" };
var watchTag = new Option<string?>("--tag") { Description = "only tasks with this tag" };
var watch = new Command("watch", "stream task state changes live (Ctrl-C to stop)") { watchType, watchTag };
watch.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    await foreach (var change in client.WatchAsync(parse.GetValue(watchType), parse.GetValue(watchTag), ct))
    {
        if (parse.GetValue(json))
        {
            Output.WriteJson(new { id = change.TaskId, state = Output.State(change.State), type = change.Type, worker = change.Worker, exit_code = change.ExitCode, at = Output.Time(change.AtMs), reason = change.Reason });
        }
        else
        {
            Console.WriteLine($"{Output.Time(change.AtMs)}  task {change.TaskId,-8} {Output.State(change.State),-10} {change.Type,-10} {change.Worker ?? ""} {(change.ExitCode is { } code ? $"exit {code}" : "")} {change.Reason ?? ""}".TrimEnd());
        }
    }

    return 0;
}));

// ---- workers ------------------------------------------------------------------------------------
var workerList = new Command("list", "the worker table: types, slots, load, last heartbeat");
workerList.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    var workers = await client.WorkersAsync(ct);
    if (parse.GetValue(json))
    {
        Output.WriteJson(workers.Select(Output.ToJson));
    }
    else
    {
        Output.WorkerTable(workers);
    }

    return 0;
}));

Command WorkerAct(string name, WorkerAction action, string description)
{
    var target = new Argument<string>("worker") { Description = "worker id or name" };
    var command = new Command(name, description) { target };
    command.SetAction((parse, ct) => WithClient(parse, ct, async client =>
    {
        await client.CommandWorkerAsync(parse.GetValue(target)!, action, ct);
        Console.WriteLine($"{name}: {parse.GetValue(target)}");
        return 0;
    }));
    return command;
}

// ---- tag limits -----------------------------------------------------------------------------------
var limitTag = new Argument<string>("tag") { Description = "tag, e.g. computer:daint" };
var limitValue = new Argument<int?>("limit") { Description = "most running tasks with the tag; omit to remove the limit", Arity = ArgumentArity.ZeroOrOne };
var tagLimit = new Command("limit", "set (or remove) the concurrency limit of a tag") { limitTag, limitValue };
tagLimit.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    await client.SetTagLimitAsync(parse.GetValue(limitTag)!, parse.GetValue(limitValue), ct);
    Console.WriteLine(parse.GetValue(limitValue) is { } l ? $"{parse.GetValue(limitTag)}: at most {l} running" : $"{parse.GetValue(limitTag)}: no limit");
    return 0;
}));
var tagList = new Command("list", "tag limits and how many tasks with each tag are on workers");
tagList.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    var limits = await client.TagLimitsAsync(ct);
    if (parse.GetValue(json))
    {
        Output.WriteJson(limits.Select(l => new { tag = l.Tag, limit = l.Limit, running = l.Running }));
    }
    else
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumns("tag", "limit", "running");
        foreach (var l in limits)
        {
            table.AddRow(Markup.Escape(l.Tag), l.Limit.ToString(CultureInfo.InvariantCulture), l.Running.ToString(CultureInfo.InvariantCulture));
        }

        AnsiConsole.Write(table);
    }

    return 0;
}));

// ---- broadcast -------------------------------------------------------------------------------------
var ns = new Option<string>("--namespace") { Description = "broadcast namespace", DefaultValueFactory = _ => "default", Recursive = true };
var subject = new Option<string?>("--subject") { Description = "subject (send) or subject pattern with * wildcards (listen)" };
var sender = new Option<string?>("--sender") { Description = "sender (send) or sender pattern with * wildcards (listen)" };
var correlation = new Option<string?>("--correlation-id") { Description = "correlation id" };
var body = new Argument<string?>("body") { Description = "message body (UTF-8 text)", Arity = ArgumentArity.ZeroOrOne };
var send = new Command("send", "send a broadcast") { subject, sender, correlation, body };
send.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    await client.BroadcastAsync(parse.GetValue(ns)!, Encoding.UTF8.GetBytes(parse.GetValue(body) ?? ""), parse.GetValue(sender), parse.GetValue(subject), parse.GetValue(correlation), ct);
    return 0;
}));
var listenSubject = new Option<string?>("--subject") { Description = "only subjects matching this pattern (* wildcard, matched at the start)" };
var listenSender = new Option<string?>("--sender") { Description = "only senders matching this pattern" };
var listen = new Command("listen", "print broadcasts as they arrive (Ctrl-C to stop)") { listenSubject, listenSender };
listen.SetAction((parse, ct) => WithClient(parse, ct, async client =>
{
    var senderFilter = parse.GetValue(listenSender) is { } sp ? new BroadcastFilter(FilterKind.Glob, sp) : null;
    var subjectFilter = parse.GetValue(listenSubject) is { } jp ? new BroadcastFilter(FilterKind.Glob, jp) : null;
    await foreach (var message in client.SubscribeAsync(parse.GetValue(ns)!, senderFilter, subjectFilter, ct))
    {
        var text = Encoding.UTF8.GetString(message.Body);
        if (parse.GetValue(json))
        {
            Output.WriteJson(new { sender = message.Sender, subject = message.Subject, correlation_id = message.CorrelationId, body = text });
        }
        else
        {
            Console.WriteLine($"[{message.Subject ?? "-"}] from {message.Sender ?? "-"}: {text}");
        }
    }

    return 0;
}));

var root = new RootCommand("actionwurm: add, control and inspect tatzelwurm tasks and workers")
{
    new Command("task", "tasks")
    {
        add,
        Control("play", TaskAction.Play, "created/pause → ready (or resume on its worker)", allowAll: true),
        Control("pause", TaskAction.Pause, "created/ready → pause; a running task is paused on its worker", allowAll: true),
        Control("kill", TaskAction.Kill, "terminate with exit code -1 (a running task is killed on its worker)", allowAll: false),
        list,
        show,
        wait,
    },
    new Command("worker", "workers")
    {
        workerList,
        WorkerAct("drain", WorkerAction.Drain, "no new tasks; running ones finish"),
        WorkerAct("stop", WorkerAction.Stop, "drain, then shut down gracefully"),
        WorkerAct("undrain", WorkerAction.Undrain, "take new tasks again"),
    },
    new Command("tag", "tag concurrency limits") { tagLimit, tagList },
    new Command("broadcast", "broadcast messages") { ns, send, listen },
    watch,
};
root.Options.Add(server);
root.Options.Add(token);
root.Options.Add(data);
root.Options.Add(json);
return await root.Parse(args).InvokeAsync();
