using System.Diagnostics;
using System.Globalization;

namespace Tatzelwurm.LoadGen;

/// <summary>
/// Counts the fsync and fdatasync calls one process makes during a run. Attaching perf to a running
/// process (<c>perf stat -p</c>) counts nothing in this sandbox, so this records the two syscall
/// tracepoints machine-wide (<c>perf record -a -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync</c>;
/// kernel tracepoints, no ptrace stops, so the measured process is not slowed down) and counts the
/// events whose process id is the target's. Null when perf or the tracepoints are not available.
/// </summary>
public sealed class FsyncCounter
{
    private readonly Process _perf;
    private readonly string _output;
    private readonly int _pid;

    private FsyncCounter(Process perf, string output, int pid)
    {
        _perf = perf;
        _output = output;
        _pid = pid;
    }

    public static async Task<FsyncCounter?> TryStartAsync(int pid)
    {
        var output = Path.Combine(Path.GetTempPath(), $"tw-perf-{Environment.ProcessId}-{Guid.NewGuid():N}.data");
        try
        {
            var info = new ProcessStartInfo("perf") { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var arg in new[] { "record", "-q", "-a", "-e", "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync", "-o", output })
            {
                info.ArgumentList.Add(arg);
            }

            var perf = Process.Start(info);
            if (perf is null)
            {
                return null;
            }

            // perf needs a moment to open the counters on every CPU.
            await Task.Delay(500);
            if (perf.HasExited)
            {
                perf.Dispose();
                return null;
            }

            return new FsyncCounter(perf, output, pid);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    /// <summary>Stops perf and returns the target's fsync + fdatasync calls, or null.</summary>
    public async Task<long?> StopAsync()
    {
        try
        {
            if (!_perf.HasExited)
            {
                using var kill = Process.Start("kill", ["-INT", _perf.Id.ToString(CultureInfo.InvariantCulture)]);
                await kill!.WaitForExitAsync();
            }

            using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20)))
            {
                await _perf.WaitForExitAsync(timeout.Token);
            }

            var info = new ProcessStartInfo("perf") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var arg in new[] { "script", "-i", _output, "-F", "pid" })
            {
                info.ArgumentList.Add(arg);
            }

            using var script = Process.Start(info)!;
            var stderr = script.StandardError.ReadToEndAsync();
            long count = 0;
            var target = _pid.ToString(CultureInfo.InvariantCulture);
            while (await script.StandardOutput.ReadLineAsync() is { } line)
            {
                if (line.Trim() == target)
                {
                    count++;
                }
            }

            await script.WaitForExitAsync();
            await stderr;
            return script.ExitCode == 0 ? count : null;
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
        finally
        {
            _perf.Dispose();
            File.Delete(_output);
        }
    }
}
