using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Tatzelwurm.LoadGen;

/// <summary>
/// A tatzelwurm coordinator started as a child process on 127.0.0.1 with an OS-chosen port and its own
/// data directory; its address and token are read from the files it writes there.
/// </summary>
public sealed class CoordinatorProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();

    private CoordinatorProcess(Process process, string dataDirectory, string server, string token, TimeSpan startup)
    {
        _process = process;
        DataDirectory = dataDirectory;
        Server = server;
        Token = token;
        Startup = startup;
        Stats = new ProcessStats(process.Id);
    }

    public string DataDirectory { get; }
    public string Server { get; }
    public string Token { get; }

    /// <summary>From process start until the address file appeared (store loaded, listening).</summary>
    public TimeSpan Startup { get; }

    public ProcessStats Stats { get; }

    public int Pid => _process.Id;

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    /// <summary>The tatzelwurm.dll built next to this program (artifacts/bin/Tatzelwurm/{release,debug}).</summary>
    public static string DefaultDll()
    {
        var bin = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", ".."));
        foreach (var config in new[] { "release", "debug" })
        {
            var candidate = Path.Combine(bin, "Tatzelwurm", config, "tatzelwurm.dll");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException($"no tatzelwurm.dll under {bin}/Tatzelwurm; build the solution (dotnet build -c Release) or pass --coordinator");
    }

    /// <summary>Starts a coordinator (data directory kept, so a restart recovers it) and waits until it listens.</summary>
    public static async Task<CoordinatorProcess> StartAsync(string dll, string dataDirectory, string? store, IEnumerable<string> extraArgs, TimeSpan timeout)
    {
        Directory.CreateDirectory(dataDirectory);
        var addressFile = Path.Combine(dataDirectory, "address");
        File.Delete(addressFile);
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(dll);
        info.ArgumentList.Add("--listen");
        info.ArgumentList.Add("127.0.0.1:0");
        info.ArgumentList.Add("--data");
        info.ArgumentList.Add(dataDirectory);
        if (!string.IsNullOrEmpty(store))
        {
            info.ArgumentList.Add("--store");
            info.ArgumentList.Add(store);
        }

        foreach (var arg in extraArgs)
        {
            info.ArgumentList.Add(arg);
        }

        // TATZELWURM_BENCH_COORDINATOR_ENV="A=1 B=2": environment for the coordinator only (runtime knobs).
        foreach (var pair in (Environment.GetEnvironmentVariable("TATZELWURM_BENCH_COORDINATOR_ENV") ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = pair.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
            {
                info.Environment[pair[..eq]] = pair[(eq + 1)..];
            }
        }

        var started = Stopwatch.GetTimestamp();
        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start dotnet");
        var log = new StringBuilder();
        void Append(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (log)
            {
                if (log.Length < 1_000_000)
                {
                    log.AppendLine(line);
                }
            }
        }

        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (!File.Exists(addressFile))
        {
            if (process.HasExited || Stopwatch.GetTimestamp() > deadline)
            {
                var output = log.ToString();
                if (!process.HasExited)
                {
                    process.Kill();
                }

                throw new InvalidOperationException($"the coordinator did not start: {output}");
            }

            await Task.Delay(2);
        }

        var startup = Stopwatch.GetElapsedTime(started);
        var server = (await File.ReadAllTextAsync(addressFile)).Trim();
        var token = (await File.ReadAllTextAsync(Path.Combine(dataDirectory, "token"))).Trim();
        var coordinator = new CoordinatorProcess(process, dataDirectory, server, token, startup);
        lock (log)
        {
            coordinator._log.Append(log);
        }

        process.OutputDataReceived += (_, e) => coordinator.AppendLog(e.Data);
        process.ErrorDataReceived += (_, e) => coordinator.AppendLog(e.Data);
        return coordinator;
    }

    /// <summary>SIGTERM (graceful: flush and close the store) or SIGKILL (a crash).</summary>
    public async Task StopAsync(bool kill = false)
    {
        if (_process.HasExited)
        {
            return;
        }

        if (kill)
        {
            _process.Kill();
        }
        else
        {
            using var term = Process.Start("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)]);
            await term!.WaitForExitAsync();
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _process.Dispose();
    }

    private void AppendLog(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_log)
        {
            if (_log.Length < 1_000_000)
            {
                _log.AppendLine(line);
            }
        }
    }
}
