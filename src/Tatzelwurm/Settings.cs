using System.Globalization;
using System.Text.Json;

namespace Tatzelwurm.App;

/// <summary>Settings from the environment (TATZELWURM_NAME) and the optional file &lt;data&gt;/tatzelwurm.json.</summary>
internal sealed class Settings(Dictionary<string, string> file)
{
    public const string FileName = "tatzelwurm.json";

    public static Settings Load(string dataDirectory)
    {
        var path = Path.Combine(dataDirectory, FileName);
        var values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (File.Exists(path))
        {
            using var doc = Parse(path);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new FormatException($"{path}: not a JSON object of settings (the root is {doc.RootElement.ValueKind})");
            }

            foreach (var property in doc.RootElement.EnumerateObject())
            {
                values[property.Name] = property.Value.ValueKind == JsonValueKind.String ? property.Value.GetString()! : property.Value.GetRawText();
            }
        }

        return new Settings(values);
    }

    private static JsonDocument Parse(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException ex)
        {
            throw new FormatException($"{path}: not a JSON object of settings ({ex.Message})", ex);
        }
    }

    /// <summary>The value of a flag named <paramref name="flag"/> (e.g. "--listen") from the environment or the file.</summary>
    public string Get(string flag, string fallback)
    {
        var name = flag.TrimStart('-');
        var env = Environment.GetEnvironmentVariable("TATZELWURM_" + name.Replace('-', '_').ToUpperInvariant());
        return !string.IsNullOrEmpty(env) ? env : file.GetValueOrDefault(name) ?? fallback;
    }

    /// <summary>Parses 500ms, 10s, 5m, 2h, 7d (or a plain number of seconds).</summary>
    public static TimeSpan Duration(string text)
    {
        text = text.Trim();
        (string Suffix, double Seconds)[] units = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)];
        foreach (var (suffix, seconds) in units)
        {
            if (text.EndsWith(suffix, StringComparison.Ordinal)
                && double.TryParse(text[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            {
                return TimeSpan.FromSeconds(value * seconds);
            }
        }

        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var plain)
            ? TimeSpan.FromSeconds(plain)
            : throw new FormatException($"'{text}' is not a duration (use e.g. 500ms, 10s, 5m, 2h, 7d)");
    }
}
