using System.Buffers;
using System.Buffers.Binary;
using MessagePack;

namespace Tatzelwurm.Protocol;

/// <summary>Constants of the wire contract.</summary>
public static class ProtocolConstants
{
    /// <summary>The protocol version this library speaks; sent in <see cref="Hello"/>.</summary>
    public const int Version = 1;

    /// <summary>Bytes of the big-endian length prefix in front of every body.</summary>
    public const int HeaderSize = 4;

    /// <summary>Default limit of a frame body (the coordinator's is configurable).</summary>
    public const int DefaultMaxFrame = 16 * 1024 * 1024;

    /// <summary>
    /// Most reports in one <see cref="TaskUpdates"/>; the coordinator refuses a longer list whole with
    /// <see cref="ErrorCode.InvalidRequest"/>, because it applies one request in one step of its loop.
    /// </summary>
    public const int MaxReportsPerTaskUpdates = 4096;
}

/// <summary>What <see cref="FrameCodec.TryReadFrame"/> found at the front of a buffer.</summary>
public enum FrameStatus
{
    /// <summary>Not enough bytes yet for a whole frame.</summary>
    Incomplete,
    /// <summary>A whole frame was sliced off the buffer.</summary>
    Complete,
    /// <summary>The length prefix is zero: a protocol violation.</summary>
    Empty,
    /// <summary>The length prefix exceeds the maximum: rejected before reading or allocating the body.</summary>
    TooLarge,
}

/// <summary>A frame or message that violates the protocol.</summary>
public sealed class ProtocolException(ErrorCode code, string message, uint requestId = 0) : Exception(message)
{
    /// <summary>The error code to report to the peer.</summary>
    public ErrorCode Code { get; } = code;

    /// <summary>The request id, when one could be read from the offending message.</summary>
    public uint RequestId { get; } = requestId;
}

/// <summary>
/// Framing (docs/protocol.md §1): each frame is a 4-byte big-endian unsigned length N followed by N
/// bytes of one MessagePack value, the union array [code, [fields...]].
/// </summary>
public static class FrameCodec
{
    /// <summary>Serializer options for anything read off the wire: untrusted-data limits, no typeless.</summary>
    public static readonly MessagePackSerializerOptions Options =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    private static readonly HashSet<int> KnownCodes = typeof(IMessage)
        .GetCustomAttributes(typeof(UnionAttribute), false)
        .Cast<UnionAttribute>()
        .Select(u => u.Key)
        .ToHashSet();

