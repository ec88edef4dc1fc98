using System.Collections;

namespace Tatzelwurm.Core;

/// <summary>
/// The ready tasks of one type in <see cref="ReadyQueue.Entry"/> order (higher priority first, then
/// lower id), kept without a heap object per task: one bucket per priority, each an ascending array
/// of ids (8 bytes a task, nothing for the GC to trace, where a <see cref="SortedSet{T}"/> node costs
/// ≈56 bytes and a pointer chase per level). Adding and removing follow SortedSet semantics: adding
/// an entry already present or removing an absent one changes nothing.
/// </summary>
internal sealed class ReadySet : IReadOnlyCollection<ReadyQueue.Entry>
{
    // Highest priority first. A bucket is dropped as soon as it empties, so the first one holds Min
    // and a priority used once costs nothing after its tasks are gone.
    private readonly List<Bucket> _buckets = [];

    public int Count { get; private set; }

    /// <summary>Slots stepped over to find each bucket's first live id (buckets still held); for tests.</summary>
    internal long SkippedTombstones => _buckets.Sum(b => b.SkippedTombstones);

    public ReadyQueue.Entry Min => Count == 0
        ? throw new InvalidOperationException("The ready set is empty.")
        : new ReadyQueue.Entry(_buckets[0].Priority, _buckets[0].Min);

    /// <summary>Adds an entry; false if it was there already.</summary>
    public bool Add(ReadyQueue.Entry entry)
    {
        // A removed id is kept as its complement, which needs ids >= 0 (task ids start at 1).
        ArgumentOutOfRangeException.ThrowIfNegative(entry.Id);
        var index = Find(entry.Priority);
        if (index < 0)
        {
            index = ~index;
            _buckets.Insert(index, new Bucket(entry.Priority));
        }

        if (!_buckets[index].Add(entry.Id))
        {
            return false;
        }

        Count++;
        return true;
    }

    /// <summary>Removes an entry; false if it was not there.</summary>
    public bool Remove(ReadyQueue.Entry entry)
    {
        var index = Find(entry.Priority);
        if (index < 0 || !_buckets[index].Remove(entry.Id))
        {
            return false;
        }

        Count--;
        if (_buckets[index].Count == 0)
        {
            _buckets.RemoveAt(index);
        }

        return true;
    }

