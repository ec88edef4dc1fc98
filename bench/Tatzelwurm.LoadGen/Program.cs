using System.CommandLine;
using Spectre.Console;
using Tatzelwurm.LoadGen;

// tatzelwurm-loadgen: end-to-end load against a tatzelwurm coordinator (started here, one per run,
// on 127.0.0.1) and, side by side, a RabbitMQ broker on 127.0.0.1 started by bench/run-vs-rabbitmq.sh.
// See docs/benchmarks.md for every command and what each figure means.

var coordinator = new Option<string?>("--coordinator") { Description = "path to tatzelwurm.dll [default: the one built next to this program]" };
var store = new Option<string?>("--store") { Description = "coordinator store (--store flag); omitted: the coordinator's default" };
var coordinatorArgs = new Option<string[]>("--coordinator-arg") { Description = "extra argument for the coordinator (repeatable)", AllowMultipleArgumentsPerToken = false, DefaultValueFactory = _ => [] };
var rabbitHost = new Option<string>("--rabbit-host") { DefaultValueFactory = _ => "127.0.0.1" };
var rabbitPort = new Option<int>("--rabbit-port") { DefaultValueFactory = _ => 5672 };
var rabbitPid = new Option<int>("--rabbit-pid") { Description = "pid of the RabbitMQ server (beam.smp), for CPU/RSS/fsync figures" };
var fsyncs = new Option<bool>("--fsyncs") { Description = "count the server's fsync/fdatasync calls with perf (machine-wide tracepoint, filtered by pid)", DefaultValueFactory = _ => true };
var json = new Option<string?>("--json") { Description = "write the results as JSON to this file" };

var target = new Option<string>("--target") { DefaultValueFactory = _ => "tatzelwurm", Description = "tatzelwurm or rabbitmq" };
var workloadName = new Option<string>("--workload") { DefaultValueFactory = _ => "throughput", Description = "throughput (20,000 × 200 B, 1 submitter, 2 workers) or roundtrip (2,000 one at a time); flags below override" };
var tasks = new Option<int?>("--tasks");
var submitters = new Option<int?>("--submitters");
var workers = new Option<int?>("--workers");
var window = new Option<int?>("--window") { Description = "requests in flight per submitter (1 = one at a time)" };
var prefetch = new Option<int?>("--prefetch") { Description = "worker slots (tatzelwurm) = prefetch (RabbitMQ)" };
var payload = new Option<int?>("--payload") { Description = "payload bytes" };
var taskMs = new Option<int?>("--task-ms") { Description = "task duration in ms (0: return at once; else async sleep)" };
var priorities = new Option<int?>("--priorities") { Description = "spread tasks over this many priorities" };
var tags = new Option<int?>("--tags") { Description = "tag tasks round-robin with this many tags" };
var waitResults = new Option<bool?>("--wait-results") { Description = "submitters wait for every result" };
var prefill = new Option<int?>("--prefill") { Description = "tasks queued before the measured run" };
var keepQueued = new Option<int?>("--keep-queued") { Description = "keep about this many tasks queued, refilled as the workers finish; the run ends at their N-th completion (tatzelwurm)" };
var warmup = new Option<int?>("--warmup") { Description = "tasks run unmeasured first (JIT warm-up) [throughput 200000, roundtrip 10000]" };
var runs = new Option<int>("--runs") { DefaultValueFactory = _ => 3, Description = "alternating runs per target" };
var workloads = new Option<string>("--workloads") { DefaultValueFactory = _ => "throughput,roundtrip" };

Workload BuildWorkload(ParseResult parse, string name)
{
    var w = name switch
    {
        "throughput" => Workload.Throughput,
        "roundtrip" => Workload.RoundTrip,
        _ => throw new ArgumentException($"unknown workload '{name}'"),
    };
    return w with
    {
        Tasks = parse.GetValue(tasks) ?? w.Tasks,
        Submitters = parse.GetValue(submitters) ?? w.Submitters,
        Workers = parse.GetValue(workers) ?? w.Workers,
        Window = parse.GetValue(window) ?? w.Window,
        Prefetch = parse.GetValue(prefetch) ?? w.Prefetch,
        PayloadBytes = parse.GetValue(payload) ?? w.PayloadBytes,
        TaskMs = parse.GetValue(taskMs) ?? w.TaskMs,
        Priorities = parse.GetValue(priorities) ?? w.Priorities,
        Tags = parse.GetValue(tags) ?? w.Tags,
        WaitResults = parse.GetValue(waitResults) ?? w.WaitResults,
        Prefill = parse.GetValue(prefill) ?? w.Prefill,
        KeepQueued = parse.GetValue(keepQueued) ?? w.KeepQueued,
        Warmup = parse.GetValue(warmup) ?? w.Warmup,
    };
}

