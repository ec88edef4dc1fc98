using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Tatzelwurm.Core;

namespace Tatzelwurm.Storage;

/// <summary>
/// <c>task_state.history</c>: a task's transitions as one BLOB, so a commit appends its new entries
/// to the row it updates anyway (<c>history = history || ?</c>) instead of inserting rows into a
/// second B-tree. See docs/storage.md for the format.
/// </summary>
/// <remarks>
/// Layout: one format byte (<see cref="Format"/>), then per entry one byte with the TaskState in
/// the low bits and <see cref="HasReason"/> set if there is a reason (null and "" differ), the time
/// as 8 bytes big-endian unix milliseconds, and for a reason its UTF-8 length as an unsigned LEB128
/// varint followed by the bytes. Entries have no separator, so appending needs no header rewrite.
/// Big-endian and LEB128 because the v1 -> v2 migration builds the same bytes with printf in SQL.
/// </remarks>
internal static class HistoryBlob
{
    public const byte Format = 1;

    private const byte HasReason = 0x80;
    private const int EntryFixedBytes = 9;

    /// <summary>Appends the header (if <paramref name="from"/> is 0 and <paramref name="header"/>) and entries from <paramref name="from"/> on.</summary>
    public static void Write(ArrayBufferWriter<byte> buffer, IReadOnlyList<Transition> history, int from, bool header)
    {
        if (header)
        {
            buffer.GetSpan(1)[0] = Format;
            buffer.Advance(1);
        }

        for (var i = from; i < history.Count; i++)
        {
            var h = history[i];
            var reason = h.Reason;
            var reasonBytes = reason is null ? 0 : Encoding.UTF8.GetByteCount(reason);
            var span = buffer.GetSpan(EntryFixedBytes + 5 + reasonBytes);
            span[0] = (byte)((int)h.State | (reason is null ? 0 : HasReason));
            BinaryPrimitives.WriteInt64BigEndian(span[1..], h.At.ToUnixTimeMilliseconds());
            var n = EntryFixedBytes;
            if (reason is not null)
            {
                var length = (uint)reasonBytes;
                while (length >= 0x80)
                {
                    span[n++] = (byte)(length | 0x80);
                    length >>= 7;
                }

                span[n++] = (byte)length;
                n += Encoding.UTF8.GetBytes(reason, span[n..]);
            }

            buffer.Advance(n);
        }
    }

    /// <summary>Decodes a whole blob, expecting <paramref name="count"/> entries.</summary>
    /// <param name="pool">Reasons repeat; recovery shares their strings.</param>
    /// <param name="scratch">Reused across calls.</param>
    /// <exception cref="StoreException">The blob is of an unknown format, truncated, or otherwise damaged.</exception>
    public static Transition[] Read(long id, ReadOnlySpan<byte> blob, long count, StringPool pool, List<Transition> scratch)
    {
        if (blob.IsEmpty || blob[0] != Format)
        {
            throw Damaged(id, blob.IsEmpty ? "empty" : $"unknown format {blob[0]} (written by a newer release?)");
        }

        scratch.Clear();
        var p = 1;
        while (p < blob.Length)
        {
            if (blob.Length - p < EntryFixedBytes)
            {
                throw Damaged(id, $"entry {scratch.Count} is truncated");
            }

            var tag = blob[p];
            var state = tag & ~HasReason;
            if (state > (int)TaskState.Terminated)
            {
                throw Damaged(id, $"entry {scratch.Count} has unknown state {state}");
            }

            var at = BinaryPrimitives.ReadInt64BigEndian(blob[(p + 1)..]);
            if (at < DateTimeOffset.MinValue.ToUnixTimeMilliseconds() || at > DateTimeOffset.MaxValue.ToUnixTimeMilliseconds())
            {
                throw Damaged(id, $"entry {scratch.Count} has an impossible time {at}");
            }

            p += EntryFixedBytes;
            string? reason = null;
            if ((tag & HasReason) != 0)
            {
                var length = ReadLength(id, blob, ref p, scratch.Count);
                if (length > blob.Length - p)
                {
                    throw Damaged(id, $"entry {scratch.Count}'s reason runs past the end");
                }

                reason = pool.Intern(blob.Slice(p, (int)length));
                p += (int)length;
            }

            scratch.Add(new Transition((TaskState)state, DateTimeOffset.FromUnixTimeMilliseconds(at), reason));
        }

        if (scratch.Count != count)
        {
            throw Damaged(id, $"{scratch.Count} entries where the row says {count}");
        }

        return [.. scratch];
    }

    private static long ReadLength(long id, ReadOnlySpan<byte> blob, ref int p, int entry)
    {
        long length = 0;
        for (var shift = 0; shift < 35; shift += 7)
        {
            if (p >= blob.Length)
            {
                break;
            }

            var b = blob[p++];
            length |= (long)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return length;
            }
        }

        throw Damaged(id, $"entry {entry}'s reason length is truncated or too long");
    }

    private static StoreException Damaged(long id, string what) => new($"task {id} has a damaged history: {what}");
}
