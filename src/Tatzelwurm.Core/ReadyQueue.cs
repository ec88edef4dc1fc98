namespace Tatzelwurm.Core;

/// <summary>
/// The assigner's index of ready tasks: one ordered set per type, highest priority first and FIFO
/// (by id) within a priority, so that taking the best task costs O(log n) and never scans the table.
/// Tasks a tag limit holds back are parked per tag and come back when that tag frees a place.
/// </summary>
internal sealed class ReadyQueue
{
    private readonly Dictionary<string, SortedSet<Entry>> _byType = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<Entry>> _parkedByTag = new(StringComparer.Ordinal);
    private readonly List<(Entry Entry, string Type)> _parkedRejected = [];
    private readonly Dictionary<long, string> _where = [];

    public readonly record struct Entry(int Priority, long Id) : IComparable<Entry>
    {
        public int CompareTo(Entry other)
        {
            var byPriority = other.Priority.CompareTo(Priority);
            return byPriority != 0 ? byPriority : Id.CompareTo(other.Id);
        }
    }

    public int Count => _where.Count;

    public IEnumerable<KeyValuePair<string, SortedSet<Entry>>> Types => _byType;

    public void Add(TaskRecord task)
    {
        if (!_byType.TryGetValue(task.Type, out var set))
        {
            set = [];
            _byType[task.Type] = set;
        }

        set.Add(new Entry(task.Priority, task.Id));
        _where[task.Id] = task.Type;
    }

    /// <summary>Removes a task wherever it is (ready set or parked); parked entries are dropped lazily.</summary>
    public void Remove(TaskRecord task)
    {
        if (_where.Remove(task.Id) && _byType.TryGetValue(task.Type, out var set))
        {
            set.Remove(new Entry(task.Priority, task.Id));
        }
    }

    public bool Contains(long id) => _where.ContainsKey(id);

    public void Take(string type, Entry entry) => _byType[type].Remove(entry);

    /// <summary>The task left ready (it was assigned).</summary>
    public void Forget(long id) => _where.Remove(id);

    /// <summary>Holds a taken task back until <paramref name="tag"/> frees a place.</summary>
    public void ParkForTag(string tag, Entry entry)
    {
        if (!_parkedByTag.TryGetValue(tag, out var list))
        {
            list = [];
            _parkedByTag[tag] = list;
        }

        list.Add(entry);
    }

    /// <summary>Holds a taken task back until a worker joins or frees a slot (every eligible worker rejected it).</summary>
    public void ParkRejected(string type, Entry entry) => _parkedRejected.Add((entry, type));

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
        foreach (var (entry, _) in _parkedRejected)
        {
            Restore(entry);
        }

        _parkedRejected.Clear();
    }

    private void Restore(Entry entry)
    {
        // Entries of tasks removed while parked (killed, paused) are skipped here.
        if (_where.TryGetValue(entry.Id, out var type))
        {
            _byType[type].Add(entry);
        }
    }
}
