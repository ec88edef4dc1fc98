using System.Buffers.Binary;
using System.Text;

namespace Tatzelwurm.Core;

/// <summary>
/// The terminated tasks kept for the retention period, encoded as bytes in large chunks instead of a
/// <see cref="TaskRecord"/> (and its history and result arrays) per task. Terminated tasks are most
/// of a busy coordinator's table, and as objects every background GC marks them all, again and
/// again, until they are purged: a restarted coordinator holding 900,000 of them assigned 0.72× as
/// fast with a million queued as with a thousand, 0.82× with this log (medians of three alternating
/// runs, docs/benchmarks.md "Scale"). Here they cost the GC nothing: the chunks and the id index hold
/// no references.
/// <para>
/// Entries are appended in termination order, which is also the retention order, so purging takes
/// them from the head and frees whole chunks. A record is decoded again only when it is asked for
/// (show, wait, a page of a listing); filters read the entry's header without decoding it.
/// </para>
/// Written by hand because no serializer lays records out this way: a fixed header the filters read
/// in place, strings that repeat (types, worker ids) as indices into a pool, and no objects. The pool
/// never forgets a string, which suits types and worker ids (a few dozen in practice); tags are
/// written out in UTF-8, since they may be unique per task.
/// </summary>
internal sealed class TerminatedLog
{
    // Below the large object heap's 85,000-byte threshold; an entry larger than a chunk (a large
    // result) gets a chunk of its own size.
    private const int ChunkSize = 64 * 1024;
    private const int NoString = -1;

    // Header offsets, read in place by the filters and the purge.
    private const int LengthAt = 0;
    private const int IdAt = 4;
    private const int UpdatedAt = 12;
    private const int TypeAt = 22;
    private const int WorkerAt = 26;
    private const int TagCountAt = 30;
    private const int TagsAt = 34;

    // Chunks from the head (the oldest entry) to the tail; _used[i] is how much of chunk i is written.
    private readonly List<byte[]> _chunks = [];
    private readonly List<int> _used = [];
    // Position of each entry: chunk sequence number (counted since the log began) << 32 | offset.
    private readonly Dictionary<long, long> _index = [];
    private readonly List<string> _strings = [];
    private readonly Dictionary<string, int> _stringIndex = new(StringComparer.Ordinal);
    // Terminated tasks per type (by string index), for the gauges.
    private readonly List<int> _countByType = [];
    private long _firstChunk;
    private int _head;
    private int _headOffset;

    public int Count => _index.Count;

    public bool Contains(long id) => _index.ContainsKey(id);

    public void EnsureCapacity(int count) => _index.EnsureCapacity(count);

    /// <summary>Appends a terminated task (its payload bytes are not kept, only their size).</summary>
    // Indexed loops, not foreach: the lists are interfaces, whose enumerators would allocate.
    public void Append(TaskRecord task)
    {
        if (task.State != TaskState.Terminated)
        {
            throw new ArgumentException($"task {task.Id} is {task.State}, not terminated", nameof(task));
        }

        if (_index.ContainsKey(task.Id))
        {
            throw new InvalidOperationException($"task {task.Id} is already in the terminated log");
        }

        var length = EncodedLength(task);
        var chunk = ChunkFor(length);
        var writer = new Writer(_chunks[chunk].AsSpan(_used[chunk], length));
        writer.Int(length);
        writer.Long(task.Id);
        writer.Time(task.UpdatedAt);
        var type = Intern(task.Type);
        writer.Int(type);
        writer.Int(task.WorkerId is null ? NoString : Intern(task.WorkerId));
        var tags = task.Tags;
        writer.Int(tags.Count);
        for (var i = 0; i < tags.Count; i++)
        {
            writer.String(tags[i]);
        }

        writer.Time(task.CreatedAt);
        writer.Int(task.Priority);
        writer.Int(task.PayloadSize);
        writer.Byte((byte)task.Policy);
        writer.Byte(task.NoReply ? (byte)1 : (byte)0);
        writer.Byte((byte)task.PendingControl);
        writer.Byte(task.ExitCode is null ? (byte)0 : (byte)1);
        writer.Int(task.ExitCode ?? 0);
        writer.Int(task.Attempts);
        writer.Int(task.Layers);
        writer.Byte(task.KillRequestedAt is null ? (byte)0 : (byte)1);
        writer.Time(task.KillRequestedAt ?? default);
        writer.Bytes(task.Result);
        writer.String(task.Error);
        writer.String(task.Reason);
        var history = task.History;
        writer.Int(history.Count);
        for (var i = 0; i < history.Count; i++)
        {
            writer.Byte((byte)history[i].State);
            writer.Time(history[i].At);
            writer.String(history[i].Reason);
        }

        if (writer.Left != 0)
        {
            throw new InvalidOperationException($"task {task.Id}: {writer.Left} bytes of its entry left unwritten");
        }

        _index.Add(task.Id, ((_firstChunk + chunk) << 32) | (uint)_used[chunk]);
        _used[chunk] += length;
        _countByType[type]++;
    }

