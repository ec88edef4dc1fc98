using System.Collections.Concurrent;
using System.Text;
using Tatzelwurm.Client;

namespace Tatzelwurm.Crash.Tests;

/// <summary>
/// A payload says whose it is: <c>tzcrash|&lt;key&gt;|&lt;random bytes&gt;</c>, the key chosen by the
/// submitter (unique over the run) and the random tail of random length, so a task in the table can
/// be traced to the one add that sent it and any damage to the bytes shows.
/// </summary>
internal static class Payloads
{
    private static readonly byte[] Prefix = "tzcrash|"u8.ToArray();

    public static byte[] Make(string key, Random rng)
    {
        var head = Encoding.UTF8.GetBytes(key + "|");
        var tail = new byte[rng.Next(0, 256)];
        rng.NextBytes(tail);
        return [.. Prefix, .. head, .. tail];
    }

    /// <summary>The submitter's key, or null if the bytes are not a crash-test payload.</summary>
    public static string? Key(ReadOnlySpan<byte> payload)
    {
        if (!payload.StartsWith(Prefix))
        {
            return null;
        }

        var rest = payload[Prefix.Length..];
        var end = rest.IndexOf((byte)'|');
        return end <= 0 ? null : Encoding.UTF8.GetString(rest[..end]);
    }
}

/// <summary>An add the coordinator acknowledged: its key, and whether the task is known to be past created.</summary>
internal sealed class AckedTask(string key, bool ready)
{
    private volatile bool _ready = ready;
    private volatile bool _playLost;

    public string Key { get; } = key;

    /// <summary>Added ready, or played with the play acknowledged: it must never be seen in created again.</summary>
    public bool Ready
    {
        get => _ready;
        set => _ready = value;
    }

    /// <summary>A play of this task got no reply (the coordinator died): it may or may not have landed.</summary>
    public bool PlayLost
    {
        get => _playLost;
        set => _playLost = value;
    }
}

/// <summary>
/// What the clients saw, written by submitters and task handlers while the coordinator is killed
/// under them, and read by the checks after each kill. Everything a client records here it learnt
/// from a coordinator that is dead by the time a check reads it, so an acknowledgement found here
/// is one that the store must honour.
/// </summary>
internal sealed class Ledger
{
    private long _addsSent;
    private long _playsAcknowledged;
    private long _playsLost;
    private long _playsLandedEarlier;
    private long _addReplies;
    private long _addReplyTicks;
    private long _addReplyMaxTicks;

    /// <summary>Every payload a submitter sent, by key; recorded before the add goes out.</summary>
    public ConcurrentDictionary<string, byte[]> Sent { get; } = new();

    /// <summary>Acknowledged adds by task id.</summary>
    public ConcurrentDictionary<long, AckedTask> Acked { get; } = new();

    /// <summary>Keys of adds whose reply never came (the coordinator died with the request in flight).</summary>
    public ConcurrentDictionary<string, byte> LostAdds { get; } = new();

    /// <summary>How often each task id was handed to a handler.</summary>
    public ConcurrentDictionary<long, int> Executions { get; } = new();

    /// <summary>The key in the payload each executed task carried, and the worker that ran it first.</summary>
    public ConcurrentDictionary<long, (string Key, string Worker)> Executed { get; } = new();

    /// <summary>Things a client saw that must not happen; the next check fails on them.</summary>
    public ConcurrentQueue<string> Violations { get; } = new();

    public long AddsSent => Interlocked.Read(ref _addsSent);

    public long PlaysAcknowledged => Interlocked.Read(ref _playsAcknowledged);

    public long PlaysLost => Interlocked.Read(ref _playsLost);

    public long PlaysLandedEarlier => Interlocked.Read(ref _playsLandedEarlier);

    /// <summary>Mean and longest time from sending an add to its acknowledgement.</summary>
    public (TimeSpan Mean, TimeSpan Max) AddReplyTimes =>
        Interlocked.Read(ref _addReplies) is var n and > 0
            ? (TimeSpan.FromTicks(Interlocked.Read(ref _addReplyTicks) / n), TimeSpan.FromTicks(Interlocked.Read(ref _addReplyMaxTicks)))
            : (TimeSpan.Zero, TimeSpan.Zero);

    public void AddReplied(TimeSpan took)
    {
        Interlocked.Increment(ref _addReplies);
        Interlocked.Add(ref _addReplyTicks, took.Ticks);
        for (var max = Interlocked.Read(ref _addReplyMaxTicks); took.Ticks > max; max = Interlocked.Read(ref _addReplyMaxTicks))
        {
            Interlocked.CompareExchange(ref _addReplyMaxTicks, took.Ticks, max);
        }
    }

    /// <summary>Acknowledged tasks no handler has run yet (roughly: counts may move while read).</summary>
    public int Backlog => Acked.Count - Executions.Count;

    public void Sending(IReadOnlyList<(string Key, byte[] Payload)> adds)
    {
        foreach (var (key, payload) in adds)
        {
            Sent[key] = payload;
        }

        Interlocked.Add(ref _addsSent, adds.Count);
    }

    public void PlayAcknowledged(long id)
    {
        Acked[id].Ready = true;
        Interlocked.Increment(ref _playsAcknowledged);
    }

    public void PlayLandedEarlier(long id)
    {
        Acked[id].Ready = true;
        Interlocked.Increment(ref _playsLandedEarlier);
    }

    public void PlaysWithoutReply(IEnumerable<long> ids)
    {
        foreach (var id in ids)
        {
            Acked[id].PlayLost = true;
        }

        Interlocked.Increment(ref _playsLost);
    }

    /// <summary>Called by a handler as it starts: counts the execution and checks the payload it was given.</summary>
    public void Executing(AssignedTask task, string worker)
    {
        var key = Payloads.Key(task.Payload);
        var count = Executions.AddOrUpdate(task.Id, 1, (_, n) => n + 1);
        var first = Executed.GetOrAdd(task.Id, (key ?? "?", worker));
        if (count > 1)
        {
            Violations.Enqueue($"task {task.Id} ({key}) executed {count} times: first on {first.Worker}, now on {worker} (attempt {task.Attempt})");
        }

        if (key is null || !Sent.TryGetValue(key, out var sent) || !sent.AsSpan().SequenceEqual(task.Payload))
        {
            Violations.Enqueue($"task {task.Id} was handed to {worker} with a payload no submitter sent ({task.Payload.Length} bytes, key {key ?? "none"})");
        }
        else if (Acked.TryGetValue(task.Id, out var acked) && acked.Key != key)
        {
            Violations.Enqueue($"task {task.Id} was acknowledged for {acked.Key} but {worker} was handed the payload of {key}");
        }
    }
}
