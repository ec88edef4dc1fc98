namespace Tatzelwurm.LoadGen;

/// <summary>A system under test: prepares a fresh queue with connected workers, then runs the submitters.</summary>
public interface ITarget : IAsyncDisposable
{
    string Name { get; }

    /// <summary>How the server persists (for the report).</summary>
    string Store { get; }

    /// <summary>The server process measured for CPU, memory and fsyncs.</summary>
    int ServerPid { get; }

    /// <summary>Fresh queue, prefill queued, workers connected and ready; nothing measured yet.</summary>
    Task PrepareAsync(Workload workload, Timeline timeline, CancellationToken cancellationToken);

    /// <summary>Runs <paramref name="tasks"/> tasks of the workload unmeasured and waits until the workers finished them.</summary>
    Task WarmupAsync(int tasks, CancellationToken cancellationToken);

    /// <summary>Runs the submitters; returns when every task is acknowledged (and its result received, when waited for).</summary>
    Task SubmitAsync(CancellationToken cancellationToken);

    /// <summary>True once the workers have finished (and had acknowledged) the measured number of tasks.</summary>
    bool WorkersDone();
}
