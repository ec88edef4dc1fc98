namespace Tatzelwurm.EndToEnd.Tests.Fixtures;

/// <summary>
/// Bounded polling of observable state: the only way these tests wait for a condition. A probe is
/// asked again every <c>interval</c> until it yields a value or the deadline passes; the timeout
/// message says what was awaited and what was seen last.
/// </summary>
internal static class Eventually
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    private static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(50);

    /// <summary>Polls until <paramref name="probe"/> returns a non-null value and returns it.</summary>
    public static async Task<T> WaitAsync<T>(string what, Func<Task<T?>> probe, Func<string>? lastSeen = null, TimeSpan? timeout = null, TimeSpan? interval = null)
        where T : class
    {
        var deadline = DateTimeOffset.UtcNow + (timeout ?? DefaultTimeout);
        while (true)
        {
            if (await probe() is { } value)
            {
                return value;
            }

            if (DateTimeOffset.UtcNow >= deadline)
            {
                throw new TimeoutException($"timed out after {(timeout ?? DefaultTimeout).TotalSeconds:0.#} s waiting for {what}" +
                    (lastSeen is null ? "" : $"; last seen: {lastSeen()}"));
            }

            await Task.Delay(interval ?? DefaultInterval);
        }
    }

    /// <summary>Polls until <paramref name="condition"/> holds.</summary>
    public static Task UntilAsync(string what, Func<Task<bool>> condition, Func<string>? lastSeen = null, TimeSpan? timeout = null, TimeSpan? interval = null) =>
        WaitAsync(what, async () => await condition() ? new object() : null, lastSeen, timeout, interval);
}
