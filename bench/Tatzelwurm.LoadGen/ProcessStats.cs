using System.Diagnostics;
using System.Globalization;

namespace Tatzelwurm.LoadGen;

/// <summary>
/// CPU and memory of another process, read from /proc (Linux): utime+stime of all its threads from
/// /proc/&lt;pid&gt;/stat, resident memory from /proc/&lt;pid&gt;/status (VmRSS sampled, and VmHWM after
/// resetting it through /proc/&lt;pid&gt;/clear_refs), bytes written from /proc/&lt;pid&gt;/io.
/// </summary>
public sealed class ProcessStats(int pid)
{
    private static readonly Lazy<double> TicksPerSecond = new(ReadClockTicks);

    public int Pid { get; } = pid;

    public double CpuSeconds()
    {
        // Field 2 (comm) may contain spaces: split after the closing parenthesis.
        var stat = File.ReadAllText($"/proc/{Pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        // After comm: state is fields[0], so utime (14) and stime (15) are fields[11] and fields[12].
        var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return ticks / TicksPerSecond.Value;
    }

    public long StatusKb(string key)
    {
        foreach (var line in File.ReadLines($"/proc/{Pid}/status"))
        {
            if (line.StartsWith(key + ":", StringComparison.Ordinal))
            {
                return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }

    public long RssBytes() => StatusKb("VmRSS") * 1024;

    public long PeakRssBytes() => StatusKb("VmHWM") * 1024;

    /// <summary>Resets VmHWM to the current RSS (needs the right to write /proc/pid/clear_refs); false if not allowed.</summary>
    public bool ResetPeak()
    {
        try
        {
            File.WriteAllText($"/proc/{Pid}/clear_refs", "5");
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>write_bytes (bytes sent to the block layer) and syscw (write syscalls) from /proc/pid/io; zeros if unreadable.</summary>
    public (long WriteBytes, long WriteCalls) Io()
    {
        try
        {
            long bytes = 0, calls = 0;
            foreach (var line in File.ReadLines($"/proc/{Pid}/io"))
            {
                var parts = line.Split(':', StringSplitOptions.TrimEntries);
                if (parts[0] == "write_bytes")
                {
                    bytes = long.Parse(parts[1], CultureInfo.InvariantCulture);
                }
                else if (parts[0] == "syscw")
                {
                    calls = long.Parse(parts[1], CultureInfo.InvariantCulture);
                }
            }

            return (bytes, calls);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return (0, 0);
        }
    }

    /// <summary>Voluntary + involuntary context switches per thread id (wake-ups).</summary>
    public Dictionary<string, long> ContextSwitches()
    {
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var task in Directory.EnumerateDirectories($"/proc/{Pid}/task"))
        {
            long total = 0;
            try
            {
                foreach (var line in File.ReadLines(Path.Combine(task, "status")))
                {
                    if (line.StartsWith("voluntary_ctxt_switches:", StringComparison.Ordinal)
                        || line.StartsWith("nonvoluntary_ctxt_switches:", StringComparison.Ordinal))
                    {
                        total += long.Parse(line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim(), CultureInfo.InvariantCulture);
                    }
                }
            }
            catch (IOException)
            {
                // The thread exited while we read.
            }

            result[Path.GetFileName(task)] = total;
        }

        return result;
    }

    /// <summary>CPU seconds per thread name (comm), for a profile of where a process spends its time.</summary>
    public Dictionary<string, double> CpuByThreadName()
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var task in Directory.EnumerateDirectories($"/proc/{Pid}/task"))
        {
            try
            {
                var stat = File.ReadAllText(Path.Combine(task, "stat"));
                var open = stat.IndexOf('(', StringComparison.Ordinal);
                var close = stat.LastIndexOf(')');
                var name = stat[(open + 1)..close];
                var fields = stat[(close + 2)..].Split(' ');
                var seconds = (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / TicksPerSecond.Value;
                result[name] = result.GetValueOrDefault(name) + seconds;
            }
            catch (IOException)
            {
            }
        }

        return result;
    }

    public bool Alive => Directory.Exists($"/proc/{Pid}");

    private static double ReadClockTicks()
    {
        try
        {
            using var getconf = Process.Start(new ProcessStartInfo("getconf", "CLK_TCK") { RedirectStandardOutput = true })!;
            var text = getconf.StandardOutput.ReadToEnd().Trim();
            getconf.WaitForExit();
            return double.Parse(text, CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or FormatException)
        {
            return 100;
        }
    }
}

/// <summary>Samples a process's RSS while a run goes on, and its CPU seconds between start and stop.</summary>
public sealed class ProcessMeter : IAsyncDisposable
{
    private readonly ProcessStats _stats;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _sampler;
    private readonly double _cpuAtStart;
    private readonly Dictionary<string, long> _switchesAtStart;
    private readonly (long WriteBytes, long WriteCalls) _ioAtStart;
    private readonly bool _peakReset;
    private long _peakRss;

    public ProcessMeter(ProcessStats stats)
    {
        _stats = stats;
        _peakReset = stats.ResetPeak();
        _cpuAtStart = stats.CpuSeconds();
        _switchesAtStart = stats.ContextSwitches();
        _ioAtStart = stats.Io();
        _peakRss = stats.RssBytes();
        _sampler = Task.Run(SampleAsync);
    }

    public double CpuSeconds { get; private set; }

    public long PeakRssBytes { get; private set; }

    public long ContextSwitches { get; private set; }

    public long WriteBytes { get; private set; }

    public long WriteCalls { get; private set; }

    public async Task StopAsync()
    {
        CpuSeconds = _stats.CpuSeconds() - _cpuAtStart;
        // Threads that exited meanwhile are not counted; threads that started count from zero.
        ContextSwitches = _stats.ContextSwitches().Sum(kv => kv.Value - _switchesAtStart.GetValueOrDefault(kv.Key));
        var io = _stats.Io();
        WriteBytes = io.WriteBytes - _ioAtStart.WriteBytes;
        WriteCalls = io.WriteCalls - _ioAtStart.WriteCalls;
        await _stop.CancelAsync();
        await _sampler;
        var hwm = _peakReset ? _stats.PeakRssBytes() : 0;
        PeakRssBytes = Math.Max(Interlocked.Read(ref _peakRss), hwm);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stop.IsCancellationRequested)
        {
            await _stop.CancelAsync();
            await _sampler;
        }

        _stop.Dispose();
    }

    private async Task SampleAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var rss = _stats.RssBytes();
                if (rss > Interlocked.Read(ref _peakRss))
                {
                    Interlocked.Exchange(ref _peakRss, rss);
                }

                await Task.Delay(25, _stop.Token);
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (IOException)
        {
        }
    }
}
