using Tatzelwurm.Core;
using Tatzelwurm.Protocol;
using CoreDeliveryPolicy = Tatzelwurm.Core.DeliveryPolicy;
using WireDeliveryPolicy = Tatzelwurm.Protocol.DeliveryPolicy;

namespace Tatzelwurm.Server;

/// <summary>Maps domain records to wire messages and back: the only place the two vocabularies meet.</summary>
internal static class Mapping
{
    public static TaskInfo ToInfo(this TaskRecord task, CoordinatorState state, bool withHistory) => new(
        task.Id,
        (int)task.State,
        task.Type,
        task.Priority,
        task.Tags,
        (WireDeliveryPolicy)(int)task.Policy,
        task.WorkerId,
        task.Attempts,
        task.ExitCode,
        task.CreatedAt.ToUnixTimeMilliseconds(),
        task.UpdatedAt.ToUnixTimeMilliseconds(),
        task.Reason,
        task.PayloadSize,
        withHistory ? task.History.Select(h => new TransitionInfo((int)h.State, h.At.ToUnixTimeMilliseconds(), h.Reason)).ToList() : [],
        task.WorkerId is { } w && state.Workers.TryGetValue(w, out var worker) ? worker.LeaseName : null,
        task.Result is not null || task.Error is not null,
        task.NoReply);

    public static WorkerInfo ToInfo(this WorkerRecord worker) => new(
        worker.Id,
        worker.Name,
        worker.Types.Order(StringComparer.Ordinal).ToList(),
        worker.Slots,
        worker.Load,
        worker.LeaseName,
        worker.LastSeen.ToUnixTimeMilliseconds(),
        worker.ConnectedAt.ToUnixTimeMilliseconds(),
        worker.Draining);

    public static TaskEvent ToEvent(this TaskRecord task) => new(
        task.Id, (int)task.State, task.Type, task.WorkerId, task.ExitCode, task.UpdatedAt.ToUnixTimeMilliseconds(), task.Reason);

    public static TaskOutcome ToOutcome(this TaskRecord task, uint requestId) =>
        new(requestId, task.Id, task.ExitCode ?? 0, task.Result, task.Error, task.Layers);

    public static NewTask ToNewTask(this TaskSpec spec) => new(
        spec.Payload ?? [],
        spec.Type,
        spec.Priority,
        spec.Tags ?? [],
        spec.Policy switch
        {
            WireDeliveryPolicy.AtMostOnce => CoreDeliveryPolicy.AtMostOnce,
            WireDeliveryPolicy.AtLeastOnce => CoreDeliveryPolicy.AtLeastOnce,
            _ => null,
        },
        spec.Ready,
        spec.NoReply);

    public static ErrorCode ToErrorCode(this RejectionCode code) => code switch
    {
        RejectionCode.UnknownTask => ErrorCode.UnknownTask,
        RejectionCode.IllegalTransition => ErrorCode.IllegalTransition,
        RejectionCode.UnknownWorker => ErrorCode.UnknownWorker,
        RejectionCode.StoreUnavailable => ErrorCode.StoreUnavailable,
        _ => ErrorCode.InvalidRequest,
    };

    public static ControlAction ToControlAction(this WorkerMessageKind kind) => kind switch
    {
        WorkerMessageKind.Pause => ControlAction.Pause,
        WorkerMessageKind.Play => ControlAction.Play,
        WorkerMessageKind.Kill => ControlAction.Kill,
        WorkerMessageKind.Abandon => ControlAction.Abandon,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a task control"),
    };
}
