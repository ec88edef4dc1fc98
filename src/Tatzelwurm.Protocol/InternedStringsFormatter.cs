using MessagePack;
using MessagePack.Formatters;

namespace Tatzelwurm.Protocol;

/// <summary>
/// A list of strings whose elements are interned as they are decoded (the encoding is MessagePack's
/// usual array of strings). Task tags repeat across a million tasks: decoded one by one, each task
/// would keep its own copies. <see cref="StringInterningFormatter"/> keeps only weak references,
/// so names nobody uses any more are not held.
/// </summary>
public sealed class InternedStringsFormatter : IMessagePackFormatter<IReadOnlyList<string>>
{
    private static readonly StringInterningFormatter Element = new();

    /// <inheritdoc/>
    public void Serialize(ref MessagePackWriter writer, IReadOnlyList<string> value, MessagePackSerializerOptions options)
    {
        if (value is null)
        {
            writer.WriteNil();
            return;
        }

        writer.WriteArrayHeader(value.Count);
        foreach (var item in value)
        {
            Element.Serialize(ref writer, item, options);
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<string> Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options)
    {
        if (reader.TryReadNil())
        {
            return null!;
        }

        var count = reader.ReadArrayHeader();
        if (count == 0)
        {
            return [];
        }

        options.Security.DepthStep(ref reader);
        try
        {
            var items = new string[count];
            for (var i = 0; i < count; i++)
            {
                // A nil element stays nil, as with MessagePack's own list formatter: the coordinator refuses it.
                items[i] = Element.Deserialize(ref reader, options)!;
            }

            return items;
        }
        finally
        {
            reader.Depth--;
        }
    }
}
