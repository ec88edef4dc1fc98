using System.Globalization;

namespace Tatzelwurm.Crash.Tests;

/// <summary>The shape of one crash run: how often the coordinator dies and how much load it dies under.</summary>
internal sealed record CrashPlan
{
    /// <summary>The suite's version: 20 kills in well under a minute on two cores.</summary>
    public static readonly CrashPlan Short = new() { Name = "short" };

    /// <summary>On demand (TATZELWURM_CRASH_LONG=1): ten times the kills, more clients, longer uptimes.</summary>
    public static readonly CrashPlan Long = new()
    {
        Name = "long",
        Kills = 200,
        MinUptime = TimeSpan.FromMilliseconds(150),
        MaxUptime = TimeSpan.FromMilliseconds(2500),
        Submitters = 6,
        Workers = 4,
        Slots = 8,
        MaxBacklog = 1000,
        AddsPerSecond = 120,
        TimeLimit = TimeSpan.FromMinutes(30),
    };

    public required string Name { get; init; }

    /// <summary>kill -9s while the load runs (one more follows the drain, to check the final state).</summary>
    public int Kills { get; init; } = 20;

    /// <summary>How long a started coordinator serves (after its address file appears) before it is killed.</summary>
    public TimeSpan MinUptime { get; init; } = TimeSpan.FromMilliseconds(300);

    public TimeSpan MaxUptime { get; init; } = TimeSpan.FromMilliseconds(1500);

    /// <summary>Chance that the next incarnation is killed 0–400 ms after its process starts: in start-up, recovery, or its first moments of service.</summary>
    public double EarlyKillChance { get; init; } = 0.15;

    public int Submitters { get; init; } = 3;

    public int Workers { get; init; } = 2;

    public int Slots { get; init; } = 4;

    /// <summary>
    /// All submitters together add about this many tasks a second while the coordinator serves.
    /// Every check reads the whole table (terminated tasks stay for the 7-day retention), so the
    /// rate bounds how long a run takes.
    /// </summary>
    public int AddsPerSecond { get; init; } = 400;

    /// <summary>Submitters stop adding while this many acknowledged tasks wait to run, so the drain stays short.</summary>
    public int MaxBacklog { get; init; } = 300;

    /// <summary>A handler runs for 1 ms up to this long.</summary>
    public TimeSpan MaxTaskTime { get; init; } = TimeSpan.FromMilliseconds(40);

    /// <summary>The whole run, kills and drain, fails beyond this.</summary>
    public TimeSpan TimeLimit { get; init; } = TimeSpan.FromMinutes(3);

    /// <summary>After the load stops, every task must terminate within this.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>TATZELWURM_CRASH_SEED repeats a run's kill schedule and submitter choices; otherwise a fresh one.</summary>
    public static int Seed() =>
        Environment.GetEnvironmentVariable("TATZELWURM_CRASH_SEED") is { Length: > 0 } s
            ? int.Parse(s, CultureInfo.InvariantCulture)
            : Random.Shared.Next();
}
