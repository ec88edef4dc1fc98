using Entry = Tatzelwurm.Core.ReadyQueue.Entry;

namespace Tatzelwurm.Core.Tests;

/// <summary>The per-type ready index: contiguous buckets with tombstones, checked against a SortedSet.</summary>
public class ReadySetTests
{
    private static ReadySet Set(int priority, params long[] ids)
    {
        var set = new ReadySet();
        foreach (var id in ids)
        {
            Assert.True(set.Add(new Entry(priority, id)));
        }

        return set;
    }

    private static long[] Range(long from, long to)
    {
        var ids = new long[to - from + 1];
        for (var i = 0; i < ids.Length; i++)
        {
            ids[i] = from + i;
        }

        return ids;
    }

    private static void AssertContents(ReadySet set, params Entry[] expected)
    {
        Assert.Equal(expected, set);
        Assert.Equal(expected.Length, set.Count);
        if (expected.Length > 0)
        {
            Assert.Equal(expected[0], set.Min);
        }
    }

    private static Entry[] Entries(int priority, params long[] ids) => ids.Select(id => new Entry(priority, id)).ToArray();

    [Fact]
    public void Add_RemovedIdAgain_BackInItsPlace()
    {
        var set = Set(0, 1, 2, 3, 4, 5);
        set.Remove(new Entry(0, 1));
        set.Remove(new Entry(0, 3));

        Assert.True(set.Add(new Entry(0, 3)));
        Assert.True(set.Add(new Entry(0, 1)));

        AssertContents(set, Entries(0, 1, 2, 3, 4, 5));
    }

    [Fact]
    public void Add_LowerIdNeverThere_LandsInOrder()
    {
        var set = Set(0, 2, 4, 6, 8);

        Assert.True(set.Add(new Entry(0, 5)));
        Assert.True(set.Add(new Entry(0, 1)));
        AssertContents(set, Entries(0, 1, 2, 4, 5, 6, 8));

        set.Remove(new Entry(0, 1));
        set.Remove(new Entry(0, 2));
        set.Remove(new Entry(0, 4));
        AssertContents(set, Entries(0, 5, 6, 8));
    }

    [Fact]
    public void Add_BelowTheFirstAfterCompaction_BecomesMin()
    {
        // Removing 10..16 of 10..20 leaves more tombstones than live ids: the bucket is compacted,
        // so 5 finds no tombstone to take.
        var set = Set(0, Range(10, 20));
        foreach (var id in Range(10, 16))
        {
            set.Remove(new Entry(0, id));
        }

        Assert.True(set.Add(new Entry(0, 5)));
        Assert.True(set.Add(new Entry(0, 12)));

        AssertContents(set, Entries(0, 5, 12, 17, 18, 19, 20));
    }

    [Fact]
    public void Remove_InTheMiddle_KeepsTheRest()
    {
        var set = Set(0, Range(1, 9));

        Assert.True(set.Remove(new Entry(0, 5)));

        AssertContents(set, Entries(0, 1, 2, 3, 4, 6, 7, 8, 9));
    }

    [Fact]
    public void SeveralPriorities_HighestFirstThenLowestId()
    {
        var set = new ReadySet();
        foreach (var entry in new[] { new Entry(0, 1), new Entry(5, 2), new Entry(-3, 3), new Entry(5, 4), new Entry(0, 5), new Entry(-3, 6) })
        {
            set.Add(entry);
        }

        AssertContents(set, new Entry(5, 2), new Entry(5, 4), new Entry(0, 1), new Entry(0, 5), new Entry(-3, 3), new Entry(-3, 6));

        set.Remove(new Entry(5, 2));
        set.Remove(new Entry(5, 4));
        AssertContents(set, new Entry(0, 1), new Entry(0, 5), new Entry(-3, 3), new Entry(-3, 6));

        // A priority that emptied can come back, above the others.
        set.Add(new Entry(5, 7));
        Assert.Equal(new Entry(5, 7), set.Min);
    }

