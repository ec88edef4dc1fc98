using System.Buffers.Binary;
using MessagePack;

namespace Tatzelwurm.Server.Tests.Harness;

/// <summary>Hand-made frames, for what a well-behaved encoder would never produce.</summary>
internal static class RawFrames
{
    /// <summary>A 4-byte big-endian length prefix declaring <paramref name="length"/> bytes.</summary>
    public static byte[] Header(uint length)
    {
        var header = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(header, length);
        return header;
    }

    public static byte[] Frame(byte[] body) => [.. Header((uint)body.Length), .. body];

    /// <summary>
    /// Encodes plain values (ints, strings, null, object arrays) as MessagePack, e.g.
    /// <c>Body(99, new object[] { 7 })</c> is the envelope <c>[99, [7]]</c>.
    /// </summary>
    public static byte[] Body(params object?[] envelope) => Value(envelope);

    public static byte[] Value(object? value) => MessagePackSerializer.Serialize(value, MessagePackSerializerOptions.Standard);
}
