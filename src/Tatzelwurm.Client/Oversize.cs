using System.Globalization;
using System.Text;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Client;

/// <summary>
/// The error text that replaces a result or error text too large for the coordinator's max_frame, so
/// that the task (or RPC call) ends with the reason instead of a connection the coordinator closes.
/// </summary>
internal static class Oversize
{
    // More of the original error text would only bloat the failure that replaces it.
    private const int MaxQuoted = 1000;

    private const string Began = "; the error text began: ";

    /// <summary>
    /// Names the sizes and the limit, e.g. "result of 20,971,520 bytes exceeds the coordinator's max_frame
    /// of 16,777,216 bytes", then quotes the start of <paramref name="error"/> as far as the frame allows.
    /// </summary>
    internal static string Describe(string what, byte[]? result, string? error, int maxFrame)
    {
        var sizes = (result, string.IsNullOrEmpty(error) ? null : error) switch
        {
            ({ } r, { } e) => string.Create(CultureInfo.InvariantCulture, $"{what} of {r.Length:N0} bytes and error text of {Encoding.UTF8.GetByteCount(e):N0} bytes exceed"),
            ({ } r, null) => string.Create(CultureInfo.InvariantCulture, $"{what} of {r.Length:N0} bytes exceeds"),
            _ => string.Create(CultureInfo.InvariantCulture, $"error text of {Encoding.UTF8.GetByteCount(error ?? ""):N0} bytes exceeds"),
        };
        var text = string.Create(CultureInfo.InvariantCulture, $"{sizes} the coordinator's max_frame of {maxFrame:N0} bytes");
        if (string.IsNullOrEmpty(error))
        {
            return text;
        }

        // The frame's room for the quote by the same upper bounds that pack report batches (WireSize).
        var room = (maxFrame - WireSize.Envelope - WireSize.Report(new TaskReport(0, TaskUpdateKind.Finished, 0, null, text + Began))) / 3;
        var quoted = (int)Math.Min(Math.Min(room, MaxQuoted), error.Length);
        if (quoted > 0 && char.IsHighSurrogate(error[quoted - 1]))
        {
            quoted--;
        }

        return quoted > 0 ? text + Began + error[..quoted] : text;
    }

    /// <summary>
    /// Whether a report fits a frame on its own: the cheap bound first, and for a report it refuses, the
    /// same bound with the error text's exact UTF-8 length (the bound counts three bytes per character).
    /// </summary>
    internal static bool Fits(TaskReport report, int maxFrame) =>
        WireSize.Envelope + WireSize.Report(report) <= maxFrame
        || WireSize.Envelope + WireSize.Report(report with { Error = null }) + Encoding.UTF8.GetByteCount(report.Error ?? "") <= maxFrame;
}
