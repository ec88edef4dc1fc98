using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Tatzelwurm.Storage;

/// <summary>
/// The JSON text column <c>tasks.tags</c>. Disk contract: <c>["a","b"]</c>. Readable with sqlite3's
/// json_each. (Schema v1 also kept the history as JSON; v2 moved it into the binary <c>task_state.history</c>.)
/// </summary>
internal sealed class JsonColumns : IDisposable
{
    // Relaxed escaping keeps non-ASCII tags readable in the sqlite3 CLI; the text is
    // never embedded in HTML.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly ArrayBufferWriter<byte> _buffer = new(256);
    private readonly Utf8JsonWriter _writer;

    public JsonColumns()
    {
        _writer = new Utf8JsonWriter(_buffer, WriterOptions);
    }

    public void Dispose() => _writer.Dispose();

    /// <summary>The tags as UTF-8 JSON, valid until the next call.</summary>
    public ReadOnlySpan<byte> WriteTags(IReadOnlyList<string> tags)
    {
        if (tags.Count == 0)
        {
            return "[]"u8;
        }

        _buffer.ResetWrittenCount();
        _writer.Reset(_buffer);
        _writer.WriteStartArray();
        foreach (var tag in tags)
        {
            _writer.WriteStringValue(tag);
        }

        _writer.WriteEndArray();
        _writer.Flush();
        return _buffer.WrittenSpan;
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
