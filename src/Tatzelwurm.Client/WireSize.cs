using Tatzelwurm.Protocol;

namespace Tatzelwurm.Client;

/// <summary>
/// Upper bounds of MessagePack sizes, for packing requests within the coordinator's frame limit: every
/// header at its widest and three UTF-8 bytes per UTF-16 unit. Overestimating only makes a batch smaller.
/// </summary>
internal static class WireSize
{
    /// <summary>Room for a request's envelope: [code, [request_id, [items...]]] with the widest headers.</summary>
    internal const int Envelope = 32;

    /// <summary>A task spec: its array header, policy, priority, flags and nil markers, plus its data.</summary>
    internal static long Spec(TaskSpec? spec)
    {
        var bytes = 32 + (spec?.Payload?.Length ?? 0) + String(spec?.Type);
        if (spec?.Tags is { } tags)
        {
            foreach (var tag in tags)
            {
                bytes += String(tag);
            }
        }

        return bytes;
    }

    /// <summary>A task report: array header, task id, kind, exit code, plus its result and error.</summary>
    internal static long Report(TaskReport report) => 16 + Binary(report.Result) + String(report.Error);

    internal static long String(string? s) => 5 + (3L * (s?.Length ?? 0));

    internal static long Binary(byte[]? b) => 5 + (b?.Length ?? 0);
}
