using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Tatzelwurm.Client;
using Tatzelwurm.Core;
using Xunit;

namespace Tatzelwurm.Dashboard.Tests;

public sealed partial class MetricsTests
{
    private static CancellationToken Cancel => TestDeadline.Token;

    [Fact]
    public async Task Metrics_AfterKnownWorkload_ReportEverySeries()
    {
        await using var tw = await TestCoordinator.StartAsync();
        var tasks = new TestTasks();
        await tw.StartWorkerAsync("w-metrics", slots: 2, tasks, name: "metrics-box");
        await using var client = await tw.ClientAsync();
        await client.SetTagLimitAsync("gpu", 3, Cancel);

        // The workload: 5 complete, 2 fail, 1 is killed while running, 1 holds a slot, 2 wait in created.
        var finished = new List<long>();
        for (var i = 0; i < 5; i++)
        {
            finished.Add(await client.AddAsync(TestTasks.Ok, "work", cancellationToken: Cancel));
        }

        finished.Add(await client.AddAsync(TestTasks.Fail, "work", cancellationToken: Cancel));
        finished.Add(await client.AddAsync(TestTasks.Fail, "work", cancellationToken: Cancel));
        foreach (var id in finished)
        {
            await client.WaitAsync(id, cancellationToken: Cancel);
        }

        var killed = await client.AddAsync(TestTasks.Hold, "hold", tags: ["gpu"], cancellationToken: Cancel);
        await Eventually.TrueAsync(() => tw.QueryAsync(s => s.Tasks[killed].State == TaskState.Run), "task to kill running");
        await client.ControlAsync(Protocol.TaskAction.Kill, [killed], cancellationToken: Cancel);
        Assert.Equal(-1, (await client.WaitAsync(killed, cancellationToken: Cancel)).ExitCode);
        var held = await client.AddAsync(TestTasks.Hold, "hold", tags: ["gpu"], cancellationToken: Cancel);
        await Eventually.TrueAsync(() => tw.QueryAsync(s => s.Tasks[held].State == TaskState.Run), "held task running");
        await client.AddAsync(TestTasks.Ok, "later", ready: false, cancellationToken: Cancel);
        await client.AddAsync(TestTasks.Ok, "later", ready: false, cancellationToken: Cancel);

        // A refused handshake and a broken frame.
        var refused = await Assert.ThrowsAsync<TatzelwurmException>(() => TatzelwurmClient.ConnectAsync(tw.Connection with { Token = "wrong" }, Cancel));
        Assert.Equal(Protocol.ErrorCode.AuthFailed, refused.Code);
        await SendZeroLengthFrameAsync(tw.Host.LocalEndPoint);

        using var response = await tw.Http.GetAsync("/metrics", Cancel);
        var text = await response.Content.ReadAsStringAsync(Cancel);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType, StringComparison.Ordinal);
        var metrics = Parse(text);
        TestContext.Current.TestOutputHelper?.WriteLine(text);

        // Tasks by state and type, zeros included.
        Assert.Equal(7, metrics.Value("tatzelwurm_tasks", ("state", "terminated"), ("type", "work")));
        Assert.Equal(0, metrics.Value("tatzelwurm_tasks", ("state", "run"), ("type", "work")));
        Assert.Equal(1, metrics.Value("tatzelwurm_tasks", ("state", "terminated"), ("type", "hold")));
        Assert.Equal(1, metrics.Value("tatzelwurm_tasks", ("state", "run"), ("type", "hold")));
        Assert.Equal(2, metrics.Value("tatzelwurm_tasks", ("state", "created"), ("type", "later")));
        Assert.Equal("gauge", metrics.Types["tatzelwurm_tasks"]);

        // Assignments (a counter: rate() gives assignments/s) and terminations by exit code.
        Assert.Equal(9, metrics.Value("tatzelwurm_assignments_total"));
        Assert.Equal("counter", metrics.Types["tatzelwurm_assignments_total"]);
        Assert.Equal(5, metrics.Value("tatzelwurm_terminations_total", ("exit_code", "0")));
        Assert.Equal(2, metrics.Value("tatzelwurm_terminations_total", ("exit_code", "other")));
        Assert.Equal(1, metrics.Value("tatzelwurm_terminations_total", ("exit_code", "-1")));

        // Queue wait (ready → submit) for every assignment; run time for every task that ran and ended.
        Assert.Equal("histogram", metrics.Types["tatzelwurm_task_queue_wait_seconds"]);
        Assert.Equal(7, metrics.Value("tatzelwurm_task_queue_wait_seconds_count", ("type", "work")));
        Assert.Equal(2, metrics.Value("tatzelwurm_task_queue_wait_seconds_count", ("type", "hold")));
        Assert.Equal(7, metrics.Value("tatzelwurm_task_run_time_seconds_count", ("type", "work")));
        Assert.Equal(1, metrics.Value("tatzelwurm_task_run_time_seconds_count", ("type", "hold")));
        Assert.Equal(7, metrics.Value("tatzelwurm_task_run_time_seconds_bucket", ("type", "work"), ("le", "+Inf")));
        Assert.True(metrics.Value("tatzelwurm_task_queue_wait_seconds_sum", ("type", "work")) >= 0);

