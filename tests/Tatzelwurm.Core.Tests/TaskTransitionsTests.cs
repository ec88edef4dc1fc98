using static Tatzelwurm.Core.Tests.Fixtures;

namespace Tatzelwurm.Core.Tests;

/// <summary>The pure state machine (SPEC §3): every edge, every command from every state. No clock.</summary>
public class TaskTransitionsTests
{
    private static readonly DateTimeOffset Now = T0 + TimeSpan.FromMinutes(5);

    /// <summary>The states a task can be in, with "pause" split by whether a worker still holds it.</summary>
    public enum Situation
    {
        Created,
        Ready,
        Submit,
        Run,
        Pause,
        PauseOnWorker,
        Terminated,
    }

    public enum Command
    {
        Play,
        Pause,
        Kill,
        Assign,
        Accept,
        Reject,
        WorkerPaused,
        WorkerResumed,
        WorkerPending,
        WorkerFinished,
        WorkerLost,
    }

    private sealed record Expect(TaskState State, string? Worker, PendingControl Pending = PendingControl.None, WorkerSignal Signal = WorkerSignal.None);

    // The legal (command, situation) pairs with the worker connected; every other pair must be refused.
    private static readonly Dictionary<(Command, Situation), Expect> Legal = new()
    {
        [(Command.Play, Situation.Created)] = new(TaskState.Ready, null),
        [(Command.Play, Situation.Pause)] = new(TaskState.Ready, null),
        [(Command.Play, Situation.PauseOnWorker)] = new(TaskState.Pause, "w1", PendingControl.Play, WorkerSignal.Play),
        [(Command.Pause, Situation.Created)] = new(TaskState.Pause, null),
        [(Command.Pause, Situation.Ready)] = new(TaskState.Pause, null),
        [(Command.Pause, Situation.Submit)] = new(TaskState.Submit, "w1", PendingControl.Pause),
        [(Command.Pause, Situation.Run)] = new(TaskState.Run, "w1", PendingControl.Pause, WorkerSignal.Pause),
        [(Command.Kill, Situation.Created)] = new(TaskState.Terminated, null),
        [(Command.Kill, Situation.Ready)] = new(TaskState.Terminated, null),
        [(Command.Kill, Situation.Pause)] = new(TaskState.Terminated, null),
        [(Command.Kill, Situation.Submit)] = new(TaskState.Submit, "w1", PendingControl.Kill, WorkerSignal.Kill),
        [(Command.Kill, Situation.Run)] = new(TaskState.Run, "w1", PendingControl.Kill, WorkerSignal.Kill),
        [(Command.Kill, Situation.PauseOnWorker)] = new(TaskState.Pause, "w1", PendingControl.Kill, WorkerSignal.Kill),
        [(Command.Assign, Situation.Ready)] = new(TaskState.Submit, "w2"),
        [(Command.Accept, Situation.Submit)] = new(TaskState.Run, "w1"),
        [(Command.Reject, Situation.Submit)] = new(TaskState.Ready, null),
        [(Command.WorkerPaused, Situation.Run)] = new(TaskState.Pause, "w1"),
        [(Command.WorkerResumed, Situation.PauseOnWorker)] = new(TaskState.Run, "w1"),
        [(Command.WorkerPending, Situation.Submit)] = new(TaskState.Run, "w1"),
        [(Command.WorkerPending, Situation.Run)] = new(TaskState.Run, "w1"),
        [(Command.WorkerPending, Situation.PauseOnWorker)] = new(TaskState.Pause, "w1"),
        [(Command.WorkerFinished, Situation.Submit)] = new(TaskState.Terminated, null),
        [(Command.WorkerFinished, Situation.Run)] = new(TaskState.Terminated, null),
        [(Command.WorkerFinished, Situation.PauseOnWorker)] = new(TaskState.Terminated, null),
        [(Command.WorkerLost, Situation.Submit)] = new(TaskState.Ready, null),
        [(Command.WorkerLost, Situation.Run)] = new(TaskState.Pause, null),
        [(Command.WorkerLost, Situation.PauseOnWorker)] = new(TaskState.Pause, null),
    };

