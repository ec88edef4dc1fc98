using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;

namespace Tatzelwurm.EndToEnd.Tests.Fixtures;

/// <summary>The outcome of a program run to completion.</summary>
internal sealed record ProcessResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit code {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>
/// A program started as <c>dotnet &lt;dll&gt; args</c> with stdout and stderr captured line by line.
/// Disposing kills it (and its children) if it still runs. Every live instance is also killed when
/// the test process exits, so a crashed or aborted test run leaves no orphans behind.
/// </summary>
internal sealed class ManagedProcess : IAsyncDisposable
{
    private static readonly ConcurrentDictionary<ManagedProcess, byte> Live = new();

    private readonly Process _process;
    private readonly List<string> _stdout = [];
    private readonly List<string> _stderr = [];
    private readonly Lock _lock = new();
    private readonly TaskCompletionSource _stdoutClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _stderrClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    static ManagedProcess()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var process in Live.Keys)
            {
                process.Kill();
            }
        };
    }

    private ManagedProcess(string name, Process process)
    {
        Name = name;
        _process = process;
    }

    /// <summary>A label for logs (e.g. "coordinator", "worker w1").</summary>
    public string Name { get; }

    /// <summary>The process id (kept after the process is gone, for logs).</summary>
    public int Id { get; private set; }

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public string Stdout
    {
        get
        {
            lock (_lock)
            {
                return string.Join('\n', _stdout);
            }
        }
    }

    public string Stderr
    {
        get
        {
            lock (_lock)
            {
                return string.Join('\n', _stderr);
            }
        }
    }

    public IReadOnlyList<string> StdoutLines
    {
        get
        {
            lock (_lock)
            {
                return [.. _stdout];
            }
        }
    }

    public IReadOnlyList<string> StderrLines
    {
        get
        {
            lock (_lock)
            {
                return [.. _stderr];
            }
        }
    }

    /// <summary>Starts <paramref name="dll"/> under the dotnet host with a clean tatzelwurm environment.</summary>
    public static ManagedProcess Start(string name, string dll, IEnumerable<string> args)
    {
        var info = new ProcessStartInfo(Apps.DotnetHost)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        info.ArgumentList.Add(dll);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        // Nothing from the developer's environment may point the programs at another coordinator.
        foreach (var key in info.Environment.Keys.Where(k => k.StartsWith("TATZELWURM_", StringComparison.Ordinal)).ToList())
        {
            info.Environment.Remove(key);
        }

        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["NO_COLOR"] = "1";
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var managed = new ManagedProcess(name, process);
        process.OutputDataReceived += (_, e) => managed.Append(managed._stdout, managed._stdoutClosed, e.Data);
        process.ErrorDataReceived += (_, e) => managed.Append(managed._stderr, managed._stderrClosed, e.Data);
        process.Start();
        managed.Id = process.Id;
        Live[managed] = 0;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return managed;
    }

    /// <summary>Runs a program to completion; kills it and throws if it takes longer than <paramref name="timeout"/>.</summary>
    public static async Task<ProcessResult> RunAsync(string name, string dll, IEnumerable<string> args, TimeSpan timeout)
    {
        await using var process = Start(name, dll, args);
        process._process.StandardInput.Close();
        if (!await process.WaitForExitAsync(timeout))
        {
            throw new TimeoutException($"{name} {string.Join(' ', args)} did not exit within {timeout.TotalSeconds:0.#} s\n--- stdout\n{process.Stdout}\n--- stderr\n{process.Stderr}");
        }

        return new ProcessResult(process.ExitCode, process.Stdout, process.Stderr);
    }

    /// <summary>Waits for the process to exit and its output to be drained; false on timeout.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            await Task.WhenAll(_stdoutClosed.Task, _stderrClosed.Task).WaitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>kill -9: the process (and any child) dies at once without running any handler.</summary>
    public void Kill()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // Already gone.
        }
    }

    public async ValueTask DisposeAsync()
    {
        Kill();
        await WaitForExitAsync(TimeSpan.FromSeconds(10));
        Live.TryRemove(this, out _);
        _process.Dispose();
    }

    private void Append(List<string> lines, TaskCompletionSource closed, string? line)
    {
        if (line is null)
        {
            closed.TrySetResult();
            return;
        }

        lock (_lock)
        {
            lines.Add(line);
        }
    }
}
