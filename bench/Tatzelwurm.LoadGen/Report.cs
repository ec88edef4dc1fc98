using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;

namespace Tatzelwurm.LoadGen;

/// <summary>Tables for people and JSON for scripts and the history in docs/benchmarks.md.</summary>
public static class Report
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string Ms(double value) => value.ToString(value < 10 ? "0.000" : "0.0", CultureInfo.InvariantCulture);

    public static string Num(double value, string format = "0.0") => value.ToString(format, CultureInfo.InvariantCulture);

    public static string MiB(long bytes) => (bytes / 1024.0 / 1024.0).ToString("0.0", CultureInfo.InvariantCulture);

    public static void PrintRun(RunResult r)
    {
        var table = new Table().Title($"{r.Target} · {r.Workload} · {r.Tasks:N0} tasks · {r.Store}").Border(TableBorder.Rounded);
        table.AddColumn("phase (ms)");
        foreach (var column in new[] { "n", "mean", "p50", "p90", "p99", "max" })
        {
            table.AddColumn(new TableColumn(column).RightAligned());
        }

        foreach (var (phase, p) in r.Latency)
        {
            table.AddRow(phase, p.Count.ToString(CultureInfo.InvariantCulture), Ms(p.Mean), Ms(p.P50), Ms(p.P90), Ms(p.P99), Ms(p.Max));
        }

        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine(
            $"  [bold]{Num(r.TasksPerSecond, "0")} tasks/s[/] in {Num(r.Seconds, "0.000")} s"
            + (r.Completions != r.Tasks ? $" (workers finished {r.Completions:N0}: {Num(r.CompletionsPerSecond, "0")}/s)" : "")
            + $" · server CPU {Num(r.ServerCpuSeconds, "0.00")} s"
            + (r.ServerJitCpuSeconds is { } jit ? $" (JIT {Num(jit, "0.00")} s)" : "") + " · "
            + $"server peak RSS {MiB(r.ServerPeakRssBytes)} MiB · fsyncs {(r.ServerFsyncs?.ToString(CultureInfo.InvariantCulture) ?? "n/a")} · "
            + $"written {MiB(r.ServerWriteBytes)} MiB · load generator CPU {Num(r.ClientCpuSeconds, "0.00")} s, "
            + $"allocated {Num(r.ClientAllocatedBytes / (double)Math.Max(1, r.Completions), "0")} B per task");
    }

    /// <summary>The figures compared between targets: name, value, whether higher is better.</summary>
    public static IEnumerable<(string Figure, double Value, bool HigherBetter)> Figures(RunResult r)
    {
        yield return ("tasks/s", r.TasksPerSecond, true);
        foreach (var (phase, p) in r.Latency)
        {
            yield return ($"{phase} p50 ms", p.P50, false);
            yield return ($"{phase} p99 ms", p.P99, false);
        }

        yield return ("server CPU s", r.ServerCpuSeconds, false);
        yield return ("server CPU ms/task", r.ServerCpuSeconds * 1000 / r.Tasks, false);
        yield return ("server peak RSS MiB", r.ServerPeakRssBytes / 1024.0 / 1024.0, false);
        if (r.ServerFsyncs is { } f)
        {
            yield return ("server fsyncs", f, false);
        }
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        if (sorted.Count == 0)
        {
            return double.NaN;
        }

        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    public sealed record ComparedFigure(string Workload, string Figure, double Tatzelwurm, double RabbitMq, double Ratio, bool HigherBetter);

    /// <summary>Medians per target and the tatzelwurm ÷ RabbitMQ ratio of each figure.</summary>
    public static List<ComparedFigure> Compare(IReadOnlyList<RunResult> results)
    {
        var compared = new List<ComparedFigure>();
        foreach (var workload in results.Select(r => r.Workload).Distinct())
        {
            var tw = results.Where(r => r.Workload == workload && r.Target == "tatzelwurm").ToList();
            var rb = results.Where(r => r.Workload == workload && r.Target == "rabbitmq").ToList();
            if (tw.Count == 0 || rb.Count == 0)
            {
                continue;
            }

            foreach (var (figure, _, higher) in Figures(tw[0]))
            {
                var a = Median(tw.SelectMany(Figures).Where(f => f.Figure == figure).Select(f => f.Value));
                var b = Median(rb.SelectMany(Figures).Where(f => f.Figure == figure).Select(f => f.Value));
                if (!double.IsNaN(b))
                {
                    compared.Add(new ComparedFigure(workload, figure, a, b, b <= 0 || a < 0 ? double.NaN : a / b, higher));
                }
            }
        }

        return compared;
    }

    public static void PrintComparison(List<ComparedFigure> compared, int runs)
    {
        var table = new Table().Title($"medians of {runs} alternating runs each · ratio = tatzelwurm ÷ rabbitmq").Border(TableBorder.Rounded);
        table.AddColumn("workload");
        table.AddColumn("figure");
        table.AddColumn(new TableColumn("tatzelwurm").RightAligned());
        table.AddColumn(new TableColumn("rabbitmq").RightAligned());
        table.AddColumn(new TableColumn("ratio").RightAligned());
        table.AddColumn("better");
        foreach (var c in compared)
        {
            var better = c.HigherBetter ? c.Ratio > 1 : c.Ratio < 1;
            table.AddRow(c.Workload, c.Figure, Num(c.Tatzelwurm, "0.###"), Num(c.RabbitMq, "0.###"),
                $"[{(better ? "green" : "red")}]{Num(c.Ratio, "0.###")}[/]", better ? "tatzelwurm" : "rabbitmq");
        }

        AnsiConsole.Write(table);
    }

    public static Dictionary<string, string> Machine()
    {
        var cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
        var mem = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal", StringComparison.Ordinal)).Split(':', 2)[1].Trim();
        return new Dictionary<string, string>
        {
            ["nproc"] = Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture),
            ["cpu"] = cpu,
            ["memory"] = mem,
            ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
            ["dotnet"] = Environment.Version.ToString(),
            ["loadavg"] = File.ReadAllText("/proc/loadavg").Trim(),
        };
    }

    public static async Task WriteJsonAsync(string? path, object document)
    {
        if (string.IsNullOrEmpty(path))
        {
            return;
        }

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        await File.WriteAllTextAsync(path, JsonSerializer.Serialize(document, Json));
        AnsiConsole.MarkupLine($"results written to [blue]{Markup.Escape(path)}[/]");
    }
}
