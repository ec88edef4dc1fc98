using System.Diagnostics;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Tatzelwurm.Core;

namespace Tatzelwurm.Server;

/// <summary>
/// The single writer behind the coordinator loop (group commit). It takes every unit queued since its
/// last commit, merges them into one store batch, commits it once, and only then releases the frames
/// that acknowledge or report those changes, in order. When a commit fails, the changes in it are
/// already applied in the loop's memory and will be committed by the retry, so their acks are held
/// with the reports (assignments, events, outcomes) until the retry succeeds, probing at most once a
/// second; the loop refuses every later change with StoreUnavailable without applying it. So
/// StoreUnavailable always means "nothing happened" and a client may safely retry, while an ack still
/// means "durable".
/// </summary>
internal sealed partial class StoreWriter(ITaskStore store, ICoordinatorInbox inbox, TimeProvider time, ILogger logger)
{
    private static readonly TimeSpan ProbeInterval = TimeSpan.FromSeconds(1);

    private readonly Channel<CommitUnit> _units = Channel.CreateUnbounded<CommitUnit>(new UnboundedChannelOptions { SingleReader = true });
    private readonly List<Effect> _held = [];
    private StoreBatch? _pending;
    private bool _healthy = true;
    private DateTimeOffset _nextProbe;

    /// <summary>Commits performed (fsync'd in the durable mode); for metrics and benchmarks.</summary>
    public long Commits { get; private set; }

    public void Enqueue(CommitUnit unit) => _units.Writer.TryWrite(unit);

    public void Complete() => _units.Writer.TryComplete();

    public async Task RunAsync()
    {
        var units = new List<CommitUnit>();
        while (await _units.Reader.WaitToReadAsync())
        {
            units.Clear();
            while (_units.Reader.TryRead(out var unit))
            {
                units.Add(unit);
            }

            var batch = Merge(_pending, units);
            var durable = batch.IsEmpty;
            if (!durable && (_healthy || time.GetUtcNow() >= _nextProbe))
            {
                durable = await TryCommitAsync(batch);
            }

            if (durable)
            {
                _pending = null;
                if (!_healthy)
                {
                    _healthy = true;
                    LogStoreRecovered(logger);
                    inbox.Post(new StoreHealth(true, null));
                }

                foreach (var effect in _held)
                {
                    effect.Session.Send(effect.Message);
                }

                _held.Clear();
                foreach (var unit in units)
                {
                    foreach (var effect in unit.Effects)
                    {
                        effect.Session.Send(effect.Message);
                    }
                }
            }
            else
            {
                _pending = batch;
                foreach (var unit in units)
                {
                    foreach (var effect in unit.Effects)
                    {
                        Withhold(effect);
                    }
                }
            }
        }
    }

    private void Withhold(Effect effect)
    {
        // Answering an ack with StoreUnavailable here would be a lie the client acts on: the change stays
        // applied and the retry persists it, so a client that re-sends an AddTasks would create duplicates.
        if (effect.Kind == EffectKind.Plain)
        {
            effect.Session.Send(effect.Message);
        }
        else
        {
            _held.Add(effect);
        }
    }

    private async Task<bool> TryCommitAsync(StoreBatch batch)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            await store.CommitAsync(batch, CancellationToken.None);
            Commits++;
            TatzelwurmMetrics.CommitSeconds.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
            TatzelwurmMetrics.CommitBatchSize.Record(batch.Upserts.Count + batch.Deletes.Count);
            return true;
        }
        catch (Exception ex)
        {
            _nextProbe = time.GetUtcNow() + ProbeInterval;
            if (_healthy)
            {
                _healthy = false;
                LogStoreFailed(logger, ex);
                inbox.Post(new StoreHealth(false, ex.Message));
            }

            return false;
        }
    }

    // Later after-images of a task supersede earlier ones, so merging keeps only the newest, but with
    // the earliest record of what the store holds: a failed batch's changes were never written, so the
    // retry must write everything since that base (the whole row for a task new in it, every history
    // entry after its stored count).
    internal static StoreBatch Merge(StoreBatch? pending, List<CommitUnit> units)
    {
        if (pending is null && units.Count == 1)
        {
            return units[0].Batch;
        }

        var records = new Dictionary<long, (TaskRecord? Task, int StoredHistory)>();
        var tagLimits = new List<KeyValuePair<string, int?>>();
        var lastId = 0L;
        foreach (var batch in units.Select(u => u.Batch).Prepend(pending).OfType<StoreBatch>())
        {
            foreach (var upsert in batch.Upserts)
            {
                var stored = records.TryGetValue(upsert.Task.Id, out var earlier) ? earlier.StoredHistory : upsert.StoredHistory;
                records[upsert.Task.Id] = (upsert.Task, stored);
            }

            foreach (var id in batch.Deletes)
            {
                records[id] = (null, TaskUpsert.NotStored);
            }

            tagLimits.AddRange(batch.TagLimits);
            lastId = Math.Max(lastId, batch.LastTaskId);
        }

        return new StoreBatch(
            records.Values.Where(r => r.Task is not null).Select(r => new TaskUpsert(r.Task!, r.StoredHistory)).ToList(),
            records.Where(kv => kv.Value.Task is null).Select(kv => kv.Key).ToList(),
            tagLimits,
            lastId);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "store commit failed; not acknowledging changes until it recovers")]
    private static partial void LogStoreFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "store commits succeed again")]
    private static partial void LogStoreRecovered(ILogger logger);
}
