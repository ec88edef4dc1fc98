using System.CommandLine;
using Tatzelwurm.Client;
using Tatzelwurm.Workwurm;

var types = new Option<string[]>("--type") { Description = "task type to accept (repeatable); none: every type", AllowMultipleArgumentsPerToken = false };
var slots = new Option<int>("--slots") { Description = "tasks run at once", DefaultValueFactory = _ => 1 };
var name = new Option<string?>("--name") { Description = "name shown in worker lists [default: host name]" };
var id = new Option<string?>("--id") { Description = "stable worker identity [default: host-pid-random]" };
var server = new Option<string?>("--server") { Description = "coordinator host:port [default $TATZELWURM_SERVER or <data>/address]" };
var token = new Option<string?>("--token") { Description = "auth token [default $TATZELWURM_TOKEN or <data>/token]" };
var data = new Option<string?>("--data") { Description = "a local coordinator's data directory" };
var verbose = new Option<bool>("--verbose", "-v") { Description = "print a line per task (connection changes are always printed)" };

var root = new RootCommand("workwurm: the tatzelwurm reference worker; runs mock tasks (sleep, block, eval, fail)")
{
    types, slots, name, id, server, token, data, verbose,
};

root.SetAction(async (parse, cancellationToken) =>
{
    // Connection changes are always printed (they are rare, and a worker that cannot reach its
    // coordinator should say so); --verbose adds a line per task.
    Action<string> note = line => Console.Error.WriteLine($"workwurm: {line}");
    var log = parse.GetValue(verbose) ? note : null;
    var options = new WorkerOptions
    {
        Connection = new ConnectionOptions { Server = parse.GetValue(server), Token = parse.GetValue(token), DataDirectory = parse.GetValue(data), ClientName = "workwurm" },
        Types = parse.GetValue(types) ?? [],
        Slots = Math.Max(1, parse.GetValue(slots)),
        Log = note,
        Warning = line => note($"warning: {line}"),
    };
    if (parse.GetValue(name) is { } n)
    {
        options = options with { Name = n };
    }

    if (parse.GetValue(id) is { } i)
    {
        options = options with { WorkerId = i };
    }

    using var worker = new Worker(options, async (task, control) =>
    {
        log?.Invoke($"task {task.Id} ({task.Type}) started");
        TaskOutcomeReport outcome;
        try
        {
            outcome = await MockRunner.RunAsync(task, control);
        }
        catch (OperationCanceledException) when (control.Killed.IsCancellationRequested)
        {
            // The runner reports a killed task as exit code -1; log its end like any other.
            log?.Invoke($"task {task.Id} ended with exit code -1 (killed)");
            throw;
        }

        log?.Invoke($"task {task.Id} ended with exit code {outcome.ExitCode}");
        return outcome;
    });
    Console.Error.WriteLine($"workwurm {options.WorkerId}: {options.Slots} slots, types [{string.Join(", ", options.Types)}]");
    try
    {
        await worker.RunAsync(cancellationToken);
    }
    catch (TatzelwurmException ex)
    {
        Console.Error.WriteLine($"workwurm: {ex.Code}: {ex.Message}");
        return 2;
    }
    catch (FormatException ex)
    {
        Console.Error.WriteLine($"workwurm: {ex.Message}");
        return 2;
    }

    // One summary line on exit; the end-to-end tests read it.
    Console.WriteLine($"workwurm {options.WorkerId}: completed {worker.Completed} tasks, max concurrent {worker.MaxConcurrent} of {options.Slots} slots");
    return 0;
});

return await root.Parse(args).InvokeAsync();