    public IEnumerator<ReadyQueue.Entry> GetEnumerator() =>
        _buckets.SelectMany(b => b.Ids().Select(id => new ReadyQueue.Entry(b.Priority, id))).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    // The bucket's index, else the complement of where it belongs (priorities descending).
    private int Find(int priority)
    {
        var lo = 0;
        var hi = _buckets.Count - 1;
        while (lo <= hi)
        {
            var mid = lo + ((hi - lo) >> 1);
            var p = _buckets[mid].Priority;
            if (p == priority)
            {
                return mid;
            }

            if (p > priority)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return ~lo;
    }

    /// <summary>
    /// The ids of one priority, ascending. New tasks get increasing ids and recovery loads them in id
    /// order, so nearly every add is an append and nearly every remove takes the first live slot. A
    /// removed id stays in its slot as a tombstone (its complement, so the array stays sorted by id
    /// and a binary search still works); tombstones before the first live slot are skipped at once,
    /// and the array is compacted when they outnumber the live ids, which bounds it to twice them.
    /// </summary>
    private sealed class Bucket(int priority)
    {
        private const int InitialCapacity = 4;

        // Re-added ids this far below the top stay in the side set; above it they are merged in.
        private const int SideLimit = 64;

        private long[] _ids = new long[InitialCapacity];

        // The first live slot (every slot before it is a tombstone), or _tail when there is none.
        private int _head;

        // Slots in use: live ids and tombstones.
        private int _tail;

        private int _dead;

        // An id lower than the last slot's that finds neither its own tombstone nor a free one just
        // below its place, at or above the head: a task made ready again (requeued after its worker
        // was lost, played after pause, unparked) once compaction dropped its tombstone, or one whose
        // tombstone lies further below the head (it stays there and Remove looks here too). An
        // in-place insert would shift up to the whole array for each of them, and a flood of them (a
        // tag limit unparking thousands) would cost O(n) apiece; here each costs O(log k), and they
        // are merged into the array in one O(n) pass once there are more than SideLimit and an eighth
        // of the array's live ids.
        private SortedSet<long>? _side;

        public int Priority { get; } = priority;

        /// <summary>Slots the head has stepped over; tests check that it stays linear in the removals.</summary>
        public long SkippedTombstones { get; private set; }

        public int Count => _tail - _dead + (_side?.Count ?? 0);

        public long Min
        {
            get
            {
                var first = _head < _tail ? _ids[_head] : long.MaxValue;
                return _side is { Count: > 0 } side && side.Min < first ? side.Min : first;
            }
        }

        public bool Add(long id)
        {
            // Every id in the side set is below the last slot's (it went there for lack of a slot,
            // and compaction empties it), so an id above is new and goes at the end.
            if (_tail == 0 || id > Decode(_ids[_tail - 1]))
            {
                Append(id);
                return true;
            }

            var slot = Search(id);
            if (slot >= 0 && _ids[slot] >= 0)
            {
                return false;
            }

            if (_side is { Count: > 0 } side && side.Contains(id))
            {
                return false;
            }

            // Its own tombstone, else a lower id's just below its place: taking it keeps the order.
            // Not one more than a slot below the head, though: the next Remove at the head would
            // walk back over every tombstone in between, and a task parked and unparked over and
            // over (every worker rejected it; a tag at its limit) would pay that each time.
            var free = slot >= 0 ? slot : ~slot - 1;
            if (free >= 0 && free >= _head - 1 && _ids[free] < 0)
            {
                Revive(free, id);
                return true;
            }

            _side ??= [];
            _side.Add(id);
            if (_side.Count > Math.Max(SideLimit, (_tail - _dead) / 8))
            {
                Compact(0);
            }

            return true;
        }

        public bool Remove(long id)
        {
            // The assigner removes the first live id: no search for it.
            var slot = _head < _tail && _ids[_head] == id ? _head : Search(id);
            if (slot < 0 || _ids[slot] < 0)
            {
                return _side is not null && _side.Remove(id);
            }

            _ids[slot] = ~id;
            _dead++;
            if (slot == _head)
            {
                do
                {
                    _head++;
                    SkippedTombstones++;
                }
                while (_head < _tail && _ids[_head] < 0);
            }

            if (_dead > _tail - _dead)
            {
                Compact(0);
            }

            return true;
        }

        public IEnumerable<long> Ids() =>
            _ids.Take(_tail).Where(id => id >= 0).Concat(_side ?? []).Order();

        private static long Decode(long slot) => slot < 0 ? ~slot : slot;

        private void Append(long id)
        {
            if (_tail == _ids.Length)
            {
                // A queue worked from the front and filled at the end (the steady state) reuses the
                // space of what it handed out instead of growing.
                if (_dead >= _tail / 4)
                {
                    Compact(1);
                }
                else
                {
                    Array.Resize(ref _ids, _ids.Length * 2);
                }
            }

            // With no live slot _head == _tail, which is where this id goes.
            _ids[_tail++] = id;
        }

        private void Revive(int slot, long id)
        {
            _ids[slot] = id;
            _dead--;
            _head = Math.Min(_head, slot);
        }

        // The slot of id (live or tombstone), else the complement of the first slot above it.
        private int Search(long id)
        {
            var lo = 0;
            var hi = _tail - 1;
            while (lo <= hi)
            {
                var mid = lo + ((hi - lo) >> 1);
                var at = Decode(_ids[mid]);
                if (at == id)
                {
                    return mid;
                }

                if (at < id)
                {
                    lo = mid + 1;
                }
                else
                {
                    hi = mid - 1;
                }
            }

            return ~lo;
        }

        // Drops the tombstones and merges the side set in, leaving room for `extra` appends; the
        // array shrinks when it would be more than four times what it holds.
        private void Compact(int extra)
        {
            var live = _tail - _dead;
            var sideCount = _side?.Count ?? 0;
            var count = live + sideCount;
            var needed = count + extra;
            var target = _ids;
            if (needed > _ids.Length || (_ids.Length > InitialCapacity && _ids.Length > 4 * needed))
            {
                target = new long[Math.Max(InitialCapacity, 2 * needed)];
            }

            // Moving down, so in place is safe.
            var written = 0;
            for (var read = _head; read < _tail; read++)
            {
                if (_ids[read] >= 0)
                {
                    target[written++] = _ids[read];
                }
            }

            if (sideCount > 0)
            {
                var side = new long[sideCount];
                _side!.CopyTo(side);
                _side.Clear();

                // Merge from the top down: the write position never passes the live id it reads next.
                var a = written - 1;
                var b = sideCount - 1;
                for (var write = count - 1; b >= 0; write--)
                {
                    target[write] = a >= 0 && target[a] > side[b] ? target[a--] : side[b--];
                }
            }

            _ids = target;
            _head = 0;
            _tail = count;
            _dead = 0;
        }
    }
}