    [Fact]
    public void Add_EntryAlreadyThere_ChangesNothing()
    {
        var set = Set(0, 2, 4, 6);
        set.Add(new Entry(0, 3)); // below the last id with no free slot: kept aside
        set.Remove(new Entry(0, 2)); // now a tombstone sits just below the place of 3

        Assert.False(set.Add(new Entry(0, 4)));
        Assert.False(set.Add(new Entry(0, 6)));
        Assert.False(set.Add(new Entry(0, 3)));

        AssertContents(set, Entries(0, 3, 4, 6));
    }

    [Fact]
    public void Remove_AbsentEntry_ChangesNothing()
    {
        var set = Set(0, 2, 4, 6);
        set.Remove(new Entry(0, 4));

        Assert.False(set.Remove(new Entry(0, 4))); // already removed: a tombstone
        Assert.False(set.Remove(new Entry(0, 5))); // never there, inside the range
        Assert.False(set.Remove(new Entry(0, 9))); // above the last
        Assert.False(set.Remove(new Entry(1, 2))); // right id, other priority

        AssertContents(set, Entries(0, 2, 6));
    }

    [Fact]
    public void Compaction_KeepsOrder()
    {
        // Every third id removed from the front half, then the front drained past the tombstones,
        // with ids re-added below the first live one and a flood of them merged from the side set.
        var set = Set(0, Range(1, 1000));
        var expected = new SortedSet<long>(Range(1, 1000));
        foreach (var id in Range(1, 500).Where(id => id % 3 == 0).Concat(Range(1, 700)))
        {
            Assert.Equal(expected.Remove(id), set.Remove(new Entry(0, id)));
        }

        foreach (var id in Range(100, 400).Where(id => id % 2 == 0).Concat(Range(1001, 1100)))
        {
            Assert.Equal(expected.Add(id), set.Add(new Entry(0, id)));
        }

        foreach (var id in Range(650, 900))
        {
            Assert.Equal(expected.Remove(id), set.Remove(new Entry(0, id)));
        }

        AssertContents(set, Entries(0, [.. expected]));
    }

    [Fact]
    public void ParkAndUnpark_AnOldTaskOverManyAssigned_DoesNotRescanThem()
    {
        // Task 1 is rejected by every worker with a free slot (parked), tasks 2..90,000 are assigned
        // meanwhile; each freed slot unparks task 1, which is Min again and parked again.
        var set = Set(0, Range(1, 200_000));
        Assert.True(set.Remove(new Entry(0, 1)));
        for (long id = 2; id <= 90_000; id++)
        {
            Assert.True(set.Remove(new Entry(0, id)));
        }

        var before = set.SkippedTombstones;
        for (var cycle = 0; cycle < 1_000; cycle++)
        {
            Assert.True(set.Add(new Entry(0, 1)));
            Assert.Equal(new Entry(0, 1), set.Min);
            Assert.True(set.Remove(new Entry(0, 1)));
        }

        // Reviving task 1's tombstone at the front would make each removal step over the 89,999
        // tombstones behind it again.
        Assert.True(set.SkippedTombstones - before <= 1_000, $"{set.SkippedTombstones - before} slots stepped over");
        Assert.Equal(new Entry(0, 90_001), set.Min);
        Assert.Equal(110_000, set.Count);
    }

    [Fact]
    public void Min_Empty_Throws()
    {
        var set = Set(0, 1);
        set.Remove(new Entry(0, 1));

        Assert.Throws<InvalidOperationException>(() => set.Min);
        Assert.Empty(set);
    }