    public bool TryGet(long id, out TaskRecord task)
    {
        if (!_index.TryGetValue(id, out var position))
        {
            task = null!;
            return false;
        }

        task = Decode(Entry(position));
        return true;
    }

    /// <summary>The oldest entry's termination time and id, if any.</summary>
    public bool TryPeekOldest(out DateTimeOffset at, out long id)
    {
        if (_index.Count == 0)
        {
            (at, id) = (default, 0);
            return false;
        }

        var entry = _chunks[_head].AsSpan(_headOffset);
        id = BinaryPrimitives.ReadInt64LittleEndian(entry[IdAt..]);
        at = ReadTime(entry[UpdatedAt..]);
        return true;
    }

    /// <summary>Drops the oldest entry (after <see cref="TryPeekOldest"/>).</summary>
    public void RemoveOldest()
    {
        var entry = _chunks[_head].AsSpan(_headOffset);
        _index.Remove(BinaryPrimitives.ReadInt64LittleEndian(entry[IdAt..]));
        _countByType[BinaryPrimitives.ReadInt32LittleEndian(entry[TypeAt..])]--;
        _headOffset += BinaryPrimitives.ReadInt32LittleEndian(entry[LengthAt..]);
        if (_headOffset < _used[_head])
        {
            return;
        }

        // The head chunk is used up; the tail chunk stays to be written on.
        _headOffset = 0;
        if (_head == _chunks.Count - 1)
        {
            _used[_head] = 0;
            return;
        }

        _chunks[_head] = [];
        _head++;
        if (_head >= 64 && _head * 2 >= _chunks.Count)
        {
            _chunks.RemoveRange(0, _head);
            _used.RemoveRange(0, _head);
            _firstChunk += _head;
            _head = 0;
        }
    }

    /// <summary>Ids of the entries whose type, tag and worker match (a terminated task matches any state filter that is null or terminated).</summary>
    public IEnumerable<long> Matching(TaskFilter filter, IReadOnlyDictionary<string, WorkerRecord> workers)
    {
        if (filter.State is { } state && state != TaskState.Terminated)
        {
            yield break;
        }

        // A type the pool has never seen matches nothing.
        var type = IndexOrMissing(filter.Type);
        var tag = filter.Tag is null ? null : Encoding.UTF8.GetBytes(filter.Tag);
        foreach (var (chunk, offset) in Positions())
        {
            if (Matches(_chunks[chunk].AsSpan(offset), type, tag, filter.Worker, workers))
            {
                yield return BinaryPrimitives.ReadInt64LittleEndian(_chunks[chunk].AsSpan(offset + IdAt));
            }
        }
    }

    /// <summary>Terminated tasks per type, for types with at least one.</summary>
    public IEnumerable<(string Type, int Count)> CountsByType()
    {
        for (var i = 0; i < _countByType.Count; i++)
        {
            if (_countByType[i] > 0)
            {
                yield return (_strings[i], _countByType[i]);
            }
        }
    }

    /// <summary>Every entry, decoded, oldest first.</summary>
    public IEnumerable<TaskRecord> Records() => Positions().Select(p => Decode(_chunks[p.Chunk].AsSpan(p.Offset)));

    public IEnumerable<long> Ids => _index.Keys;