    /// <summary>
    /// Slices one frame body off the front of <paramref name="buffer"/>. The declared length is checked
    /// against <paramref name="maxFrame"/> before anything is read or allocated for the body.
    /// </summary>
    public static FrameStatus TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxFrame, out ReadOnlySequence<byte> body, out long declaredLength)
    {
        body = default;
        declaredLength = 0;
        if (buffer.Length < ProtocolConstants.HeaderSize)
        {
            return FrameStatus.Incomplete;
        }

        Span<byte> header = stackalloc byte[ProtocolConstants.HeaderSize];
        buffer.Slice(0, ProtocolConstants.HeaderSize).CopyTo(header);
        declaredLength = BinaryPrimitives.ReadUInt32BigEndian(header);
        if (declaredLength == 0)
        {
            return FrameStatus.Empty;
        }

        if (declaredLength > maxFrame)
        {
            return FrameStatus.TooLarge;
        }

        if (buffer.Length < ProtocolConstants.HeaderSize + declaredLength)
        {
            return FrameStatus.Incomplete;
        }

        body = buffer.Slice(ProtocolConstants.HeaderSize, declaredLength);
        buffer = buffer.Slice(body.End);
        return FrameStatus.Complete;
    }

    /// <summary>
    /// Decodes one frame body. Throws <see cref="ProtocolException"/> with <see cref="ErrorCode.BadFrame"/>
    /// for bytes that are not one well-formed message, or <see cref="ErrorCode.UnknownMessage"/> for an
    /// intact union with a code this version does not know (the request id is recovered when possible).
    /// </summary>
    public static IMessage Decode(ReadOnlySequence<byte> body)
    {
        var (code, requestId) = PeekEnvelope(body);
        if (!KnownCodes.Contains(code))
        {
            throw new ProtocolException(ErrorCode.UnknownMessage, $"unknown message type {code}", requestId);
        }

        try
        {
            var reader = new MessagePackReader(body);
            var message = Options.Resolver.GetFormatterWithVerify<IMessage>().Deserialize(ref reader, Options);
            if (message is null)
            {
                throw new ProtocolException(ErrorCode.BadFrame, "frame body is nil");
            }

            if (!reader.End)
            {
                throw new ProtocolException(ErrorCode.BadFrame, "trailing bytes after the message");
            }

            return message;
        }
        catch (MessagePackSerializationException ex)
        {
            throw new ProtocolException(ErrorCode.BadFrame, $"message type {code} does not decode: {Innermost(ex).Message}", requestId);
        }
        catch (EndOfStreamException)
        {
            throw new ProtocolException(ErrorCode.BadFrame, $"message type {code} is truncated", requestId);
        }
        catch (Exception ex) when (ex is OverflowException or ArgumentException)
        {
            // The formatters are called directly (no serializer wrapper), so a negative request id read as a
            // uint, an int field beyond 32 bits or a map with a duplicate key surface as these, not as
            // MessagePackSerializationException. They are broken frames all the same.
            throw new ProtocolException(ErrorCode.BadFrame, $"message type {code} does not decode: {ex.Message}", requestId);
        }
    }

    /// <summary>Decodes a whole frame (length prefix included), as stored in golden vectors.</summary>
    public static IMessage DecodeFrame(ReadOnlySpan<byte> frame)
    {
        var sequence = new ReadOnlySequence<byte>(frame.ToArray());
        return TryReadFrame(ref sequence, int.MaxValue, out var body, out _) == FrameStatus.Complete && sequence.IsEmpty
            ? Decode(body)
            : throw new ProtocolException(ErrorCode.BadFrame, "not exactly one frame");
    }

    /// <summary>Serializes a message body (no length prefix).</summary>
    public static byte[] EncodeBody(IMessage message) => MessagePackSerializer.Serialize(message, Options);

    /// <summary>Serializes a whole frame: length prefix and body.</summary>
    public static byte[] EncodeFrame(IMessage message)
    {
        var body = EncodeBody(message);
        var frame = new byte[ProtocolConstants.HeaderSize + body.Length];
        BinaryPrimitives.WriteUInt32BigEndian(frame, (uint)body.Length);
        body.CopyTo(frame.AsSpan(ProtocolConstants.HeaderSize));
        return frame;
    }

    /// <summary>Writes a whole frame to <paramref name="writer"/>.</summary>
    public static void WriteFrame(IBufferWriter<byte> writer, IMessage message) => TryWriteFrame(writer, message, int.MaxValue, out _);

    /// <summary>
    /// Writes a whole frame to <paramref name="writer"/> unless its body is longer than
    /// <paramref name="maxBody"/> bytes; <paramref name="bodyLength"/> is the body's length either way.
    /// </summary>
    public static bool TryWriteFrame(IBufferWriter<byte> writer, IMessage message, int maxBody, out int bodyLength)
    {
        // The body is encoded into a buffer the thread reuses rather than a new array per frame (a
        // write loop sends thousands a second): its length must be known before the prefix is written.
        var scratch = _scratch ??= new ArrayBufferWriter<byte>(4096);
        scratch.ResetWrittenCount();
        try
        {
            MessagePackSerializer.Serialize(scratch, message, Options);
            bodyLength = scratch.WrittenCount;
            var fits = bodyLength <= maxBody;
            if (fits)
            {
                WriteFrame(writer, scratch.WrittenSpan);
            }

            return fits;
        }
        finally
        {
            if (scratch.Capacity > MaxScratch)
            {
                _scratch = null; // a large frame should not keep its buffer alive on every thread that wrote one
            }
        }
    }

    // Room for the usual frames (a full AssignTasks of small tasks is ≈250 KB) on each writing thread.
    private const int MaxScratch = 256 * 1024;

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? _scratch;

    /// <summary>Writes a whole frame around a body already encoded with <see cref="EncodeBody"/>.</summary>
    public static void WriteFrame(IBufferWriter<byte> writer, ReadOnlySpan<byte> body)
    {
        var span = writer.GetSpan(ProtocolConstants.HeaderSize + body.Length);
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)body.Length);
        body.CopyTo(span[ProtocolConstants.HeaderSize..]);
        writer.Advance(ProtocolConstants.HeaderSize + body.Length);
    }

    // Reads [code, [field0, ...]] far enough to learn the code and, when field 0 is an unsigned
    // integer, the request id, so that even an unknown or broken request gets a correlated error.
    private static (int Code, uint RequestId) PeekEnvelope(ReadOnlySequence<byte> body)
    {
        try
        {
            var reader = new MessagePackReader(body);
            if (reader.NextMessagePackType != MessagePackType.Array || reader.ReadArrayHeader() != 2
                || reader.NextMessagePackType != MessagePackType.Integer)
            {
                throw new ProtocolException(ErrorCode.BadFrame, "frame body is not a [code, fields] array");
            }

            var code = reader.ReadInt32();
            uint requestId = 0;
            if (reader.NextMessagePackType == MessagePackType.Array && reader.ReadArrayHeader() > 0
                && reader.NextMessagePackType == MessagePackType.Integer)
            {
                var first = reader.ReadInt64();
                if (first is > 0 and <= uint.MaxValue)
                {
                    requestId = (uint)first;
                }
            }

            return (code, requestId);
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or OverflowException)
        {
            throw new ProtocolException(ErrorCode.BadFrame, "frame body is not MessagePack");
        }
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex.InnerException is not null)
        {
            ex = ex.InnerException;
        }

        return ex;
    }
}