    // SPEC §3 edges as the state machine implements them (Submit → Pause: a pause asked for before
    // the worker accepted is applied when the worker is lost or rejects the task).
    private static readonly HashSet<(TaskState, TaskState)> LegalEdges =
    [
        (TaskState.Created, TaskState.Ready), (TaskState.Created, TaskState.Pause), (TaskState.Created, TaskState.Terminated),
        (TaskState.Ready, TaskState.Submit), (TaskState.Ready, TaskState.Pause), (TaskState.Ready, TaskState.Terminated),
        (TaskState.Submit, TaskState.Run), (TaskState.Submit, TaskState.Ready), (TaskState.Submit, TaskState.Pause), (TaskState.Submit, TaskState.Terminated),
        (TaskState.Run, TaskState.Pause), (TaskState.Run, TaskState.Ready), (TaskState.Run, TaskState.Terminated),
        (TaskState.Pause, TaskState.Ready), (TaskState.Pause, TaskState.Run), (TaskState.Pause, TaskState.Terminated),
    ];

    public static TheoryData<TaskState, TaskState> AllStatePairs()
    {
        var data = new TheoryData<TaskState, TaskState>();
        foreach (var from in Enum.GetValues<TaskState>())
        {
            foreach (var to in Enum.GetValues<TaskState>())
            {
                data.Add(from, to);
            }
        }

        return data;
    }

    public static TheoryData<Command, Situation> AllCommandsFromAllSituations()
    {
        var data = new TheoryData<Command, Situation>();
        foreach (var command in Enum.GetValues<Command>())
        {
            foreach (var situation in Enum.GetValues<Situation>())
            {
                data.Add(command, situation);
            }
        }

        return data;
    }

    private static TaskRecord In(Situation situation) => situation switch
    {
        Situation.Created => Task(TaskState.Created),
        Situation.Ready => Task(TaskState.Ready),
        Situation.Submit => Task(TaskState.Submit, "w1"),
        Situation.Run => Task(TaskState.Run, "w1"),
        Situation.Pause => Task(TaskState.Pause),
        Situation.PauseOnWorker => Task(TaskState.Pause, "w1"),
        Situation.Terminated => Task(TaskState.Terminated),
        _ => throw new ArgumentOutOfRangeException(nameof(situation)),
    };

    private static Step Apply(Command command, TaskRecord task, bool connected = true, string worker = "w1") => command switch
    {
        Command.Play => TaskTransitions.Play(task, connected, Now),
        Command.Pause => TaskTransitions.Pause(task, connected, Now),
        Command.Kill => TaskTransitions.Kill(task, connected, Now),
        Command.Assign => TaskTransitions.Assign(task, "w2", Now),
        Command.Accept => TaskTransitions.Accept(task, worker, Now),
        Command.Reject => TaskTransitions.Reject(task, worker, Now),
        Command.WorkerPaused => TaskTransitions.WorkerPaused(task, worker, Now),
        Command.WorkerResumed => TaskTransitions.WorkerResumed(task, worker, Now),
        Command.WorkerPending => TaskTransitions.WorkerPending(task, worker, Now),
        Command.WorkerFinished => TaskTransitions.WorkerFinished(task, worker, 0, [42], null, Now),
        Command.WorkerLost => TaskTransitions.WorkerLost(task, "worker w1 declared dead", Now),
        _ => throw new ArgumentOutOfRangeException(nameof(command)),
    };

    private static void AssertRefused(TaskRecord input, TaskRecord snapshot, Step step)
    {
        Assert.False(step.Ok);
        Assert.Null(step.Task);
        Assert.Equal(WorkerSignal.None, step.Signal);
        Assert.Equal(RejectionCode.IllegalTransition, step.Rejection!.Code);
        Assert.Contains($"task {input.Id} is {input.State.Name()}", step.Rejection.Message, StringComparison.Ordinal);
        Assert.Equal(snapshot, input);
    }

    // ---- the edge table --------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(AllStatePairs))]
    public void IsLegal_EveryStatePair_MatchesSpecEdges(TaskState from, TaskState to) =>
        Assert.Equal(LegalEdges.Contains((from, to)), TaskTransitions.IsLegal(from, to));

