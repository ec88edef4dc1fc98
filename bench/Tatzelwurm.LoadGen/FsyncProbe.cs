using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Tatzelwurm.LoadGen;

/// <summary>
/// The disk's floor for one durable write, measured in the same run as the comparison: appends of
/// 4 KiB to a file in the directory the coordinators keep their data in, each followed by
/// fdatasync (what SQLite calls for a commit here). A round trip in which the add and the result
/// are both durable before they are reported cannot be faster than two of these.
/// </summary>
public static partial class FsyncProbe
{
    public sealed record Result(int Writes, double P50Ms, double P99Ms);

    public static Result Measure(int writes = 1_000)
    {
        var path = Path.Combine(Path.GetTempPath(), $"tw-fsync-probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
        var block = new byte[4096];
        var times = new double[writes];
        try
        {
            using var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write);
            var fd = (int)handle.DangerousGetHandle();
            for (var i = 0; i < writes; i++)
            {
                var started = Stopwatch.GetTimestamp();
                RandomAccess.Write(handle, block, (long)i * block.Length);
                if (fdatasync(fd) != 0)
                {
                    throw new IOException($"fdatasync failed: errno {Marshal.GetLastPInvokeError()}");
                }

                times[i] = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            }
        }
        finally
        {
            File.Delete(path);
        }

        Array.Sort(times);
        return new Result(writes, times[writes / 2], times[Math.Min(writes - 1, (int)Math.Ceiling(writes * 0.99) - 1)]);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fdatasync(int fd);
}
