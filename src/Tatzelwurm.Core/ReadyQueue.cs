namespace Tatzelwurm.Core;

/// <summary>
/// The assigner's index of ready tasks: one <see cref="ReadySet"/> per type, highest priority first
/// and FIFO (by id) within a priority, so that taking the best task costs at most O(log n) and never
/// scans the table.
/// Tasks a tag limit holds back are parked per tag and come back when that tag frees a place.
/// Whether a task is still ready, and its type, are read from the task table rather than kept a
/// second time per task here (a million ready tasks would cost ≈44 MB more).
/// </summary>
internal sealed class ReadyQueue(IReadOnlyDictionary<long, TaskRecord> tasks)
{
    private readonly Dictionary<string, ReadySet> _byType = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<Entry>> _parkedByTag = new(StringComparer.Ordinal);
    private readonly List<Entry> _parkedRejected = [];

    public readonly record struct Entry(int Priority, long Id) : IComparable<Entry>
    {
        public int CompareTo(Entry other)
        {
            var byPriority = other.Priority.CompareTo(Priority);
            return byPriority != 0 ? byPriority : Id.CompareTo(other.Id);
        }
    }

    /// <summary>The ready sets by type, as a struct whose foreach allocates nothing: Assign walks it once per task it assigns.</summary>
    public TypeSets Types => new(_byType);

    public readonly struct TypeSets(Dictionary<string, ReadySet> sets) : IEnumerable<KeyValuePair<string, ReadySet>>
    {
        public Dictionary<string, ReadySet>.Enumerator GetEnumerator() => sets.GetEnumerator();

        IEnumerator<KeyValuePair<string, ReadySet>> IEnumerable<KeyValuePair<string, ReadySet>>.GetEnumerator() => GetEnumerator();

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    public void Add(TaskRecord task)
    {
        if (!_byType.TryGetValue(task.Type, out var set))
        {
            set = new ReadySet();
            _byType[task.Type] = set;
        }

        set.Add(new Entry(task.Priority, task.Id));
    }

    /// <summary>Removes a task that leaves ready from its set; parked entries are dropped lazily.</summary>
    public void Remove(TaskRecord task)
    {
        if (_byType.TryGetValue(task.Type, out var set))
        {
            set.Remove(new Entry(task.Priority, task.Id));
        }
    }

    /// <summary>Takes a task out of its set until <paramref name="tag"/> frees a place.</summary>
    public void ParkForTag(string type, string tag, Entry entry)
    {
        _byType[type].Remove(entry);
        if (!_parkedByTag.TryGetValue(tag, out var list))
        {
            list = [];
            _parkedByTag[tag] = list;
        }

        list.Add(entry);
    }

    /// <summary>Takes a task out of its set until a worker joins or frees a slot (every eligible worker rejected it).</summary>
    public void ParkRejected(string type, Entry entry)
    {
        _byType[type].Remove(entry);
        _parkedRejected.Add(entry);
    }

    public void UnparkTag(string tag)
    {
        if (_parkedByTag.Remove(tag, out var list))
        {
            foreach (var entry in list)
            {
                Restore(entry);
            }
        }
    }

    public void UnparkRejected()
    {
        foreach (var entry in _parkedRejected)
        {
            Restore(entry);
        }

        _parkedRejected.Clear();
    }

    private void Restore(Entry entry)
    {
        // Entries of tasks that left ready while parked (killed, paused) are skipped here; one that
        // left and came back is in its set already, and adding it again changes nothing.
        if (tasks.TryGetValue(entry.Id, out var task) && task.State == TaskState.Ready)
        {
            _byType[task.Type].Add(entry);
        }
    }
}
