using System.Text.Json;
using Tatzelwurm.EndToEnd.Tests.Fixtures;
using Xunit;

namespace Tatzelwurm.EndToEnd.Tests;

/// <summary>actionwurm's contract for scripts: exit codes, --json on stdout, errors on stderr.</summary>
public sealed class ActionwurmCliTests
{
    [Fact]
    public async Task Errors_ExitNonZero_MessageOnStderr_JsonStaysParseable()
    {
        await using var cluster = await Cluster.StartAsync();

        // Independent runs, started together to save start-up time.
        var results = await Task.WhenAll(
            cluster.ActionwurmAsync("task", "show", "999999", "--json"),
            cluster.ActionwurmAsync("task", "kill", "999999", "--json"),
            cluster.ActionwurmAsync("task", "kill", "999999"),
            cluster.ActionwurmAsync("task", "add", "--mock", "nonsense:1"),
            ManagedProcess.RunAsync("actionwurm", Apps.Actioner, ["task", "list", "--server", cluster.Address, "--token", "wrong"], TimeSpan.FromSeconds(60)),
            ManagedProcess.RunAsync("actionwurm", Apps.Actioner, ["task", "list", "--data", Path.Combine(cluster.DataDirectory, "nothing-here")], TimeSpan.FromSeconds(60)));
        var (show, kill, killText, badMock, wrongToken, noCoordinator) = (results[0], results[1], results[2], results[3], results[4], results[5]);

        // Unknown task id: exit 1, nothing on stdout, the reason on stderr.
        Assert.True(show.ExitCode == 1, show.ToString());
        Assert.Equal("", show.Stdout.Trim());
        Assert.Contains("UnknownTask", show.Stderr, StringComparison.Ordinal);
        Assert.Contains("999999", show.Stderr, StringComparison.Ordinal);

        // A control that fails for some ids: exit 1; with --json the failures are data on stdout.
        Assert.True(kill.ExitCode == 1, kill.ToString());
        using (var doc = JsonDocument.Parse(kill.Stdout))
        {
            Assert.Equal(0, doc.RootElement.GetProperty("applied").GetArrayLength());
            var failure = Assert.Single(doc.RootElement.GetProperty("failed").EnumerateArray());
            Assert.Equal(999999, failure.GetProperty("id").GetInt64());
            Assert.Equal("UnknownTask", failure.GetProperty("code").GetString());
        }

        Assert.True(killText.ExitCode == 1, killText.ToString());
        Assert.Contains("task 999999: UnknownTask", killText.Stderr, StringComparison.Ordinal);

        // Bad input, wrong token, no coordinator: each refused with its own message.
        Assert.True(badMock.ExitCode == 2, badMock.ToString());
        Assert.Contains("nonsense:1", badMock.Stderr, StringComparison.Ordinal);
        Assert.True(wrongToken.ExitCode == 1, wrongToken.ToString());
        Assert.Contains("AuthFailed", wrongToken.Stderr, StringComparison.Ordinal);
        Assert.True(noCoordinator.ExitCode == 2, noCoordinator.ToString());
        Assert.Contains("no coordinator address", noCoordinator.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TaskWait_ExitCodeIsTheTasks_IllegalTransitionRefused()
    {
        await using var cluster = await Cluster.StartAsync();
        var adding = (Failing: cluster.AddAsync("--mock", "fail:3"), Eval: cluster.AddAsync("--mock", "eval:1+2"));
        var failing = (await adding.Failing)[0];
        var eval = (await adding.Eval)[0];

        // The worker and the waiters start together: task wait returns the outcome whether the task
        // terminated before it connected or after.
        var worker = cluster.StartWorkerAsync("w", "async", slots: 2);

        var waits = await Task.WhenAll(
            cluster.ActionwurmAsync("task", "wait", failing.ToString()),
            cluster.ActionwurmAsync("task", "wait", failing.ToString(), "--json"),
            cluster.ActionwurmAsync("task", "wait", eval.ToString(), "--json"));
        await worker;
        var (waitFailing, waitFailingJson, waitEval) = (waits[0], waits[1], waits[2]);

        Assert.True(waitFailing.ExitCode == 3, waitFailing.ToString());
        Assert.Contains($"task {failing}: exit code 3", waitFailing.Stdout, StringComparison.Ordinal);
        Assert.True(waitFailingJson.ExitCode == 3, waitFailingJson.ToString());
        using (var doc = JsonDocument.Parse(waitFailingJson.Stdout))
        {
            Assert.Equal(failing, doc.RootElement.GetProperty("id").GetInt64());
            Assert.Equal(3, doc.RootElement.GetProperty("exit_code").GetInt32());
            Assert.Contains("exit code 3", doc.RootElement.GetProperty("error").GetString(), StringComparison.Ordinal);
        }

        Assert.True(waitEval.ExitCode == 0, waitEval.ToString());
        using (var doc = JsonDocument.Parse(waitEval.Stdout))
        {
            Assert.Equal(0, doc.RootElement.GetProperty("exit_code").GetInt32());
            Assert.Equal("3", doc.RootElement.GetProperty("result").GetString());
        }

        var shown = await cluster.ActionwurmJsonAsync("task", "show", failing.ToString());
        Assert.Equal("terminated", shown.GetProperty("state").GetString());
        Assert.Equal(3, shown.GetProperty("exit_code").GetInt32());
        Assert.Equal(["ready", "submit", "run", "terminated"], shown.GetProperty("history").EnumerateArray().Select(h => h.GetProperty("state").GetString()));

        // Terminated is final: play is an illegal transition, refused with exit 1 and changes nothing.
        var play = await cluster.ActionwurmAsync("task", "play", failing.ToString());
        Assert.True(play.ExitCode == 1, play.ToString());
        Assert.Contains("IllegalTransition", play.Stderr, StringComparison.Ordinal);
        var after = await cluster.Client.ShowAsync(failing, TestContext.Current.CancellationToken);
        Assert.True(after.State == States.Terminated && after.ExitCode == 3, Cluster.Describe(after));
    }
}
