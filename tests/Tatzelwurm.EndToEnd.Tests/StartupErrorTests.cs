using Tatzelwurm.EndToEnd.Tests.Fixtures;
using Xunit;

namespace Tatzelwurm.EndToEnd.Tests;

/// <summary>
/// What a user gets wrong when starting the coordinator (a taken address, a bad setting, a broken
/// settings file) or a worker (a malformed coordinator address) ends the process with one line on
/// stderr and exit code 1 or 2, not a stack trace and not a worker waiting for ever.
/// </summary>
public sealed class StartupErrorTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task AddressInUse_ExitsOneWithTheAddressAndNoStackTrace()
    {
        await using var cluster = await Cluster.StartAsync();
        var data = Directory.CreateTempSubdirectory("tatzelwurm-startup-");
        try
        {
            var second = await ManagedProcess.RunAsync("second coordinator", Apps.Coordinator, ["--listen", cluster.Address, "--data", data.FullName], Patience);

            Assert.True(second.ExitCode == 1, second.ToString());
            Assert.Contains($"tatzelwurm: cannot listen on {cluster.Address}: address already in use", second.Stderr, StringComparison.Ordinal);
            AssertNoStackTrace(second);
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    [Theory]
    [InlineData("--heartbeat", "soon", "tatzelwurm: --heartbeat: 'soon' is not a duration")]
    [InlineData("--listen", "nowhere", "tatzelwurm: --listen: 'nowhere' is not an address:port")]
    [InlineData("--log-level", "loud", "tatzelwurm: --log-level: 'loud' is not one of")]
    [InlineData("--store", "paper", "tatzelwurm: --store: unknown store 'paper'")]
    [InlineData("--retention", "1e300d", "tatzelwurm: --retention: ")]
    public async Task BadSetting_ExitsTwoNamingTheFlag(string flag, string value, string expected)
    {
        string[] listen = flag == "--listen" ? [] : ["--listen", "127.0.0.1:0"];
        await ExpectUsageErrorAsync(expected, settingsFile: null, [.. listen, flag, value]);
    }

    [Theory]
    [InlineData("{\"listen\": ", "not a JSON object of settings")]
    [InlineData("[1]", "not a JSON object of settings (the root is Array)")]
    [InlineData("{\"max-frame\": \"big\"}", "--max-frame: 'big' is not a number of bytes")]
    public Task BrokenSettingsFile_ExitsTwoNamingTheFile(string json, string expected) =>
        ExpectUsageErrorAsync(expected, settingsFile: json, ["--listen", "127.0.0.1:0"]);

    // A coordinator in a fresh data directory (with the settings file given, if any) exits 2 with
    // the expected line and no stack trace.
    private static async Task ExpectUsageErrorAsync(string expected, string? settingsFile, string[] args)
    {
        var data = Directory.CreateTempSubdirectory("tatzelwurm-startup-");
        try
        {
            if (settingsFile is not null)
            {
                await File.WriteAllTextAsync(Path.Combine(data.FullName, "tatzelwurm.json"), settingsFile, TestContext.Current.CancellationToken);
            }

            var run = await ManagedProcess.RunAsync("coordinator", Apps.Coordinator, [.. args, "--data", data.FullName], Patience);

            Assert.True(run.ExitCode == 2, run.ToString());
            Assert.Contains(expected, run.Stderr, StringComparison.Ordinal);
            AssertNoStackTrace(run);
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Workwurm_MalformedServer_ExitsTwoInsteadOfRetrying()
    {
        var run = await ManagedProcess.RunAsync("worker", Apps.Worker, ["--server", "nowhere", "--token", "t"], Patience);

        Assert.True(run.ExitCode == 2, run.ToString());
        Assert.Contains("workwurm: coordinator address 'nowhere' is not host:port", run.Stderr, StringComparison.Ordinal);
        AssertNoStackTrace(run);
    }

    private static void AssertNoStackTrace(ProcessResult run)
    {
        Assert.DoesNotContain("Unhandled exception", run.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", run.Stderr, StringComparison.Ordinal);
    }
}
