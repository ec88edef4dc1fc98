using System.Diagnostics.Metrics;

namespace Tatzelwurm.Server;

/// <summary>
/// The coordinator's instruments (System.Diagnostics.Metrics, meter "Tatzelwurm"). Counters are
/// thread-safe, so sessions record frames directly instead of posting to the coordinator loop.
/// </summary>
public static class TatzelwurmMetrics
{
    public const string MeterName = "Tatzelwurm";

    public static readonly Meter Meter = new(MeterName);

    public static readonly Counter<long> FramesIn = Meter.CreateCounter<long>("tatzelwurm.frames.in", description: "Frames received from clients");
    public static readonly Counter<long> FramesOut = Meter.CreateCounter<long>("tatzelwurm.frames.out", description: "Frames sent to clients");
    public static readonly Counter<long> ProtocolErrors = Meter.CreateCounter<long>("tatzelwurm.protocol.errors", description: "Frames refused for violating the protocol, by code");
    public static readonly Counter<long> ConnectionsRefused = Meter.CreateCounter<long>("tatzelwurm.connections.refused", description: "Handshakes refused, by code");
    public static readonly Counter<long> Assignments = Meter.CreateCounter<long>("tatzelwurm.assignments", description: "Tasks handed to workers");
    public static readonly Counter<long> Terminations = Meter.CreateCounter<long>("tatzelwurm.terminations", description: "Tasks terminated, by exit code class");
    public static readonly Histogram<double> CommitSeconds = Meter.CreateHistogram<double>("tatzelwurm.store.commit.duration", unit: "s", description: "Store commit latency");
    public static readonly Histogram<long> CommitBatchSize = Meter.CreateHistogram<long>("tatzelwurm.store.commit.batch_size", description: "Task records per store commit");
    public static readonly Histogram<double> QueueWaitSeconds = Meter.CreateHistogram<double>("tatzelwurm.task.queue_wait", unit: "s", description: "Time from ready to submit");
    public static readonly Histogram<double> RunSeconds = Meter.CreateHistogram<double>("tatzelwurm.task.run_time", unit: "s", description: "Time from run to terminated");
}