ITarget MakeTarget(ParseResult parse, string name) => name switch
{
    "tatzelwurm" => new TatzelwurmTarget(parse.GetValue(coordinator) ?? CoordinatorProcess.DefaultDll(), parse.GetValue(store), parse.GetValue(coordinatorArgs) ?? []),
    "rabbitmq" => new RabbitTarget(parse.GetValue(rabbitHost)!, parse.GetValue(rabbitPort), parse.GetValue(rabbitPid)),
    _ => throw new ArgumentException($"unknown target '{name}'"),
};

var run = new Command("run", "one workload against one target")
{
    target, workloadName, tasks, submitters, workers, window, prefetch, payload, taskMs, priorities, tags, waitResults, prefill, keepQueued, warmup,
    coordinator, store, coordinatorArgs, rabbitHost, rabbitPort, rabbitPid, fsyncs, json,
};
run.SetAction(async (parse, cancellationToken) =>
{
    var w = BuildWorkload(parse, parse.GetValue(workloadName)!);
    if (w.KeepQueued > 0 && (parse.GetValue(target) != "tatzelwurm" || w.WaitResults))
    {
        Console.Error.WriteLine("--keep-queued works with --target tatzelwurm and without --wait-results");
        return 2;
    }

    var result = await Runner.RunAsync(MakeTarget(parse, parse.GetValue(target)!), w, parse.GetValue(fsyncs), $"{parse.GetValue(target)} {w.Name}", cancellationToken);
    Report.PrintRun(result);
    await Report.WriteJsonAsync(parse.GetValue(json), new { machine = Report.Machine(), date = DateTimeOffset.UtcNow, workload = w, results = new[] { result } });
    return 0;
});

var compare = new Command("compare", "tatzelwurm and RabbitMQ side by side: alternating runs, medians and ratios")
{
    workloads, runs, tasks, submitters, workers, window, prefetch, payload, taskMs, priorities, tags, warmup,
    coordinator, store, coordinatorArgs, rabbitHost, rabbitPort, rabbitPid, fsyncs, json,
};
compare.SetAction(async (parse, cancellationToken) =>
{
    var results = new List<RunResult>();
    var probeBefore = FsyncProbe.Measure();
    AnsiConsole.MarkupLine($"disk: 4 KiB append + fdatasync p50 {Report.Num(probeBefore.P50Ms, "0.000")} ms, p99 {Report.Num(probeBefore.P99Ms, "0.000")} ms");
    var names = parse.GetValue(workloads)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    var count = parse.GetValue(runs);
    foreach (var name in names)
    {
        var w = BuildWorkload(parse, name);
        for (var i = 1; i <= count; i++)
        {
            foreach (var t in Targets.Both)
            {
                var result = await Runner.RunAsync(MakeTarget(parse, t), w, parse.GetValue(fsyncs), $"{t} {name} #{i}", cancellationToken);
                Report.PrintRun(result);
                results.Add(result);
            }
        }
    }

    var probeAfter = FsyncProbe.Measure();
    var compared = Report.Compare(results);
    Report.PrintComparison(compared, count);
    AnsiConsole.MarkupLine($"disk: 4 KiB append + fdatasync p50 {Report.Num(probeBefore.P50Ms, "0.000")} / {Report.Num(probeAfter.P50Ms, "0.000")} ms, "
        + $"p99 {Report.Num(probeBefore.P99Ms, "0.000")} / {Report.Num(probeAfter.P99Ms, "0.000")} ms (before / after the runs)");
    await Report.WriteJsonAsync(parse.GetValue(json), new { machine = Report.Machine(), date = DateTimeOffset.UtcNow, runs = count, fsyncProbe = new[] { probeBefore, probeAfter }, comparison = compared, results });
    return 0;
});