    [Fact]
    public void IsLegal_Terminated_HasNoOutgoingEdge() =>
        Assert.DoesNotContain(Enum.GetValues<TaskState>(), to => TaskTransitions.IsLegal(TaskState.Terminated, to));

    [Fact]
    public void IsLegal_SameState_NeverAnEdge() =>
        Assert.DoesNotContain(Enum.GetValues<TaskState>(), s => TaskTransitions.IsLegal(s, s));

    // ---- every command from every state ----------------------------------------------------------

    [Theory]
    [MemberData(nameof(AllCommandsFromAllSituations))]
    public void Command_FromEveryState_LegalMovesAsSpecifiedIllegalIsRefusedUnchanged(Command command, Situation situation)
    {
        var task = In(situation);
        var snapshot = task with { };

        var step = Apply(command, task);

        if (!Legal.TryGetValue((command, situation), out var expect))
        {
            AssertRefused(task, snapshot, step);
            return;
        }

        Assert.True(step.Ok, step.Rejection?.Message);
        Assert.Equal(snapshot, task);
        var next = step.Task!;
        Assert.Equal(expect.State, next.State);
        Assert.Equal(expect.Worker, next.WorkerId);
        Assert.Equal(expect.Pending, next.PendingControl);
        Assert.Equal(expect.Signal, step.Signal);
        Assert.Equal(Now, next.UpdatedAt);

        // Identity and spec never change with a transition.
        Assert.Equal((task.Id, task.Type, task.Priority, task.Tags, task.Policy, task.CreatedAt),
            (next.Id, next.Type, next.Priority, next.Tags, next.Policy, next.CreatedAt));
        Assert.True(task.Payload.Span.SequenceEqual(next.Payload.Span));

        if (next.State != task.State)
        {
            Assert.True(TaskTransitions.IsLegal(task.State, next.State));
            Assert.Equal(task.History.Count + 1, next.History.Count);
            Assert.Equal(next.State, next.History[^1].State);
            Assert.Equal(Now, next.History[^1].At);
        }
        else
        {
            Assert.Equal(task.History, next.History);
        }
    }

    [Theory]
    [InlineData(Command.Accept, Situation.Submit)]
    [InlineData(Command.Reject, Situation.Submit)]
    [InlineData(Command.WorkerPaused, Situation.Run)]
    [InlineData(Command.WorkerResumed, Situation.PauseOnWorker)]
    [InlineData(Command.WorkerPending, Situation.Submit)]
    [InlineData(Command.WorkerPending, Situation.Run)]
    [InlineData(Command.WorkerPending, Situation.PauseOnWorker)]
    [InlineData(Command.WorkerFinished, Situation.Submit)]
    [InlineData(Command.WorkerFinished, Situation.Run)]
    [InlineData(Command.WorkerFinished, Situation.PauseOnWorker)]
    public void WorkerReport_FromAnotherWorker_IsRefusedUnchanged(Command command, Situation situation)
    {
        var task = In(situation);
        var snapshot = task with { };

        AssertRefused(task, snapshot, Apply(command, task, worker: "intruder"));
    }

    /// <summary>
    /// No combination of state, pending control, policy and connectivity may make a transition
    /// throw (Move throws on an edge the table does not allow) or take an illegal edge.
    /// </summary>
    [Fact]
    public void Command_EveryStatePendingPolicyAndConnectivity_NeverThrowsNorTakesIllegalEdge()
    {
        foreach (var command in Enum.GetValues<Command>())
        {
            foreach (var situation in Enum.GetValues<Situation>())
            {
                foreach (var pending in Enum.GetValues<PendingControl>())
                {
                    foreach (var policy in Enum.GetValues<DeliveryPolicy>())
                    {
                        foreach (var connected in new[] { true, false })
                        {
                            var task = In(situation) with
                            {
                                PendingControl = pending,
                                Policy = policy,
                                KillRequestedAt = pending == PendingControl.Kill ? T0 : null,
                            };
                            Step step;
                            try
                            {
                                step = Apply(command, task, connected);
                            }
                            catch (Exception ex)
                            {
                                Assert.Fail($"{command} from {situation} with pending {pending}, {policy}, connected={connected} threw: {ex.Message}");
                                return;
                            }

                            if (step.Task is { } next && next.State != task.State)
                            {
                                Assert.True(TaskTransitions.IsLegal(task.State, next.State), $"{command} from {situation}: {task.State} → {next.State}");
                            }

                            // A task that left its worker carries no control for that worker.
                            if (task.WorkerId is not null && step.Task is { WorkerId: null } off)
                            {
                                Assert.NotEqual(PendingControl.Kill, off.PendingControl);
                                Assert.Null(off.KillRequestedAt);
                            }
                        }
                    }
                }
            }
        }
    }

