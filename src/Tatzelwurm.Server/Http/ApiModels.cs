using System.Text.Json;
using System.Text.Json.Serialization;
using Tatzelwurm.Core;

namespace Tatzelwurm.Server.Http;

// The HTTP API's JSON (docs/operations.md, "Monitoring"). Times are Unix milliseconds, states use the
// seed's names (created, ready, submit, run, pause, terminated). Payloads and results never appear:
// only their size and whether a result exists.

internal sealed record TransitionDto(string State, long At, string? Reason);

internal sealed record TaskDto(
    long Id,
    string State,
    string Type,
    int Priority,
    IReadOnlyList<string> Tags,
    string Policy,
    string? Worker,
    string? WorkerName,
    string? WorkerLease,
    int Attempts,
    int? ExitCode,
    long CreatedAt,
    long UpdatedAt,
    string? Reason,
    string? PendingControl,
    int PayloadSize,
    bool HasResult,
    bool NoReply,
    string? Error,
    IReadOnlyList<TransitionDto>? History);

internal sealed record TaskPageDto(
    IReadOnlyList<TaskDto> Tasks,
    int Matched,
    long? NextAfter,
    IReadOnlyDictionary<string, int> Counts);

internal sealed record CountsDto(
    IReadOnlyDictionary<string, int> States,
    int Total,
    int Workers,
    int WorkersConnected,
    int Slots,
    int Load,
    int TagLimits,
    bool StoreHealthy,
    long Commits,
    long Now);

internal sealed record WorkerDto(
    string Id,
    string Name,
    string State,
    IReadOnlyList<string> Types,
    int Slots,
    int Load,
    bool Draining,
    bool Stopping,
    bool Registered,
    long LastSeen,
    long HeartbeatAgeMs,
    long ConnectedAt,
    IReadOnlyList<long> Tasks);

internal sealed record WorkersDto(long Now, IReadOnlyList<WorkerDto> Workers);

internal sealed record TagLimitDto(string Tag, int Limit, int Running);

internal sealed record TagLimitsDto(IReadOnlyList<TagLimitDto> Limits);

internal sealed record TaskEventDto(long Id, string State, string Type, string? Worker, int? ExitCode, long At, string? Reason);

internal sealed record ProblemDto(string Error, string? Code = null);

internal sealed record ActionDto(bool Ok, string Action, string Target, string? Code = null, string? Message = null);

internal sealed record HealthDto(string Status, string? Detail = null);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, WriteIndented = false)]
[JsonSerializable(typeof(TaskDto))]
[JsonSerializable(typeof(TaskPageDto))]
[JsonSerializable(typeof(CountsDto))]
[JsonSerializable(typeof(WorkersDto))]
[JsonSerializable(typeof(TagLimitsDto))]
[JsonSerializable(typeof(TaskEventDto))]
[JsonSerializable(typeof(ProblemDto))]
[JsonSerializable(typeof(ActionDto))]
[JsonSerializable(typeof(HealthDto))]
internal sealed partial class ApiJson : JsonSerializerContext;

/// <summary>Domain records to API records. Runs on the coordinator loop (worker records are mutable).</summary>
internal static class ApiMapping
{
    public static readonly string[] StateNames = Enum.GetValues<TaskState>().Select(s => s.Name()).ToArray();

    public static TaskDto ToDto(this TaskRecord task, CoordinatorState state, bool detail)
    {
        var worker = task.WorkerId is { } id ? state.Workers.GetValueOrDefault(id) : null;
        return new TaskDto(
            task.Id,
            task.State.Name(),
            task.Type,
            task.Priority,
            task.Tags,
            task.Policy == DeliveryPolicy.AtLeastOnce ? "at-least-once" : "at-most-once",
            task.WorkerId,
            worker?.Name,
            worker?.LeaseName,
            task.Attempts,
            task.ExitCode,
            task.CreatedAt.ToUnixTimeMilliseconds(),
            task.UpdatedAt.ToUnixTimeMilliseconds(),
            task.Reason,
            task.PendingControl == PendingControl.None ? null : task.PendingControl.ToString().ToLowerInvariant(),
            task.PayloadSize,
            task.Result is not null,
            task.NoReply,
            detail ? task.Error : null,
            detail ? task.History.Select(h => new TransitionDto(h.State.Name(), h.At.ToUnixTimeMilliseconds(), h.Reason)).ToList() : null);
    }

    public static WorkerDto ToDto(this WorkerRecord worker, DateTimeOffset now) => new(
        worker.Id,
        worker.Name,
        worker.Stopping && worker.Lease == WorkerLease.Connected ? "stopping" : worker.LeaseName,
        worker.Types.Order(StringComparer.Ordinal).ToList(),
        worker.Slots,
        worker.Load,
        worker.Draining,
        worker.Stopping,
        worker.Registered,
        worker.LastSeen.ToUnixTimeMilliseconds(),
        (long)Math.Max(0, (now - worker.LastSeen).TotalMilliseconds),
        worker.ConnectedAt.ToUnixTimeMilliseconds(),
        worker.Tasks.Order().ToList());

    public static Dictionary<string, int> Counts(CoordinatorState state) =>
        Enum.GetValues<TaskState>().ToDictionary(s => s.Name(), state.Count);

    public static TaskEventDto ToDto(this Protocol.TaskEvent change) => new(
        change.TaskId,
        change.State is >= 0 and <= 5 ? ((TaskState)change.State).Name() : change.State.ToString(System.Globalization.CultureInfo.InvariantCulture),
        change.Type,
        change.Worker,
        change.ExitCode,
        change.AtMs,
        change.Reason);
}