var queued = new Option<int>("--queued") { DefaultValueFactory = _ => 1_000_000 };
var baseline = new Option<int>("--baseline") { DefaultValueFactory = _ => 1_000 };
var scaleTasks = new Option<int>("--tasks") { DefaultValueFactory = _ => 100_000, Description = "completions measured in each throughput run (20,000 gave ratios from 0.57 to 0.83 for one build)" };
var keptTasks = new Option<int>("--kept-tasks") { DefaultValueFactory = _ => 400_000, Description = "completions measured in each kept-depth run (100,000 is a window of about 2 s: ratios from 0.67 to 1.02 for one build)" };
var scaleQueued = new Command("scale-queued", "a million queued tasks: memory, restart recovery, throughput vs 1,000 queued")
{
    queued, baseline, scaleTasks, keptTasks, coordinator, store, coordinatorArgs, fsyncs, json,
};
scaleQueued.SetAction(async (parse, cancellationToken) =>
{
    var result = await Scale.QueuedAsync(parse.GetValue(coordinator) ?? CoordinatorProcess.DefaultDll(), parse.GetValue(store), parse.GetValue(coordinatorArgs) ?? [],
        parse.GetValue(queued), parse.GetValue(baseline), parse.GetValue(scaleTasks), parse.GetValue(keptTasks), parse.GetValue(fsyncs), cancellationToken);
    AnsiConsole.MarkupLine($"throughput with {result.Queued:N0} queued ÷ with {parse.GetValue(baseline):N0} queued = [bold]{Report.Num(result.ThroughputRatio, "0.00")}[/]"
        + $"; all tasks the workers finished in the same windows: {Report.Num(result.FinishedRatio, "0.00")}");
    AnsiConsole.MarkupLine($"assignment throughput with {result.Queued:N0} kept queued ÷ with {parse.GetValue(baseline):N0} kept queued = [bold]{Report.Num(result.KeptRatio, "0.00")}[/]");
    await Report.WriteJsonAsync(parse.GetValue(json), new { machine = Report.Machine(), date = DateTimeOffset.UtcNow, scale = result });
    return 0;
});

var idleWorkers = new Option<int>("--workers") { DefaultValueFactory = _ => 1_000 };
var seconds = new Option<int>("--seconds") { DefaultValueFactory = _ => 60 };
var scaleWorkers = new Command("scale-workers", "idle workers heartbeating: coordinator CPU") { idleWorkers, seconds, coordinator, store, coordinatorArgs, json };
scaleWorkers.SetAction(async (parse, cancellationToken) =>
{
    var result = await Scale.IdleAsync(parse.GetValue(coordinator) ?? CoordinatorProcess.DefaultDll(), parse.GetValue(store), parse.GetValue(coordinatorArgs) ?? [],
        parse.GetValue(idleWorkers), parse.GetValue(seconds), cancellationToken);
    await Report.WriteJsonAsync(parse.GetValue(json), new { machine = Report.Machine(), date = DateTimeOffset.UtcNow, idle = result });
    return 0;
});

var scaleIdle = new Command("scale-idle", "an idle coordinator: CPU") { seconds, coordinator, store, coordinatorArgs, json };
scaleIdle.SetAction(async (parse, cancellationToken) =>
{
    var result = await Scale.IdleAsync(parse.GetValue(coordinator) ?? CoordinatorProcess.DefaultDll(), parse.GetValue(store), parse.GetValue(coordinatorArgs) ?? [],
        0, parse.GetValue(seconds), cancellationToken);
    await Report.WriteJsonAsync(parse.GetValue(json), new { machine = Report.Machine(), date = DateTimeOffset.UtcNow, idle = result });
    return 0;
});

var root = new RootCommand("tatzelwurm-loadgen: end-to-end load generator (127.0.0.1 only)") { run, compare, scaleQueued, scaleWorkers, scaleIdle };
return await root.Parse(args).InvokeAsync();

internal static class Targets
{
    public static readonly string[] Both = ["tatzelwurm", "rabbitmq"];
}
