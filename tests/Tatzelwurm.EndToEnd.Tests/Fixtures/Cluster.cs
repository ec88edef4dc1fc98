using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Tatzelwurm.Client;
using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.EndToEnd.Tests.Fixtures;

/// <summary>Liveness settings passed to the coordinator; short so that worker-loss tests finish quickly.</summary>
internal sealed record CoordinatorSettings
{
    public TimeSpan Heartbeat { get; init; } = TimeSpan.FromMilliseconds(200);
    public TimeSpan Lease { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan Grace { get; init; } = TimeSpan.FromSeconds(2);
    public TimeSpan KillTimeout { get; init; } = TimeSpan.FromSeconds(10);
    public string DefaultPolicy { get; init; } = "at-most-once";
}

/// <summary>What a workwurm prints on exit: <c>workwurm &lt;id&gt;: completed N tasks, max concurrent M of S slots</c>.</summary>
internal sealed partial record WorkerSummary(string WorkerId, int Completed, int MaxConcurrent, int Slots)
{
    public static WorkerSummary? Parse(IEnumerable<string> stdout) => stdout
        .Select(line => SummaryLine().Match(line))
        .Where(m => m.Success)
        .Select(m => new WorkerSummary(m.Groups[1].Value, Int(m.Groups[2].Value), Int(m.Groups[3].Value), Int(m.Groups[4].Value)))
        .LastOrDefault();

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^workwurm (\S+): completed (\d+) tasks, max concurrent (\d+) of (\d+) slots$")]
    private static partial Regex SummaryLine();
}

/// <summary>
/// Reads a workwurm's -v log on stderr, independently of its own counters: each handler logs
/// "task N (type) started" before it runs and "task N ended with exit code C" after it returns.
/// </summary>
internal static partial class WorkerLog
{
    /// <summary>The most handlers that were between their start and end lines at once.</summary>
    public static int MaxOverlap(IEnumerable<string> stderr)
    {
        int now = 0, max = 0;
        foreach (var line in stderr)
        {
            if (Started().IsMatch(line))
            {
                max = Math.Max(max, ++now);
            }
            else if (Ended().IsMatch(line))
            {
                now--;
            }
        }

        return max;
    }

    [GeneratedRegex(@"^workwurm: task \d+ \(.*\) started$")]
    private static partial Regex Started();

    [GeneratedRegex(@"^workwurm: task \d+ ended with exit code -?\d+( \(killed\))?$")]
    private static partial Regex Ended();
}

/// <summary>
/// One coordinator process on 127.0.0.1:0 with a private data directory, the workers started
/// against it, actionwurm runs, and a C# client that observes its state. Disposing kills every
/// process it started (also when the test failed), writes their output to the test log and
/// deletes the data directory.
/// </summary>
internal sealed class Cluster : IAsyncDisposable
{
    private static readonly TimeSpan ActionwurmTimeout = TimeSpan.FromSeconds(60);

    private readonly List<ManagedProcess> _processes = [];
    private readonly List<IAsyncDisposable> _resources = [];
    private TatzelwurmClient? _client;

    private Cluster(string dataDirectory, CoordinatorSettings settings)
    {
        DataDirectory = dataDirectory;
        Settings = settings;
    }

    public string DataDirectory { get; }

    public CoordinatorSettings Settings { get; }

    /// <summary>host:port the coordinator actually listens on (from DIR/address).</summary>
    public string Address { get; private set; } = "";

    /// <summary>The auth token (from DIR/token).</summary>
    public string Token { get; private set; } = "";

    public ManagedProcess Coordinator { get; private set; } = null!;

    /// <summary>An actioner connection for observing state without spawning actionwurm.</summary>
    public TatzelwurmClient Client => _client ?? throw new InvalidOperationException("not started");