    [Fact]
    public void Add_NegativeId_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReadySet().Add(new Entry(0, -1)));
    }

    /// <summary>
    /// Thousands of operations shaped like the coordinator's: new tasks with increasing ids, the best
    /// one taken, others leaving from the middle, old ids made ready again, duplicate adds and removes
    /// of absent entries, in phases that fill, drain and churn. After every step the set and a
    /// <see cref="SortedSet{T}"/> agree on the result, Count and Min; every 500 steps on the contents.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Differential_RandomOperations_MatchSortedSet(int seed)
    {
        var random = new Random(seed);
        int[] priorities = [0, 0, 0, 1, 5, -2];
        var set = new ReadySet();
        var reference = new SortedSet<Entry>();
        var left = new List<Entry>();
        long nextId = 1;
        for (var step = 0; step < 30_000; step++)
        {
            // fill: mostly adds; drain: mostly takes; churn: balanced, with many re-adds.
            var phase = step / 2_000 % 3;
            var (add, readd, takeMin) = phase switch
            {
                0 => (60, 10, 20),
                1 => (15, 5, 65),
                _ => (30, 25, 30),
            };
            var roll = random.Next(100);
            bool expected, actual;
            if (roll < add)
            {
                var entry = new Entry(priorities[random.Next(priorities.Length)], nextId++);
                (expected, actual) = (reference.Add(entry), set.Add(entry));
            }
            else if (roll < add + readd && left.Count > 0)
            {
                var index = random.Next(left.Count);
                var entry = left[index];
                left[index] = left[^1];
                left.RemoveAt(left.Count - 1);
                (expected, actual) = (reference.Add(entry), set.Add(entry));
            }
            else if (roll < add + readd + takeMin && reference.Count > 0)
            {
                var entry = reference.Min;
                left.Add(entry);
                (expected, actual) = (reference.Remove(entry), set.Remove(entry));
            }
            else if (roll < 95 && reference.Count > 0)
            {
                // Anything, present or not: a random id up to the newest, at a random priority.
                var entry = new Entry(priorities[random.Next(priorities.Length)], random.NextInt64(1, nextId));
                if (reference.Contains(entry))
                {
                    left.Add(entry);
                }

                (expected, actual) = (reference.Remove(entry), set.Remove(entry));
            }
            else
            {
                // A duplicate add of something present (or of a new id when empty).
                var entry = reference.Count > 0 ? reference.ElementAt(random.Next(Math.Min(reference.Count, 50))) : new Entry(0, nextId++);
                (expected, actual) = (reference.Add(entry), set.Add(entry));
            }

            Assert.Equal(expected, actual);
            Assert.Equal(reference.Count, set.Count);
            if (reference.Count > 0)
            {
                Assert.Equal(reference.Min, set.Min);
            }

            if (step % 500 == 0)
            {
                Assert.Equal(reference, set);
            }
        }

        Assert.Equal(reference, set);
    }

    /// <summary>
    /// A small id space with heavy churn, so that ids come back over their own and their neighbours'
    /// tombstones, into the side set and across compactions all the time: 10 seeds each, compared
    /// with a <see cref="SortedSet{T}"/> after every step (the whole contents every 7th step).
    /// </summary>
    [Theory]
    [InlineData(0, 40, 8)]
    [InlineData(1, 300, 3)]
    [InlineData(2, 3000, 2)]
    [InlineData(3, 200, 1)]
    public void Differential_Dense_MatchSortedSet(int seedBase, int idSpace, int priorities)
    {
        for (var seed = seedBase * 1000; seed < seedBase * 1000 + 10; seed++)
        {
            var random = new Random(seed);
            var set = new ReadySet();
            var reference = new SortedSet<Entry>();
            long high = 1;
            for (var step = 0; step < 4_000; step++)
            {
                var roll = random.Next(100);
                var prio = random.Next(priorities) - 1;
                bool expected, actual;
                if (roll < 25)
                {
                    high = Math.Min(idSpace, high + 1);
                    var e = new Entry(prio, high);
                    (expected, actual) = (reference.Add(e), set.Add(e));
                }
                else if (roll < 55)
                {
                    var e = new Entry(prio, random.NextInt64(0, high + 1));
                    (expected, actual) = (reference.Add(e), set.Add(e));
                }
                else if (roll < 75 && reference.Count > 0)
                {
                    var e = reference.Min;
                    (expected, actual) = (reference.Remove(e), set.Remove(e));
                }
                else
                {
                    var e = new Entry(prio, random.NextInt64(0, high + 2));
                    (expected, actual) = (reference.Remove(e), set.Remove(e));
                }

                Assert.True(expected == actual, $"seed {seed} step {step}");
                Assert.Equal(reference.Count, set.Count);
                if (reference.Count > 0)
                {
                    Assert.Equal(reference.Min, set.Min);
                }

                if (step % 7 == 0 || idSpace <= 40)
                {
                    Assert.Equal(reference, set);
                }
            }
        }
    }
}
