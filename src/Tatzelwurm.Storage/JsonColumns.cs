using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Tatzelwurm.Core;

namespace Tatzelwurm.Storage;

/// <summary>
/// The two JSON text columns of <c>tasks</c>. Disk contract:
/// <c>tags</c> = <c>["a","b"]</c>; <c>history</c> = <c>[[state, at_unix_ms], [state, at_unix_ms, "reason"], ...]</c>
/// (the reason is omitted when null). Readable with sqlite3's json_each.
/// </summary>
internal sealed class JsonColumns : IDisposable
{
    // Relaxed escaping keeps non-ASCII tags and reasons readable in the sqlite3 CLI; the text is
    // never embedded in HTML.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly ArrayBufferWriter<byte> _buffer = new(256);
    private readonly Utf8JsonWriter _writer;

    public JsonColumns()
    {
        _writer = new Utf8JsonWriter(_buffer, WriterOptions);
    }

    public void Dispose() => _writer.Dispose();

    public string WriteTags(IReadOnlyList<string> tags)
    {
        if (tags.Count == 0)
        {
            return "[]";
        }

        Reset();
        _writer.WriteStartArray();
        foreach (var tag in tags)
        {
            _writer.WriteStringValue(tag);
        }

        _writer.WriteEndArray();
        return Finish();
    }

    public string WriteHistory(IReadOnlyList<Transition> history)
    {
        if (history.Count == 0)
        {
            return "[]";
        }

        Reset();
        _writer.WriteStartArray();
        foreach (var t in history)
        {
            _writer.WriteStartArray();
            _writer.WriteNumberValue((int)t.State);
            _writer.WriteNumberValue(t.At.ToUnixTimeMilliseconds());
            if (t.Reason is not null)
            {
                _writer.WriteStringValue(t.Reason);
            }

            _writer.WriteEndArray();
        }

        _writer.WriteEndArray();
        return Finish();
    }

    private void Reset()
    {
        _buffer.ResetWrittenCount();
        _writer.Reset(_buffer);
    }

    private string Finish()
    {
        _writer.Flush();
        return Encoding.UTF8.GetString(_buffer.WrittenSpan);
    }

    /// <param name="tags">Scratch list, reused across rows.</param>
    public static string[] ReadTags(ReadOnlySpan<byte> json, StringPool pool, List<string> tags)
    {
        if (json.Length <= 2)
        {
            return [];
        }

        var reader = new Utf8JsonReader(json);
        Expect(ref reader, JsonTokenType.StartArray, "tags");
        tags.Clear();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            tags.Add(ReadString(ref reader, pool, "tags"));
        }

        return [.. tags];
    }

    /// <param name="items">Scratch list, reused across rows.</param>
    public static Transition[] ReadHistory(ReadOnlySpan<byte> json, StringPool pool, List<Transition> items)
    {
        if (json.Length <= 2)
        {
            return [];
        }

        var reader = new Utf8JsonReader(json);
        Expect(ref reader, JsonTokenType.StartArray, "history");
        items.Clear();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartArray)
            {
                throw Corrupt("history");
            }

            Expect(ref reader, JsonTokenType.Number, "history");
            var state = (TaskState)reader.GetInt32();
            Expect(ref reader, JsonTokenType.Number, "history");
            var at = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64());
            string? reason = null;
            reader.Read();
            if (reader.TokenType == JsonTokenType.String)
            {
                reason = ReadString(ref reader, pool, "history");
                reader.Read();
            }

            if (reader.TokenType != JsonTokenType.EndArray)
            {
                throw Corrupt("history");
            }

            items.Add(new Transition(state, at, reason));
        }

        return [.. items];
    }

    private static string ReadString(ref Utf8JsonReader reader, StringPool pool, string column)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            throw Corrupt(column);
        }

        return reader.ValueIsEscaped ? pool.Intern(reader.GetString()!) : pool.Intern(reader.ValueSpan);
    }

    private static void Expect(ref Utf8JsonReader reader, JsonTokenType type, string column)
    {
        if (!reader.Read() || reader.TokenType != type)
        {
            throw Corrupt(column);
        }
    }

    private static StoreException Corrupt(string column) => new($"tasks.{column} is not in the expected JSON shape");
}
