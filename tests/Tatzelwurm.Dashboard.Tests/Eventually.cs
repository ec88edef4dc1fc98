using System.Diagnostics;

namespace Tatzelwurm.Dashboard.Tests;

/// <summary>
/// Awaits a condition with a bounded deadline: probes, and between probes yields briefly. Used where
/// no event announces the condition (a worker's registration, the store's recovery probe); the test
/// fails with what it waited for and the last value seen, never passes on a timeout.
/// </summary>
internal static class Eventually
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    public static async Task<T> MatchAsync<T>(Func<Task<T>> probe, Func<T, bool> done, string what, TimeSpan? timeout = null)
    {
        var limit = timeout ?? DefaultTimeout;
        var started = Stopwatch.StartNew();
        while (true)
        {
            var value = await probe();
            if (done(value))
            {
                return value;
            }

            if (started.Elapsed > limit)
            {
                throw new TimeoutException($"{what}: not reached within {limit.TotalSeconds:0} s; last value: {value}");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20));
        }
    }

    public static Task TrueAsync(Func<Task<bool>> probe, string what, TimeSpan? timeout = null) =>
        MatchAsync(probe, ok => ok, what, timeout);
}
