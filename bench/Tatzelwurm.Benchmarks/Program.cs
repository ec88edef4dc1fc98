using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// Micro benchmarks (docs/benchmarks.md). A short job run in-process, so that a full run
// (`dotnet run -c Release --project bench/Tatzelwurm.Benchmarks -- --filter '*'`) finishes in minutes
// on a 2-core machine: no per-benchmark project build, 2 warmups, 6 measured iterations.
var config = ManualConfig.Create(DefaultConfig.Instance)
    .AddJob(Job.Default
        .WithToolchain(InProcessEmitToolchain.Instance)
        .WithLaunchCount(1)
        .WithWarmupCount(2)
        .WithIterationCount(6)
        .WithId("short"))
    .AddDiagnoser(MemoryDiagnoser.Default)
    .AddColumn(StatisticColumn.P95)
    .WithOptions(ConfigOptions.JoinSummary);

if (args is ["heap", ..])
{
    await Tatzelwurm.Benchmarks.HeapPerTask.RunAsync(args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 100_000);
    return;
}

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);

public partial class Program;
