using Microsoft.Data.Sqlite;
using Tatzelwurm.Core;
using Xunit;

namespace Tatzelwurm.Storage.Tests;

internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "tatzelwurm-storage-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover temp dir is not a test failure.
        }
    }
}

internal static class TestData
{
    // Whole milliseconds: the store keeps unix ms.
    public static readonly DateTimeOffset T0 = DateTimeOffset.FromUnixTimeMilliseconds(1_750_000_000_123);

    public static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Every field set to a non-default value.</summary>
    public static TaskRecord Full(long id, TaskState state = TaskState.Run) => new()
    {
        Id = id,
        Type = "aiida.calcjob",
        Priority = -7,
        Tags = ["gpu", "site:cscs"],
        Payload = new byte[] { 0, 1, 2, 255, 0x80, 42 },
        Policy = DeliveryPolicy.AtLeastOnce,
        NoReply = true,
        State = state,
        ExitCode = 3,
        Result = [9, 8, 7],
        Error = "boom: \"quoted\"\nsecond line",
        WorkerId = "worker-7",
        Attempts = 2,
        Layers = 4,
        PendingControl = PendingControl.Kill,
        KillRequestedAt = T0.AddSeconds(5),
        Reason = "operator said so",
        CreatedAt = T0,
        UpdatedAt = T0.AddSeconds(6),
        History =
        [
            new Transition(TaskState.Created, T0, null),
            new Transition(TaskState.Ready, T0.AddMilliseconds(1), "play"),
            new Transition(state, T0.AddSeconds(6), "ünïcödé ✓ \"and\" \\ <tags>"),
        ],
    };

    public static TaskRecord Minimal(long id) => new()
    {
        Id = id,
        Type = "t",
        CreatedAt = T0,
        UpdatedAt = T0,
    };

    /// <summary>A batch of new tasks (<paramref name="upserts"/>) and changes to stored ones (<paramref name="updates"/>).</summary>
    public static StoreBatch Batch(
        IReadOnlyList<TaskRecord>? upserts = null,
        IReadOnlyList<long>? deletes = null,
        IReadOnlyList<KeyValuePair<string, int?>>? tagLimits = null,
        long? lastTaskId = null,
        IReadOnlyList<TaskUpsert>? updates = null)
    {
        TaskUpsert[] all = [.. (upserts ?? []).Select(TaskUpsert.New), .. updates ?? []];
        return new(all, deletes ?? [], tagLimits ?? [], lastTaskId ?? (all.Length > 0 ? all.Max(u => u.Task.Id) : 0));
    }

    /// <summary><paramref name="next"/> replacing the stored <paramref name="stored"/>.</summary>
    public static TaskUpsert Updated(TaskRecord stored, TaskRecord next) => new(next, stored.History.Count);

    /// <summary>The task after one more transition, as Core makes it: history appended, never rewritten.</summary>
    public static TaskRecord Moved(TaskRecord task, TaskState to, string? reason = null)
    {
        var at = task.UpdatedAt.AddMilliseconds(1500);
        return task with { State = to, UpdatedAt = at, History = [.. task.History, new Transition(to, at, reason)] };
    }

    public static KeyValuePair<string, int?> Limit(string tag, int? max) => new(tag, max);

    public static void Same(TaskRecord expected, TaskRecord actual)
    {
        Assert.Equal(expected.Id, actual.Id);
        Assert.Equal(expected.Type, actual.Type);
        Assert.Equal(expected.Priority, actual.Priority);
        Assert.Equal(expected.Tags, actual.Tags);
        // A store may leave out a terminated task's bytes (ITaskStore.LoadAsync), never its size.
        Assert.Equal(expected.PayloadSize, actual.PayloadSize);
        if (!(actual.State == TaskState.Terminated && actual.Payload.IsEmpty))
        {
            Assert.Equal(expected.Payload.ToArray(), actual.Payload.ToArray());
        }

        Assert.Equal(expected.Policy, actual.Policy);
        Assert.Equal(expected.NoReply, actual.NoReply);
        Assert.Equal(expected.State, actual.State);
        Assert.Equal(expected.ExitCode, actual.ExitCode);
        Assert.Equal(expected.Result, actual.Result);
        Assert.Equal(expected.Error, actual.Error);
        Assert.Equal(expected.WorkerId, actual.WorkerId);
        Assert.Equal(expected.Attempts, actual.Attempts);
        Assert.Equal(expected.Layers, actual.Layers);
        Assert.Equal(expected.PendingControl, actual.PendingControl);
        Assert.Equal(expected.KillRequestedAt, actual.KillRequestedAt);
        Assert.Equal(expected.Reason, actual.Reason);
        Assert.Equal(expected.CreatedAt, actual.CreatedAt);
        Assert.Equal(expected.UpdatedAt, actual.UpdatedAt);
        Assert.Equal(expected.History, actual.History);
    }

    public static void Same(StoreSnapshot expected, StoreSnapshot actual)
    {
        Assert.Equal(expected.LastTaskId, actual.LastTaskId);
        Assert.Equal(expected.TagLimits.OrderBy(kv => kv.Key, StringComparer.Ordinal), actual.TagLimits.OrderBy(kv => kv.Key, StringComparer.Ordinal));
        Assert.Equal(expected.Tasks.Select(t => t.Id), actual.Tasks.Select(t => t.Id));
        for (var i = 0; i < expected.Tasks.Count; i++)
        {
            Same(expected.Tasks[i], actual.Tasks[i]);
        }
    }
}
