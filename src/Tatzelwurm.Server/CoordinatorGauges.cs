using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Tatzelwurm.Core;

namespace Tatzelwurm.Server;

/// <summary>
/// The coordinator's observable gauges (meter "Tatzelwurm"): tasks by state and type, workers by
/// state, each worker's load and slots, tag limits and their running counts, store health.
/// </summary>
/// <remarks>
/// Gauge callbacks run on whatever thread collects the metrics, and the tables belong to the
/// coordinator loop alone. So the callbacks only read an immutable <see cref="GaugeSnapshot"/>, which
/// <see cref="RefreshAsync"/> takes on the loop (through <see cref="Coordinator.QueryAsync{T}"/>); the
/// metrics endpoint refreshes it right before each scrape, so a scrape sees the table as of that
/// moment and an unscraped coordinator pays nothing. Taking a snapshot is one pass over the tasks
/// (tens of milliseconds at a million tasks, once per scrape interval).
/// </remarks>
public static class CoordinatorGauges
{
    // One snapshot per live coordinator; a process normally has one (tests may run several in turn).
    private static readonly ConcurrentDictionary<Coordinator, GaugeSnapshot> Snapshots = new();

    private static readonly ObservableGauge<long> Tasks = TatzelwurmMetrics.Meter.CreateObservableGauge(
        "tatzelwurm.tasks", () => Observe(s => s.Tasks.Select(t => Measure(t.Count, ("state", t.State), ("type", t.Type)))),
        description: "Tasks in the table, by state and type");

    private static readonly ObservableGauge<long> Workers = TatzelwurmMetrics.Meter.CreateObservableGauge(
        "tatzelwurm.workers", () => Observe(s => s.Workers.Select(w => Measure(w.Count, ("state", w.State)))),
        description: "Workers in the worker table, by state (connected, draining, suspect)");

    private static readonly ObservableGauge<long> WorkerLoad = TatzelwurmMetrics.Meter.CreateObservableGauge(
        "tatzelwurm.worker.load", () => Observe(s => s.Loads.Select(w => Measure(w.Load, ("worker", w.Id), ("name", w.Name)))),
        description: "Tasks a worker holds (submit, run, or paused on it)");

    private static readonly ObservableGauge<long> WorkerSlots = TatzelwurmMetrics.Meter.CreateObservableGauge(
        "tatzelwurm.worker.slots", () => Observe(s => s.Loads.Select(w => Measure(w.Slots, ("worker", w.Id), ("name", w.Name)))),
        description: "Slots a worker declared");

    private static readonly ObservableGauge<long> TagRunning = TatzelwurmMetrics.Meter.CreateObservableGauge(
        "tatzelwurm.tag.running", () => Observe(s => s.Tags.Select(t => Measure(t.Running, ("tag", t.Tag)))),
        description: "Tasks on workers carrying a tag that has a concurrency limit");

    private static readonly ObservableGauge<long> TagLimit = TatzelwurmMetrics.Meter.CreateObservableGauge(
        "tatzelwurm.tag.limit", () => Observe(s => s.Tags.Select(t => Measure(t.Limit, ("tag", t.Tag)))),
        description: "Concurrency limit of a tag");

    private static readonly ObservableGauge<long> StoreHealthy = TatzelwurmMetrics.Meter.CreateObservableGauge(
        "tatzelwurm.store.healthy", () => Observe(s => [new Measurement<long>(s.StoreHealthy ? 1 : 0)]),
        description: "1 while store commits succeed, 0 while they fail (changes are refused)");

    /// <summary>Takes a fresh snapshot of <paramref name="coordinator"/>'s tables on its loop.</summary>
    public static async Task RefreshAsync(Coordinator coordinator)
    {
        var snapshot = await coordinator.QueryAsync(GaugeSnapshot.Take);
        Snapshots[coordinator] = snapshot with { StoreHealthy = coordinator.StoreHealthy };
    }

    /// <summary>Stops reporting <paramref name="coordinator"/> (it is shutting down).</summary>
    public static void Remove(Coordinator coordinator) => Snapshots.TryRemove(coordinator, out _);

    private static IEnumerable<Measurement<long>> Observe(Func<GaugeSnapshot, IEnumerable<Measurement<long>>> read) =>
        Snapshots.Values.SelectMany(read).ToList();

    private static Measurement<long> Measure(long value, params (string Key, string Value)[] tags) =>
        new(value, tags.Select(t => new KeyValuePair<string, object?>(t.Key, t.Value)));
}

/// <summary>What the gauges report, taken on the coordinator loop.</summary>
public sealed record GaugeSnapshot(
    IReadOnlyList<(string State, string Type, long Count)> Tasks,
    IReadOnlyList<(string State, long Count)> Workers,
    IReadOnlyList<(string Id, string Name, long Load, long Slots)> Loads,
    IReadOnlyList<(string Tag, long Limit, long Running)> Tags,
    bool StoreHealthy)
{
    private static readonly TaskState[] States = Enum.GetValues<TaskState>();

    /// <summary>Reads the tables; call only on the loop.</summary>
    public static GaugeSnapshot Take(CoordinatorState state)
    {
        // Every state of every type present, zeros included, so rates and alerts see explicit zeros.
        var tasks = state.CountsByType()
            .OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .SelectMany(kv => States.Select(s => (s.Name(), kv.Key, (long)kv.Value[(int)s])))
            .ToList();
        var workers = new (string State, long Count)[] { ("connected", 0), ("draining", 0), ("suspect", 0) };
        foreach (var worker in state.Workers.Values)
        {
            var i = Array.FindIndex(workers, w => w.State == worker.LeaseName);
            if (i >= 0)
            {
                workers[i].Count++;
            }
        }

        var loads = state.Workers.Values
            .OrderBy(w => w.Id, StringComparer.Ordinal)
            .Select(w => (w.Id, w.Name, (long)w.Load, (long)w.Slots))
            .ToList();
        var tags = state.TagLimits
            .OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => (kv.Key, (long)kv.Value, (long)state.TagRunning(kv.Key)))
            .ToList();
        return new GaugeSnapshot(tasks, workers, loads, tags, true);
    }
}