    public static async Task<Cluster> StartAsync(CoordinatorSettings? settings = null)
    {
        var dir = Path.Combine(Path.GetTempPath(), "tatzelwurm-e2e-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        var cluster = new Cluster(dir, settings ?? new CoordinatorSettings());
        try
        {
            await cluster.StartCoordinatorAsync();
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    private async Task StartCoordinatorAsync()
    {
        Coordinator = Track(ManagedProcess.Start("coordinator", Apps.Coordinator,
        [
            "--listen", "127.0.0.1:0",
            "--data", DataDirectory,
            "--heartbeat", Ms(Settings.Heartbeat),
            "--lease", Ms(Settings.Lease),
            "--grace", Ms(Settings.Grace),
            "--kill-timeout", Ms(Settings.KillTimeout),
            "--default-policy", Settings.DefaultPolicy,
        ]));

        // The address file appears (atomically) once the coordinator accepts connections; polling a
        // file is the only start-up signal a separate process gives.
        Address = await Eventually.WaitAsync("the coordinator to write its address file", () =>
        {
            if (Coordinator.HasExited)
            {
                throw new InvalidOperationException($"the coordinator exited with {Coordinator.ExitCode} during start-up\n{Coordinator.Stdout}\n{Coordinator.Stderr}");
            }

            return Task.FromResult(ReadAddress());
        });
        Token = Protocol.DataDirectory.ReadToken(DataDirectory) ?? throw new InvalidOperationException("no token file next to the address file");
        _client = await TatzelwurmClient.ConnectAsync(new ConnectionOptions { DataDirectory = DataDirectory, ClientName = "e2e-observer" });
    }

    private string? ReadAddress() => Protocol.DataDirectory.ReadAddress(DataDirectory) is { Length: > 0 } a ? a : null;

    /// <summary>
    /// Starts a workwurm (name = id) and waits until the coordinator lists it as connected. Without
    /// <paramref name="server"/> it finds the coordinator through the data directory; with it (e.g. a
    /// <see cref="TcpProxy"/>) it connects there with the token.
    /// </summary>
    public async Task<ManagedProcess> StartWorkerAsync(string id, string? type, int slots, string? server = null)
    {
        List<string> args = ["--slots", slots.ToString(CultureInfo.InvariantCulture), "--id", id, "--name", id, "-v"];
        if (type is not null)
        {
            args.AddRange(["--type", type]);
        }

        args.AddRange(server is null ? ["--data", DataDirectory] : ["--server", server, "--token", Token]);
        var worker = Track(ManagedProcess.Start("worker " + id, Apps.Worker, args));
        await WaitForWorkerAsync(id, "to register", w => w.State == "connected", () =>
        {
            if (worker.HasExited)
            {
                throw new InvalidOperationException($"worker {id} exited with {worker.ExitCode}\n{worker.Stderr}");
            }
        });
        return worker;
    }

    /// <summary>Stops a worker the graceful way (actionwurm worker stop) and returns its exit summary.</summary>
    public async Task<WorkerSummary> StopWorkerAsync(ManagedProcess worker, string name)
    {
        var stop = await ActionwurmAsync("worker", "stop", name);
        Assert.True(stop.ExitCode == 0, $"actionwurm worker stop {name}: {stop}");
        Assert.True(await worker.WaitForExitAsync(Eventually.DefaultTimeout), $"{worker.Name} did not exit after worker stop\n{worker.Stderr}");
        Assert.True(worker.ExitCode == 0, $"{worker.Name} exited with {worker.ExitCode}\n{worker.Stderr}");
        return WorkerSummary.Parse(worker.StdoutLines) ?? throw new Xunit.Sdk.XunitException($"{worker.Name} printed no summary line:\n{worker.Stdout}");
    }

    /// <summary>Runs actionwurm against this coordinator (via --data).</summary>
    public Task<ProcessResult> ActionwurmAsync(params string[] args) =>
        ManagedProcess.RunAsync("actionwurm", Apps.Actioner, [.. args, "--data", DataDirectory], ActionwurmTimeout);

    /// <summary>Runs actionwurm with --json, asserts exit code 0 and parses its stdout.</summary>
    public async Task<JsonElement> ActionwurmJsonAsync(params string[] args)
    {
        var result = await ActionwurmAsync([.. args, "--json"]);
        Assert.True(result.ExitCode == 0, $"actionwurm {string.Join(' ', args)} --json: {result}");
        using var doc = JsonDocument.Parse(result.Stdout);
        return doc.RootElement.Clone();
    }

    /// <summary>Adds tasks with actionwurm and returns their ids.</summary>
    public async Task<IReadOnlyList<long>> AddAsync(params string[] args)
    {
        var added = await ActionwurmJsonAsync(["task", "add", .. args]);
        return added.GetProperty("ids").EnumerateArray().Select(e => e.GetInt64()).ToList();
    }

    /// <summary>
    /// Adds ready mock tasks through the client: a spawned actionwurm takes a second or more to start
    /// on a loaded machine, long enough for short tasks to finish before the test looks at them.
    /// </summary>
    public async Task<IReadOnlyList<long>> AddMockAsync(string mock, int count = 1, string? type = null, DeliveryPolicy policy = DeliveryPolicy.Default)
    {
        var parsed = MockTask.Parse(mock);
        var spec = new TaskSpec(parsed.ToPayload(), type ?? parsed.DefaultType, 0, [], policy, Ready: true, NoReply: false);
        return await Client.AddAsync(Enumerable.Repeat(spec, count).ToList());
    }

    /// <summary>Polls the task until <paramref name="condition"/> holds and returns it.</summary>
    public Task<TaskInfo> WaitForTaskAsync(long id, string what, Func<TaskInfo, bool> condition, TimeSpan? timeout = null)
    {
        TaskInfo? last = null;
        return Eventually.WaitAsync($"task {id} {what}", async () =>
        {
            last = await Client.ShowAsync(id);
            return condition(last) ? last : null;
        }, () => Describe(last), timeout);
    }

    /// <summary>Polls the worker table until worker <paramref name="id"/> is listed and <paramref name="condition"/> holds.</summary>
    public Task<WorkerInfo> WaitForWorkerAsync(string id, string what, Func<WorkerInfo, bool> condition, Action? check = null, TimeSpan? timeout = null)
    {
        WorkerInfo? last = null;
        return Eventually.WaitAsync($"worker {id} {what}", async () =>
        {
            check?.Invoke();
            last = (await Client.WorkersAsync()).FirstOrDefault(w => w.WorkerId == id);
            return last is not null && condition(last) ? last : null;
        }, () => last is null ? "not listed" : $"{last.State}, load {last.Load}/{last.Slots}", timeout);
    }

    /// <summary>Every task, in id order.</summary>
    public async Task<List<TaskInfo>> AllTasksAsync()
    {
        var tasks = new List<TaskInfo>();
        await foreach (var task in Client.ListAllAsync())
        {
            tasks.Add(task);
        }

        return tasks;
    }

    /// <summary>Registers something (e.g. a proxy) to dispose with the cluster.</summary>
    public T Own<T>(T resource)
        where T : IAsyncDisposable
    {
        _resources.Add(resource);
        return resource;
    }

    public static string Describe(TaskInfo? t) => t is null
        ? "nothing"
        : $"task {t.Id} {States.Name(t.State)} exit {t.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "-"} worker {t.Worker ?? "-"} attempts {t.Attempts} reason '{t.Reason}'" +
          (t.History.Count > 0 ? " history " + string.Join(" → ", t.History.Select(h => States.Name(h.State) + (h.Reason is null ? "" : $" ({h.Reason})"))) : "");

    public async ValueTask DisposeAsync()
    {
        // Kill first, unconditionally: nothing below may leave a process running if it throws.
        // Workers before the coordinator, so none of them spins in a reconnect loop meanwhile.
        foreach (var process in Enumerable.Reverse(_processes))
        {
            process.Kill();
        }

        try
        {
            if (_client is not null)
            {
                await _client.DisposeAsync();
            }

            foreach (var resource in _resources)
            {
                await resource.DisposeAsync();
            }

            var output = TestContext.Current.TestOutputHelper;
            foreach (var process in _processes)
            {
                await process.DisposeAsync();
                output?.WriteLine($"===== {process.Name} (pid {process.Id})");
                foreach (var line in Tail(process.Stdout, 150))
                {
                    output?.WriteLine("out| " + line);
                }

                foreach (var line in Tail(process.Stderr, 150))
                {
                    output?.WriteLine("err| " + line);
                }
            }
        }
        finally
        {
            try
            {
                Directory.Delete(DataDirectory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private ManagedProcess Track(ManagedProcess process)
    {
        _processes.Add(process);
        return process;
    }

    private static IEnumerable<string> Tail(string text, int lines)
    {
        var all = text.Split('\n');
        return all.Length <= lines ? all : [$"… {all.Length - lines} earlier lines", .. all[^lines..]];
    }

    private static string Ms(TimeSpan t) => ((long)t.TotalMilliseconds).ToString(CultureInfo.InvariantCulture) + "ms";
}

/// <summary>Task state numbers on the wire (docs/protocol.md) and their names.</summary>
internal static class States
{
    public const int Created = 0;
    public const int Ready = 1;
    public const int Submit = 2;
    public const int Run = 3;
    public const int Pause = 4;
    public const int Terminated = 5;

    private static readonly string[] Names = ["created", "ready", "submit", "run", "pause", "terminated"];

    public static string Name(int state) => state is >= 0 and < 6 ? Names[state] : state.ToString(CultureInfo.InvariantCulture);
}