    // ---- create --------------------------------------------------------------------------------

    [Theory]
    [InlineData(true, TaskState.Ready)]
    [InlineData(false, TaskState.Created)]
    public void Create_ReadyFlag_StartsInReadyOrCreatedWithOneHistoryEntry(bool ready, TaskState expected)
    {
        var task = TaskTransitions.Create(11, Spec(type: "calc", priority: 4, tags: ["a", "b"], ready: ready), DeliveryPolicy.AtLeastOnce, Now);

        Assert.Equal(expected, task.State);
        Assert.Equal((11L, "calc", 4, DeliveryPolicy.AtLeastOnce), (task.Id, task.Type, task.Priority, task.Policy));
        Assert.Equal(["a", "b"], task.Tags);
        Assert.Equal([new Transition(expected, Now, null)], task.History);
        Assert.Equal((Now, Now), (task.CreatedAt, task.UpdatedAt));
        Assert.Null(task.WorkerId);
        Assert.Equal(0, task.Attempts);
    }

    [Fact]
    public void Create_ExplicitPolicy_OverridesCoordinatorDefault()
    {
        var task = TaskTransitions.Create(1, Spec(policy: DeliveryPolicy.AtMostOnce), DeliveryPolicy.AtLeastOnce, Now);

        Assert.Equal(DeliveryPolicy.AtMostOnce, task.Policy);
    }

    // ---- play / pause / kill details -------------------------------------------------------------

    [Fact]
    public void Play_PausedOnDisconnectedWorker_RecordsPlayWithoutSignal()
    {
        var step = TaskTransitions.Play(Task(TaskState.Pause, "w1"), workerConnected: false, Now);

        Assert.Equal(PendingControl.Play, step.Task!.PendingControl);
        Assert.Equal(WorkerSignal.None, step.Signal);
    }

    [Fact]
    public void Play_PausedWithoutWorker_ClearsPendingAndGoesReady()
    {
        var step = TaskTransitions.Play(Task(TaskState.Pause, pending: PendingControl.Play), workerConnected: true, Now);

        Assert.Equal(TaskState.Ready, step.Task!.State);
        Assert.Equal(PendingControl.None, step.Task.PendingControl);
    }

    [Theory]
    [InlineData(TaskState.Run)]
    [InlineData(TaskState.Submit)]
    public void Play_OnWorkerWithPendingPause_WithdrawsThePause(TaskState state)
    {
        var step = TaskTransitions.Play(Task(state, "w1", PendingControl.Pause), workerConnected: true, Now);

        Assert.Equal(state, step.Task!.State);
        Assert.Equal(PendingControl.Play, step.Task.PendingControl);
    }

    [Theory]
    [InlineData(TaskState.Run)]
    [InlineData(TaskState.Submit)]
    [InlineData(TaskState.Pause)]
    public void Play_WithPendingKill_IsRefused(TaskState state)
    {
        var task = Task(state, "w1", PendingControl.Kill);

        AssertRefused(task, task with { }, TaskTransitions.Play(task, true, Now));
    }

    [Fact]
    public void Pause_RunOnDisconnectedWorker_RecordsPauseWithoutSignal()
    {
        var step = TaskTransitions.Pause(Task(TaskState.Run, "w1"), workerConnected: false, Now);

        Assert.Equal((TaskState.Run, PendingControl.Pause, WorkerSignal.None), (step.Task!.State, step.Task.PendingControl, step.Signal));
    }