        // Workers, their load and slots; tag limits.
        Assert.Equal(1, metrics.Value("tatzelwurm_workers", ("state", "connected")));
        Assert.Equal(0, metrics.Value("tatzelwurm_workers", ("state", "suspect")));
        Assert.Equal(1, metrics.Value("tatzelwurm_worker_load", ("worker", "w-metrics"), ("name", "metrics-box")));
        Assert.Equal(2, metrics.Value("tatzelwurm_worker_slots", ("worker", "w-metrics")));
        Assert.Equal(3, metrics.Value("tatzelwurm_tag_limit", ("tag", "gpu")));
        Assert.Equal(1, metrics.Value("tatzelwurm_tag_running", ("tag", "gpu")));
        Assert.Equal(1, metrics.Value("tatzelwurm_store_healthy"));

        // The store: commit latency and batch size.
        var commits = metrics.Value("tatzelwurm_store_commit_duration_seconds_count");
        Assert.True(commits > 0);
        Assert.Equal(commits, metrics.Value("tatzelwurm_store_commit_batch_size_count"));
        Assert.True(metrics.Value("tatzelwurm_store_commit_batch_size_sum") >= 11);

        // The wire: frames both ways, protocol errors, refused connections.
        Assert.True(metrics.Value("tatzelwurm_frames_in_total") > 20);
        Assert.True(metrics.Value("tatzelwurm_frames_out_total") > 20);
        Assert.Equal(1, metrics.Value("tatzelwurm_protocol_errors_total", ("code", "BadFrame")));
        Assert.Equal(1, metrics.Value("tatzelwurm_connections_refused_total", ("code", "AuthFailed")));
        tasks.ReleaseAll();
    }

    [Fact]
    public async Task Metrics_StoreFailing_StoreHealthyGaugeZero()
    {
        await using var tw = await TestCoordinator.StartAsync();
        await using var client = await tw.ClientAsync();
        tw.Store.FailCommit = _ => true;
        var caught = client.AddAsync(TestTasks.Ok, "t", cancellationToken: Cancel);

        await Eventually.TrueAsync(
            async () => Parse(await tw.Http.GetStringAsync("/metrics", Cancel)).Value("tatzelwurm_store_healthy") == 0,
            "store_healthy 0 while commits fail");

        tw.Store.FailCommit = null;
        await caught;
        await Eventually.TrueAsync(
            async () => Parse(await tw.Http.GetStringAsync("/metrics", Cancel)).Value("tatzelwurm_store_healthy") == 1,
            "store_healthy 1 once commits succeed again");
    }

    private static async Task SendZeroLengthFrameAsync(IPEndPoint endpoint)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endpoint, Cancel);
        await socket.SendAsync(new byte[4], SocketFlags.None, Cancel);
        var buffer = new byte[1024];
        // The coordinator answers with a final error frame and closes.
        while (await socket.ReceiveAsync(buffer, SocketFlags.None, Cancel) > 0)
        {
        }
    }

    // ---- Prometheus text format (0.0.4) --------------------------------------------------------

    internal sealed record Sample(string Name, IReadOnlyDictionary<string, string> Labels, double Value);

    internal sealed class Scrape(List<Sample> samples, Dictionary<string, string> types)
    {
        public IReadOnlyDictionary<string, string> Types => types;

        /// <summary>The one sample of <paramref name="name"/> whose labels include <paramref name="labels"/>.</summary>
        public double Value(string name, params (string Key, string Value)[] labels)
        {
            var matches = samples.Where(s => s.Name == name && labels.All(l => s.Labels.TryGetValue(l.Key, out var v) && v == l.Value)).ToList();
            return matches.Count == 1
                ? matches[0].Value
                : throw new Xunit.Sdk.XunitException($"{matches.Count} samples of {name}{{{string.Join(",", labels.Select(l => $"{l.Key}=\"{l.Value}\""))}}}; samples of that name: "
                    + string.Join("; ", samples.Where(s => s.Name == name).Select(s => string.Join(",", s.Labels.Select(kv => $"{kv.Key}={kv.Value}")) + " " + s.Value)));
        }
    }

    internal static Scrape Parse(string text)
    {
        var samples = new List<Sample>();
        var types = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                types[parts[2]] = parts[3];
                continue;
            }

            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            var match = SampleLine().Match(line);
            Assert.True(match.Success, $"not a Prometheus sample line: {line}");
            var labels = LabelPair().Matches(match.Groups["labels"].Value)
                .ToDictionary(m => m.Groups["key"].Value, m => Regex.Unescape(m.Groups["value"].Value), StringComparer.Ordinal);
            var value = match.Groups["value"].Value switch
            {
                "+Inf" => double.PositiveInfinity,
                "-Inf" => double.NegativeInfinity,
                var number => double.Parse(number, NumberStyles.Float, CultureInfo.InvariantCulture),
            };
            samples.Add(new Sample(match.Groups["name"].Value, labels, value));
        }

        return new Scrape(samples, types);
    }

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>.*)\})?\s+(?<value>\S+)(\s+\d+)?$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"(?<key>[a-zA-Z_][a-zA-Z0-9_]*)=""(?<value>(\\.|[^""\\])*)""")]
    private static partial Regex LabelPair();
}
