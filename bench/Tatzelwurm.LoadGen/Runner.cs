using System.Diagnostics;
using Spectre.Console;

namespace Tatzelwurm.LoadGen;

/// <summary>Runs one workload against one target and measures it.</summary>
public static class Runner
{
    public static async Task<RunResult> RunAsync(ITarget target, Workload workload, bool countFsyncs, string label, CancellationToken cancellationToken)
    {
        var timeline = new Timeline(workload.Tasks);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(workload.Timeout);
        await target.PrepareAsync(workload, timeline, timeout.Token);
        if (workload.Warmup > 0 && (workload.Prefill == 0 || target is TatzelwurmTarget))
        {
            await target.WarmupAsync(workload.Warmup, timeout.Token);
        }

        var server = new ProcessStats(target.ServerPid);
        AnsiConsole.MarkupLine($"[grey]{target.Name}: server pid {target.ServerPid}, load generator pid {Environment.ProcessId}[/]");
        var fsyncs = countFsyncs ? await FsyncCounter.TryStartAsync(target.ServerPid) : null;
        var threadsBefore = server.CpuByThreadName();
        await using var meter = new ProcessMeter(server);
        var clientCpu = Process.GetCurrentProcess().TotalProcessorTime;
        var clientAllocated = GC.GetTotalAllocatedBytes();
        // Every task the workers finish in the window counts, prefilled ones too: with a backlog they
        // finish more than the N measured tasks while the submitter adds those.
        var completedBefore = timeline.CompletedCount;
        var started = Stopwatch.GetTimestamp();

        // A kept-queued run ends at the workers' N-th completion in the window; every other run once
        // the submitter's adds are acknowledged and the workers have finished N tasks.
        bool Done(Task adding) => workload.KeepQueued > 0
            ? timeline.CompletedCount - completedBefore >= workload.Tasks
            : adding.IsCompleted && (workload.WaitResults || target.WorkersDone());

        var submit = target.SubmitAsync(timeout.Token);
        await AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var bar = ctx.AddTask(label, maxValue: workload.Tasks);
                while (!Done(submit))
                {
                    if (submit.IsFaulted || submit.IsCanceled)
                    {
                        break;
                    }

                    bar.Value = workload.WaitResults ? timeline.ResultCount : Math.Min(timeline.CompletedCount, workload.Tasks);
                    await Task.Delay(1, timeout.Token);
                }

                bar.Value = workload.Tasks;
            });
        if (submit.IsFaulted || submit.IsCanceled)
        {
            await submit;
        }

        var ended = Stopwatch.GetTimestamp();
        var completions = timeline.CompletedCount - completedBefore;
        var threadsAfter = server.CpuByThreadName();
        await meter.StopAsync();
        var fsyncCount = fsyncs is null ? null : await fsyncs.StopAsync();
        clientCpu = Process.GetCurrentProcess().TotalProcessorTime - clientCpu;
        clientAllocated = GC.GetTotalAllocatedBytes() - clientAllocated;
        await submit;

        var result = new RunResult
        {
            Target = target.Name,
            Workload = workload.Name,
            Tasks = workload.Tasks,
            Seconds = (ended - started) / (double)Stopwatch.Frequency,
            Completions = completions,
            Latency = timeline.Phases(workload.WaitResults),
            ServerCpuSeconds = meter.CpuSeconds,
            ServerPeakRssBytes = meter.PeakRssBytes,
            ServerFsyncs = fsyncCount,
            ServerWriteBytes = meter.WriteBytes,
            ClientCpuSeconds = clientCpu.TotalSeconds,
            ClientAllocatedBytes = clientAllocated,
            Store = target.Store,
            ServerCpuByThread = threadsAfter
                .Select(kv => (kv.Key, Seconds: kv.Value - threadsBefore.GetValueOrDefault(kv.Key)))
                .Where(t => t.Seconds > 0)
                .OrderByDescending(t => t.Seconds)
                .Take(12)
                .ToDictionary(t => t.Key, t => Math.Round(t.Seconds, 2)),
        };
        await target.DisposeAsync();
        return result;
    }
}