    [Theory]
    [InlineData(TaskState.Run)]
    [InlineData(TaskState.Submit)]
    public void Pause_WithPendingKill_IsRefused(TaskState state)
    {
        var task = Task(state, "w1", PendingControl.Kill);

        AssertRefused(task, task with { }, TaskTransitions.Pause(task, true, Now));
    }

    [Fact]
    public void Pause_ReadyTask_RecordsReason()
    {
        var step = TaskTransitions.Pause(Task(TaskState.Ready), true, Now);

        Assert.Equal("paused by actioner", step.Task!.Reason);
        Assert.Equal(new Transition(TaskState.Pause, Now, "paused by actioner"), step.Task.History[^1]);
    }

    [Theory]
    [InlineData(TaskState.Created)]
    [InlineData(TaskState.Ready)]
    [InlineData(TaskState.Pause)]
    public void Kill_TaskOnNoWorker_TerminatesAtOnceWithMinusOne(TaskState state)
    {
        var step = TaskTransitions.Kill(Task(state), workerConnected: false, Now);

        Assert.Equal((TaskState.Terminated, (int?)ExitCodes.Killed, "killed by actioner"), (step.Task!.State, step.Task.ExitCode, step.Task.Reason));
        Assert.Equal(WorkerSignal.None, step.Signal);
    }

    [Theory]
    [InlineData(true, WorkerSignal.Kill)]
    [InlineData(false, WorkerSignal.None)]
    public void Kill_RunningTask_RecordsRequestTimeAndSignalsOnlyIfConnected(bool connected, WorkerSignal signal)
    {
        var step = TaskTransitions.Kill(Task(TaskState.Run, "w1"), connected, Now);

        Assert.Equal((TaskState.Run, PendingControl.Kill, (DateTimeOffset?)Now), (step.Task!.State, step.Task.PendingControl, step.Task.KillRequestedAt));
        Assert.Equal(signal, step.Signal);
    }

    [Fact]
    public void Kill_KillAlreadyPending_IsRefused()
    {
        var task = Task(TaskState.Run, "w1", PendingControl.Kill);

        AssertRefused(task, task with { }, TaskTransitions.Kill(task, true, Now));
    }

    // ---- worker reports -------------------------------------------------------------------------

    [Theory]
    [InlineData(PendingControl.None, WorkerSignal.None)]
    [InlineData(PendingControl.Pause, WorkerSignal.Pause)]
    [InlineData(PendingControl.Kill, WorkerSignal.Kill)]
    [InlineData(PendingControl.Play, WorkerSignal.None)]
    public void Accept_WithPendingControl_SendsItNow(PendingControl pending, WorkerSignal signal)
    {
        var step = TaskTransitions.Accept(Task(TaskState.Submit, "w1", pending), "w1", Now);

        Assert.Equal(TaskState.Run, step.Task!.State);
        Assert.Equal(signal, step.Signal);
        Assert.Equal(pending, step.Task.PendingControl);
    }

    [Fact]
    public void Assign_ReadyTask_RecordsWorkerInHistory()
    {
        var step = TaskTransitions.Assign(Task(TaskState.Ready), "w9", Now);

        Assert.Equal("w9", step.Task!.WorkerId);
        Assert.Equal(new Transition(TaskState.Submit, Now, "assigned to w9"), step.Task.History[^1]);
    }

    [Fact]
    public void Reject_SubmitTask_ReturnsToReadyWithoutWorker()
    {
        var step = TaskTransitions.Reject(Task(TaskState.Submit, "w1"), "w1", Now);

        Assert.Equal((TaskState.Ready, (string?)null, 0), (step.Task!.State, step.Task.WorkerId, step.Task.Attempts));
        Assert.Equal("rejected by w1", step.Task.Reason);
    }

    [Fact]
    public void Reject_WithPendingKill_TerminatesKilledInsteadOfRequeueing()
    {
        var step = TaskTransitions.Reject(Task(TaskState.Submit, "w1", PendingControl.Kill), "w1", Now);

        Assert.Equal((TaskState.Terminated, (int?)ExitCodes.Killed), (step.Task!.State, step.Task.ExitCode));
        Assert.Equal((PendingControl.None, (DateTimeOffset?)null, (string?)null), (step.Task.PendingControl, step.Task.KillRequestedAt, step.Task.WorkerId));
    }