    // Where each entry starts, oldest first. Positions, not spans: an iterator cannot yield a span.
    private IEnumerable<(int Chunk, int Offset)> Positions()
    {
        for (var c = _head; c < _chunks.Count; c++)
        {
            for (var offset = c == _head ? _headOffset : 0; offset < _used[c]; offset += BinaryPrimitives.ReadInt32LittleEndian(_chunks[c].AsSpan(offset + LengthAt)))
            {
                yield return (c, offset);
            }
        }
    }

    private ReadOnlySpan<byte> Entry(long position) =>
        _chunks[(int)((position >> 32) - _firstChunk)].AsSpan((int)(uint)position);

    // Index of the chunk to write an entry of this length into, appending one if the tail lacks room.
    private int ChunkFor(int length)
    {
        var tail = _chunks.Count - 1;
        if (tail >= _head && _used[tail] + length <= _chunks[tail].Length)
        {
            return tail;
        }

        // An empty tail is the head emptied by RemoveOldest: replaced, not followed, or the head would
        // stay on it and the purge would read its old entries again.
        if (tail >= _head && _used[tail] == 0)
        {
            _chunks[tail] = new byte[Math.Max(ChunkSize, length)];
            return tail;
        }

        _chunks.Add(new byte[Math.Max(ChunkSize, length)]);
        _used.Add(0);
        return _chunks.Count - 1;
    }

    private bool Matches(ReadOnlySpan<byte> entry, int? type, byte[]? tag, string? worker, IReadOnlyDictionary<string, WorkerRecord> workers)
    {
        if (type is { } t && BinaryPrimitives.ReadInt32LittleEndian(entry[TypeAt..]) != t)
        {
            return false;
        }

        if (tag is not null)
        {
            var count = BinaryPrimitives.ReadInt32LittleEndian(entry[TagCountAt..]);
            var found = false;
            var at = TagsAt;
            for (var i = 0; i < count && !found; i++)
            {
                var tagLength = BinaryPrimitives.ReadInt32LittleEndian(entry[at..]);
                found = entry.Slice(at + 4, tagLength).SequenceEqual(tag);
                at += 4 + tagLength;
            }

            if (!found)
            {
                return false;
            }
        }

        if (worker is not null)
        {
            var w = BinaryPrimitives.ReadInt32LittleEndian(entry[WorkerAt..]);
            var workerId = w == NoString ? null : _strings[w];
            if (workerId is null || (workerId != worker && workers.GetValueOrDefault(workerId)?.Name != worker))
            {
                return false;
            }
        }

        return true;
    }

    // null: the filter does not constrain this field; -2: it names a string no entry has.
    private int? IndexOrMissing(string? s) => s is null ? null : _stringIndex.GetValueOrDefault(s, -2);

    private int Intern(string s)
    {
        if (!_stringIndex.TryGetValue(s, out var index))
        {
            index = _strings.Count;
            _strings.Add(s);
            _stringIndex[s] = index;
            _countByType.Add(0);
        }

        return index;
    }

    private TaskRecord Decode(ReadOnlySpan<byte> entry)
    {
        var reader = new Reader(entry[IdAt..]);
        var id = reader.Long();
        var updatedAt = reader.Time();
        var type = _strings[reader.Int()];
        var worker = reader.Int();
        var tags = new string[reader.Int()];
        for (var i = 0; i < tags.Length; i++)
        {
            tags[i] = reader.String()!;
        }

        var createdAt = reader.Time();
        var priority = reader.Int();
        var payloadSize = reader.Int();
        var policy = (DeliveryPolicy)reader.Byte();
        var noReply = reader.Byte() != 0;
        var pendingControl = (PendingControl)reader.Byte();
        var hasExitCode = reader.Byte() != 0;
        var exitCode = reader.Int();
        var attempts = reader.Int();
        var layers = reader.Int();
        var hasKill = reader.Byte() != 0;
        var killRequestedAt = reader.Time();
        var result = reader.Bytes();
        var error = reader.String();
        var reason = reader.String();
        var history = new Transition[reader.Int()];
        for (var i = 0; i < history.Length; i++)
        {
            history[i] = new Transition((TaskState)reader.Byte(), reader.Time(), reader.String());
        }

        return new TaskRecord
        {
            Id = id,
            Type = type,
            Priority = priority,
            Tags = tags,
            PayloadSize = payloadSize,
            Policy = policy,
            NoReply = noReply,
            State = TaskState.Terminated,
            ExitCode = hasExitCode ? exitCode : null,
            Result = result,
            Error = error,
            WorkerId = worker == NoString ? null : _strings[worker],
            Attempts = attempts,
            Layers = layers,
            PendingControl = pendingControl,
            KillRequestedAt = hasKill ? killRequestedAt : null,
            Reason = reason,
            CreatedAt = createdAt,
            UpdatedAt = updatedAt,
            History = history,
        };
    }

