using System.Diagnostics;
using Spectre.Console;
using Tatzelwurm.Client;

namespace Tatzelwurm.LoadGen;

/// <summary>The scale scenarios of issue 7: a million queued tasks, a thousand idle workers, an idle coordinator.</summary>
public static class Scale
{
    public sealed record QueuedResult(
        int Queued,
        double FillSeconds,
        long RssAfterFillBytes,
        long PeakRssDuringFillBytes,
        double CpuSecondsToFill,
        RunResult BacklogRun,
        RunResult BaselineRun,
        double ThroughputRatio,
        double FinishedRatio,
        RunResult KeptBacklogRun,
        RunResult KeptBaselineRun,
        double KeptRatio,
        double? RecoverySeconds,
        int RecoveredTasks,
        long RssAfterRecoveryBytes,
        string Store);

    /// <summary>
    /// Fills a coordinator with <paramref name="queued"/> ready tasks (no worker yet), reads its memory,
    /// then measures throughput (2 workers, 1 submitter adding <paramref name="tasks"/> tasks; the run
    /// ends once they are all acknowledged and the workers finished <paramref name="tasks"/>) with that
    /// backlog and, in a fresh coordinator, with <paramref name="baseline"/> queued, with every task
    /// the workers finished in the same windows. Kills the filled coordinator (SIGKILL) and times its
    /// restart until it answers a request, with the number of tasks it recovered. Then measures
    /// assignment throughput proper on the restarted coordinator and on a fresh one: the queue kept at
    /// <paramref name="queued"/> and at <paramref name="baseline"/> (<see cref="Workload.KeepQueued"/>),
    /// the time to the workers' <paramref name="keptTasks"/>-th completion.
    /// </summary>
    public static async Task<QueuedResult> QueuedAsync(string dll, string? store, IReadOnlyList<string> args, int queued, int baseline, int tasks, int keptTasks, bool fsyncs, CancellationToken cancellationToken)
    {
        var dataDirectory = Path.Combine(Path.GetTempPath(), $"tw-scale-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            var workload = Workload.Throughput with { Name = $"backlog-{queued}", Tasks = tasks, Prefill = queued, Timeout = TimeSpan.FromMinutes(10) };
            var coordinator = await CoordinatorProcess.StartAsync(dll, dataDirectory, store, args, TimeSpan.FromSeconds(60));
            var storeName = TatzelwurmTarget.DescribeStore(coordinator.Log) ?? store ?? "default";
            var connection = new ConnectionOptions { Server = coordinator.Server, Token = coordinator.Token, ConnectTimeout = TimeSpan.FromSeconds(60) };

            var fillMeter = new ProcessMeter(coordinator.Stats);
            var fillStarted = Stopwatch.GetTimestamp();
            await AnsiConsole.Progress().AutoClear(false).StartAsync(async ctx =>
            {
                var bar = ctx.AddTask($"queueing {queued:N0} tasks", maxValue: queued);
                await TatzelwurmTarget.PrefillAsync(connection, workload, cancellationToken, added => bar.Value = added);
            });
            var fillSeconds = Stopwatch.GetElapsedTime(fillStarted).TotalSeconds;
            await fillMeter.StopAsync();
            await fillMeter.DisposeAsync();
            // Let the runtime settle (GC after the burst) before reading resident memory.
            await Task.Delay(2000, cancellationToken);
            var rssAfterFill = coordinator.Stats.RssBytes();
            AnsiConsole.MarkupLine($"queued {queued:N0} in {Report.Num(fillSeconds, "0.0")} s · RSS {Report.MiB(rssAfterFill)} MiB (peak {Report.MiB(fillMeter.PeakRssBytes)} MiB)");

            var backlog = await Runner.RunAsync(new TatzelwurmTarget(dll, store, args, coordinator), workload, fsyncs, $"tatzelwurm {queued:N0} queued", cancellationToken);
            Report.PrintRun(backlog);

            // Crash and restart: every acknowledged task must come back.
            await coordinator.StopAsync(kill: true);
            var restarted = await CoordinatorProcess.StartAsync(dll, dataDirectory, store, args, TimeSpan.FromMinutes(5));
            double? recovery = null;
            var recovered = 0;
            long rssAfterRecovery;
            RunResult keptBacklog;
            try
            {
                var restartStarted = Stopwatch.GetTimestamp() - (long)(restarted.Startup.TotalSeconds * Stopwatch.Frequency);
                await using var client = await TatzelwurmClient.ConnectAsync(connection with { Server = restarted.Server, Token = restarted.Token }, cancellationToken);
                var page = await client.ListAsync(limit: 1, cancellationToken: cancellationToken);
                recovery = Stopwatch.GetElapsedTime(restartStarted).TotalSeconds;
                recovered = page.Counts.Values.Sum();
                rssAfterRecovery = restarted.Stats.RssBytes();
                AnsiConsole.MarkupLine($"restart after SIGKILL: answering after {Report.Num(recovery ?? double.NaN, "0.000")} s with {recovered:N0} tasks recovered · RSS {Report.MiB(rssAfterRecovery)} MiB");
                keptBacklog = await Runner.RunAsync(new TatzelwurmTarget(dll, store, args, restarted), Kept(queued), fsyncs, $"tatzelwurm {queued:N0} kept queued", cancellationToken);
                Report.PrintRun(keptBacklog);
            }
            finally
            {
                await restarted.DisposeAsync();
            }

            var baselineWorkload = workload with { Name = $"backlog-{baseline}", Prefill = baseline };
            var baselineRun = await Runner.RunAsync(new TatzelwurmTarget(dll, store, args), baselineWorkload, fsyncs, $"tatzelwurm {baseline:N0} queued", cancellationToken);
            Report.PrintRun(baselineRun);
            var keptBaseline = await Runner.RunAsync(new TatzelwurmTarget(dll, store, args), Kept(baseline), fsyncs, $"tatzelwurm {baseline:N0} kept queued", cancellationToken);
            Report.PrintRun(keptBaseline);

            return new QueuedResult(queued, fillSeconds, rssAfterFill, fillMeter.PeakRssBytes, fillMeter.CpuSeconds, backlog, baselineRun,
                backlog.TasksPerSecond / baselineRun.TasksPerSecond, backlog.CompletionsPerSecond / baselineRun.CompletionsPerSecond,
                keptBacklog, keptBaseline, keptBacklog.CompletionsPerSecond / keptBaseline.CompletionsPerSecond,
                recovery, recovered, rssAfterRecovery, storeName);

            // Assignment throughput proper: the same queue depth all through the window, refilled as the
            // workers finish, so neither run waits for its submitter.
            Workload Kept(int depth) => workload with { Name = $"kept-{depth}", Tasks = keptTasks, Prefill = depth, KeepQueued = depth };
        }
        finally
        {
            try
            {
                Directory.Delete(dataDirectory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    public sealed record IdleResult(int Workers, double Seconds, double CpuSeconds, double CpuPercentOfOneCore, long ContextSwitches, long PeakRssBytes, Dictionary<string, double> CpuByThread, string Store);

    /// <summary>Connects <paramref name="workers"/> idle workers (0 for an idle coordinator) and measures the coordinator's CPU for <paramref name="seconds"/>.</summary>
    public static async Task<IdleResult> IdleAsync(string dll, string? store, IReadOnlyList<string> args, int workers, int seconds, CancellationToken cancellationToken)
    {
        var target = new TatzelwurmTarget(dll, store, args);
        await target.PrepareAsync(Workload.Throughput with { Workers = 0, Prefill = 0 }, new Timeline(0), cancellationToken);
        try
        {
            if (workers > 0)
            {
                var connecting = Stopwatch.GetTimestamp();
                await target.StartWorkersAsync(workers, 1, cancellationToken);
                AnsiConsole.MarkupLine($"{workers:N0} workers connected and registered in {Report.Num(Stopwatch.GetElapsedTime(connecting).TotalSeconds, "0.0")} s");
            }

            // Let connection set-up and JIT settle before measuring.
            await Task.Delay(5000, cancellationToken);
            var stats = target.Coordinator!.Stats;
            var before = stats.CpuByThreadName();
            var meter = new ProcessMeter(stats);
            await AnsiConsole.Progress().AutoClear(false).StartAsync(async ctx =>
            {
                var bar = ctx.AddTask($"measuring coordinator CPU, {workers:N0} idle workers", maxValue: seconds);
                for (var i = 0; i < seconds; i++)
                {
                    await Task.Delay(1000, cancellationToken);
                    bar.Increment(1);
                }
            });
            await meter.StopAsync();
            await meter.DisposeAsync();
            var after = stats.CpuByThreadName();
            var byThread = after.Select(kv => (kv.Key, Seconds: kv.Value - before.GetValueOrDefault(kv.Key)))
                .Where(t => t.Seconds > 0).OrderByDescending(t => t.Seconds).Take(12).ToDictionary(t => t.Key, t => Math.Round(t.Seconds, 2));
            var result = new IdleResult(workers, seconds, meter.CpuSeconds, meter.CpuSeconds / seconds * 100, meter.ContextSwitches, meter.PeakRssBytes, byThread, target.Store);
            AnsiConsole.MarkupLine($"coordinator CPU {Report.Num(result.CpuSeconds, "0.00")} s over {seconds} s = [bold]{Report.Num(result.CpuPercentOfOneCore, "0.00")}% of one core[/] · {result.ContextSwitches:N0} context switches · RSS peak {Report.MiB(result.PeakRssBytes)} MiB");
            return result;
        }
        finally
        {
            await target.DisposeAsync();
        }
    }
}