    [Fact]
    public void Reject_WithPendingPause_PausesInsteadOfRequeueing()
    {
        var step = TaskTransitions.Reject(Task(TaskState.Submit, "w1", PendingControl.Pause), "w1", Now);

        Assert.Equal((TaskState.Pause, PendingControl.None, (string?)null), (step.Task!.State, step.Task.PendingControl, step.Task.WorkerId));
    }

    [Fact]
    public void Reject_WithdrawnPause_RequeuesWithoutLeftoverControl()
    {
        var step = TaskTransitions.Reject(Task(TaskState.Submit, "w1", PendingControl.Play), "w1", Now);

        Assert.Equal((TaskState.Ready, PendingControl.None), (step.Task!.State, step.Task.PendingControl));
    }

    [Theory]
    [InlineData(PendingControl.Pause, PendingControl.None)]
    [InlineData(PendingControl.None, PendingControl.None)]
    [InlineData(PendingControl.Kill, PendingControl.Kill)]
    public void WorkerPaused_PendingControl_ClearsPauseButNeverAKill(PendingControl pending, PendingControl after)
    {
        var step = TaskTransitions.WorkerPaused(Task(TaskState.Run, "w1", pending), "w1", Now);

        Assert.Equal(TaskState.Pause, step.Task!.State);
        Assert.Equal(after, step.Task.PendingControl);
        Assert.Equal(pending == PendingControl.Kill ? T0 : null, step.Task.KillRequestedAt);
    }

    [Theory]
    [InlineData(PendingControl.Play, PendingControl.None)]
    [InlineData(PendingControl.None, PendingControl.None)]
    [InlineData(PendingControl.Kill, PendingControl.Kill)]
    public void WorkerResumed_PendingControl_ClearsPlayButNeverAKill(PendingControl pending, PendingControl after)
    {
        var step = TaskTransitions.WorkerResumed(Task(TaskState.Pause, "w1", pending), "w1", Now);

        Assert.Equal(TaskState.Run, step.Task!.State);
        Assert.Equal(after, step.Task.PendingControl);
    }

    [Theory]
    [InlineData(TaskState.Submit, TaskState.Run)]
    [InlineData(TaskState.Run, TaskState.Run)]
    [InlineData(TaskState.Pause, TaskState.Pause)]
    public void WorkerPending_OnWorker_AddsOneLayer(TaskState from, TaskState to)
    {
        var task = Task(from, "w1") with { Layers = 2 };

        var step = TaskTransitions.WorkerPending(task, "w1", Now);

        Assert.Equal((to, 3), (step.Task!.State, step.Task.Layers));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(-1)]
    public void WorkerFinished_ExitCode_TerminatesWithCodeResultAndError(int exitCode)
    {
        var step = TaskTransitions.WorkerFinished(Task(TaskState.Run, "w1"), "w1", exitCode, [1, 2], "boom", Now);

        var done = step.Task!;
        Assert.Equal((TaskState.Terminated, (int?)exitCode, "boom", (string?)null), (done.State, done.ExitCode, done.Error, done.WorkerId));
        Assert.Equal([1, 2], done.Result);
    }

    [Fact]
    public void WorkerFinished_NoReplyTask_DropsTheResult()
    {
        var step = TaskTransitions.WorkerFinished(Task(TaskState.Run, "w1", noReply: true), "w1", 0, [1, 2], null, Now);

        Assert.Null(step.Task!.Result);
    }

    [Fact]
    public void WorkerFinished_KillConfirmed_ClearsKillAndRecordsReason()
    {
        var step = TaskTransitions.WorkerFinished(Task(TaskState.Run, "w1", PendingControl.Kill), "w1", ExitCodes.Killed, null, null, Now);

        var done = step.Task!;
        Assert.Equal((PendingControl.None, (DateTimeOffset?)null, "killed by actioner"), (done.PendingControl, done.KillRequestedAt, done.Reason));
    }

    // ---- worker lost: the delivery policy ---------------------------------------------------------

