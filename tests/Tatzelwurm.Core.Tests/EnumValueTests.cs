namespace Tatzelwurm.Core.Tests;

/// <summary>
/// The store persists these enums as integers and the server maps some to wire values by number:
/// renumbering or removing a member silently corrupts stored data. Adding one must update this test.
/// </summary>
public class EnumValueTests
{
    private static Dictionary<string, int> ValuesOf<T>()
        where T : struct, Enum =>
        Enum.GetValues<T>().ToDictionary(v => v.ToString(), v => Convert.ToInt32(v, System.Globalization.CultureInfo.InvariantCulture));

    [Fact]
    public void TaskState_PersistedValues_AreFrozen() =>
        Assert.Equal(
            new Dictionary<string, int> { ["Created"] = 0, ["Ready"] = 1, ["Submit"] = 2, ["Run"] = 3, ["Pause"] = 4, ["Terminated"] = 5 },
            ValuesOf<TaskState>());

    [Fact]
    public void DeliveryPolicy_PersistedValues_AreFrozen() =>
        Assert.Equal(new Dictionary<string, int> { ["AtMostOnce"] = 1, ["AtLeastOnce"] = 2 }, ValuesOf<DeliveryPolicy>());

    [Fact]
    public void PendingControl_PersistedValues_AreFrozen() =>
        Assert.Equal(new Dictionary<string, int> { ["None"] = 0, ["Pause"] = 1, ["Play"] = 2, ["Kill"] = 3 }, ValuesOf<PendingControl>());

    // The server casts wire enums to these by number (docs/protocol.md §5).
    [Fact]
    public void WorkerReport_WireMappedValues_AreFrozen() =>
        Assert.Equal(
            new Dictionary<string, int> { ["Accepted"] = 1, ["Rejected"] = 2, ["Paused"] = 3, ["Resumed"] = 4, ["Pending"] = 5, ["Finished"] = 6 },
            ValuesOf<WorkerReport>());

    [Fact]
    public void ControlVerb_WireMappedValues_AreFrozen() =>
        Assert.Equal(new Dictionary<string, int> { ["Play"] = 1, ["Pause"] = 2, ["Kill"] = 3 }, ValuesOf<ControlVerb>());

    [Fact]
    public void WorkerAction_WireMappedValues_AreFrozen() =>
        Assert.Equal(new Dictionary<string, int> { ["Drain"] = 1, ["Stop"] = 2, ["Undrain"] = 3 }, ValuesOf<WorkerAction>());

    [Fact]
    public void ExitCodes_CompletedAndKilled_AreFrozen() =>
        Assert.Equal((0, -1), (ExitCodes.Completed, ExitCodes.Killed));

    [Theory]
    [InlineData(TaskState.Created, "created")]
    [InlineData(TaskState.Ready, "ready")]
    [InlineData(TaskState.Submit, "submit")]
    [InlineData(TaskState.Run, "run")]
    [InlineData(TaskState.Pause, "pause")]
    [InlineData(TaskState.Terminated, "terminated")]
    public void TaskStateName_EveryState_IsTheSeedNameAndParsesBack(TaskState state, string name)
    {
        Assert.Equal(name, state.Name());
        Assert.True(TaskStateNames.TryParse(name.ToUpperInvariant(), out var parsed));
        Assert.Equal(state, parsed);
    }

    [Fact]
    public void TaskStateName_UnknownName_DoesNotParse() => Assert.False(TaskStateNames.TryParse("running", out _));
}