    private static DateTimeOffset ReadTime(ReadOnlySpan<byte> at) =>
        new(BinaryPrimitives.ReadInt64LittleEndian(at), TimeSpan.FromMinutes(BinaryPrimitives.ReadInt16LittleEndian(at[8..])));

    private const int TimeLength = 10;

    private static int StringLength(string? s) => 4 + (s is null ? 0 : Encoding.UTF8.GetByteCount(s));

    // Everything but the tags, the result, the strings and the history: the header, then created,
    // priority, payload size, four flag bytes, exit code, attempts, layers, kill flag and time, and
    // the result's and the history's lengths.
    private const int FixedLength = TagsAt + TimeLength + (4 * 2) + 4 + (4 * 3) + 1 + TimeLength + 4 + 4;

    private static int EncodedLength(TaskRecord task)
    {
        var length = FixedLength + (task.Result?.Length ?? 0) + StringLength(task.Error) + StringLength(task.Reason);
        var tags = task.Tags;
        for (var i = 0; i < tags.Count; i++)
        {
            length += StringLength(tags[i]);
        }

        var history = task.History;
        for (var i = 0; i < history.Count; i++)
        {
            length += 1 + TimeLength + StringLength(history[i].Reason);
        }

        return length;
    }

    private ref struct Writer(Span<byte> span)
    {
        private Span<byte> _span = span;

        public readonly int Left => _span.Length;

        public void Byte(byte value)
        {
            _span[0] = value;
            _span = _span[1..];
        }

        public void Int(int value)
        {
            BinaryPrimitives.WriteInt32LittleEndian(_span, value);
            _span = _span[4..];
        }

        public void Long(long value)
        {
            BinaryPrimitives.WriteInt64LittleEndian(_span, value);
            _span = _span[8..];
        }

        public void Time(DateTimeOffset at)
        {
            Long(at.Ticks);
            BinaryPrimitives.WriteInt16LittleEndian(_span, (short)at.TotalOffsetMinutes);
            _span = _span[2..];
        }

        public void Bytes(byte[]? bytes)
        {
            Int(bytes?.Length ?? NoString);
            bytes.AsSpan().CopyTo(_span);
            _span = _span[(bytes?.Length ?? 0)..];
        }

        public void String(string? s)
        {
            if (s is null)
            {
                Int(NoString);
                return;
            }

            var written = Encoding.UTF8.GetBytes(s, _span[4..]);
            Int(written);
            _span = _span[written..];
        }
    }

    private ref struct Reader(ReadOnlySpan<byte> span)
    {
        private ReadOnlySpan<byte> _span = span;

        public byte Byte()
        {
            var value = _span[0];
            _span = _span[1..];
            return value;
        }

        public int Int()
        {
            var value = BinaryPrimitives.ReadInt32LittleEndian(_span);
            _span = _span[4..];
            return value;
        }

        public long Long()
        {
            var value = BinaryPrimitives.ReadInt64LittleEndian(_span);
            _span = _span[8..];
            return value;
        }

        public DateTimeOffset Time()
        {
            var at = ReadTime(_span);
            _span = _span[TimeLength..];
            return at;
        }

        public byte[]? Bytes()
        {
            var length = Int();
            if (length == NoString)
            {
                return null;
            }

            var bytes = _span[..length].ToArray();
            _span = _span[length..];
            return bytes;
        }

        public string? String()
        {
            var length = Int();
            if (length == NoString)
            {
                return null;
            }

            var s = Encoding.UTF8.GetString(_span[..length]);
            _span = _span[length..];
            return s;
        }
    }
}