    [Fact]
    public void WorkerLost_Submit_ReturnsToReadyWithoutAnAttempt()
    {
        var step = TaskTransitions.WorkerLost(Task(TaskState.Submit, "w1", policy: DeliveryPolicy.AtMostOnce), "worker w1 declared dead", Now);

        Assert.Equal((TaskState.Ready, (string?)null, 0), (step.Task!.State, step.Task.WorkerId, step.Task.Attempts));
        Assert.Contains("never started", step.Task.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void WorkerLost_RunAtMostOnce_PausesWithReasonAndCountsAttempt()
    {
        var step = TaskTransitions.WorkerLost(Task(TaskState.Run, "w1", policy: DeliveryPolicy.AtMostOnce), "worker w1 declared dead", Now);

        var task = step.Task!;
        Assert.Equal((TaskState.Pause, (string?)null, 1), (task.State, task.WorkerId, task.Attempts));
        Assert.Contains("at-most-once", task.Reason, StringComparison.Ordinal);
        Assert.Contains("worker w1 declared dead", task.Reason, StringComparison.Ordinal);
        Assert.Equal(task.Reason, task.History[^1].Reason);
    }

    [Fact]
    public void WorkerLost_RunAtLeastOnce_RequeuesAndCountsAttempt()
    {
        var step = TaskTransitions.WorkerLost(Task(TaskState.Run, "w1", policy: DeliveryPolicy.AtLeastOnce) with { Attempts = 2 }, "gone", Now);

        Assert.Equal((TaskState.Ready, (string?)null, 3), (step.Task!.State, step.Task.WorkerId, step.Task.Attempts));
        Assert.Contains("at-least-once", step.Task.Reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(TaskState.Submit)]
    [InlineData(TaskState.Run)]
    [InlineData(TaskState.Pause)]
    public void WorkerLost_PendingKill_TerminatesKilled(TaskState state)
    {
        var step = TaskTransitions.WorkerLost(Task(state, "w1", PendingControl.Kill, DeliveryPolicy.AtLeastOnce), "gone", Now);

        Assert.Equal((TaskState.Terminated, (int?)ExitCodes.Killed, PendingControl.None), (step.Task!.State, step.Task.ExitCode, step.Task.PendingControl));
    }

    [Theory]
    [InlineData(TaskState.Run)]
    [InlineData(TaskState.Submit)]
    public void WorkerLost_PendingPause_Pauses(TaskState state)
    {
        var step = TaskTransitions.WorkerLost(Task(state, "w1", PendingControl.Pause, DeliveryPolicy.AtLeastOnce), "gone", Now);

        Assert.Equal((TaskState.Pause, (string?)null, PendingControl.None), (step.Task!.State, step.Task.WorkerId, step.Task.PendingControl));
    }

    [Fact]
    public void WorkerLost_PausedOnWorker_StaysPausedWithoutWorker()
    {
        var task = Task(TaskState.Pause, "w1");

        var step = TaskTransitions.WorkerLost(task, "gone", Now);

        Assert.Equal((TaskState.Pause, (string?)null, 0), (step.Task!.State, step.Task.WorkerId, step.Task.Attempts));
        Assert.Equal(task.History, step.Task.History);
        Assert.Contains("stays paused", step.Task.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void WorkerLost_PausedOnWorkerWithPlayPending_GoesReady()
    {
        var step = TaskTransitions.WorkerLost(Task(TaskState.Pause, "w1", PendingControl.Play), "gone", Now);

        Assert.Equal((TaskState.Ready, (string?)null, PendingControl.None), (step.Task!.State, step.Task.WorkerId, step.Task.PendingControl));
    }

    // ---- kill escalation deadline ----------------------------------------------------------------

    [Fact]
    public void KillOverdue_ExactBoundary_FalseOneTickBeforeTrueAtTimeout()
    {
        var timeout = TimeSpan.FromSeconds(30);
        var task = Task(TaskState.Run, "w1", PendingControl.Kill) with { KillRequestedAt = Now };

        Assert.False(TaskTransitions.KillOverdue(task, timeout, Now + timeout - OneTick));
        Assert.True(TaskTransitions.KillOverdue(task, timeout, Now + timeout));
        Assert.False(TaskTransitions.KillOverdue(task with { PendingControl = PendingControl.None }, timeout, Now + timeout));
    }
}
