using System.Globalization;
using System.Text;

namespace Tatzelwurm.Client;

/// <summary>Kinds of the reference worker's built-in mock tasks.</summary>
public enum MockKind
{
    /// <summary>An async sleep on the worker's event loop (type "async").</summary>
    Sleep,
    /// <summary>A blocking sleep on its own thread (type "sync").</summary>
    Block,
    /// <summary>Evaluates an arithmetic expression; the result is its value as text (type "async").</summary>
    Eval,
    /// <summary>Fails at once with the given exit code (type "async").</summary>
    Fail,
}

/// <summary>
/// A mock task spec as typed on the command line and carried as the task payload (UTF-8 text):
/// <c>sleep:200ms</c>, <c>block:1s</c>, <c>eval:1+2*3</c>, <c>fail:3</c>.
/// </summary>
public sealed record MockTask(MockKind Kind, TimeSpan Duration, string Expression, int ExitCode)
{
    /// <summary>The task type a spec goes to unless one is given: async work for sleep/eval/fail, sync for blocking sleeps.</summary>
    public string DefaultType => Kind == MockKind.Block ? "sync" : "async";

    /// <summary>The payload bytes of this spec.</summary>
    public byte[] ToPayload() => Encoding.UTF8.GetBytes(Kind switch
    {
        MockKind.Sleep => $"sleep:{Duration.TotalMilliseconds.ToString(CultureInfo.InvariantCulture)}ms",
        MockKind.Block => $"block:{Duration.TotalMilliseconds.ToString(CultureInfo.InvariantCulture)}ms",
        MockKind.Eval => $"eval:{Expression}",
        _ => $"fail:{ExitCode.ToString(CultureInfo.InvariantCulture)}",
    });

    /// <summary>Parses a spec; throws <see cref="FormatException"/> with the accepted forms.</summary>
    public static MockTask Parse(string spec)
    {
        var colon = spec.IndexOf(':', StringComparison.Ordinal);
        var (kind, argument) = colon < 0 ? (spec, "") : (spec[..colon], spec[(colon + 1)..]);
        return kind.Trim().ToLowerInvariant() switch
        {
            "sleep" => new MockTask(MockKind.Sleep, ParseDuration(argument), "", 0),
            "block" => new MockTask(MockKind.Block, ParseDuration(argument), "", 0),
            "eval" when argument.Length > 0 => new MockTask(MockKind.Eval, TimeSpan.Zero, argument, 0),
            "fail" => new MockTask(MockKind.Fail, TimeSpan.Zero, "",
                int.TryParse(argument.Length == 0 ? "1" : argument, NumberStyles.Integer, CultureInfo.InvariantCulture, out var code) && code is not (0 or -1)
                    ? code
                    : throw new FormatException($"fail:{argument}: the exit code must be an integer other than 0 and -1")),
            _ => throw new FormatException($"'{spec}' is not a mock task; use sleep:200ms, block:1s, eval:1+2*3 or fail:3"),
        };
    }

    /// <summary>Parses a payload written by <see cref="ToPayload"/>.</summary>
    public static MockTask FromPayload(byte[] payload) => Parse(Encoding.UTF8.GetString(payload));

    private static TimeSpan ParseDuration(string text)
    {
        text = text.Trim();
        (string Suffix, double Ms)[] units = [("ms", 1), ("s", 1000), ("m", 60_000)];
        foreach (var (suffix, ms) in units)
        {
            if (text.EndsWith(suffix, StringComparison.Ordinal)
                && double.TryParse(text[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value >= 0)
            {
                return TimeSpan.FromMilliseconds(value * ms);
            }
        }

        throw new FormatException($"'{text}' is not a duration; use e.g. 200ms, 2s, 1m");
    }
}
