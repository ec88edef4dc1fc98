using System.Text;

namespace Tatzelwurm.Storage;

/// <summary>
/// Interns the strings recovery reads: a million tasks share a few types, tags, worker ids and
/// reasons, so one instance of each keeps the recovered heap small. Lives only during a load.
/// </summary>
internal sealed class StringPool
{
    private readonly HashSet<string> _set = new(StringComparer.Ordinal);
    private readonly HashSet<string>.AlternateLookup<ReadOnlySpan<char>> _lookup;

    public StringPool()
    {
        _lookup = _set.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    public string Intern(ReadOnlySpan<byte> utf8)
    {
        if (utf8.IsEmpty)
        {
            return string.Empty;
        }

        if (utf8.Length > 512)
        {
            return Encoding.UTF8.GetString(utf8);
        }

        Span<char> chars = stackalloc char[utf8.Length];
        var n = Encoding.UTF8.GetChars(utf8, chars);
        return Intern(chars[..n]);
    }

    public string Intern(string s) => _lookup.TryGetValue(s.AsSpan(), out var found) ? found : Add(s);

    private string Intern(ReadOnlySpan<char> chars)
    {
        if (_lookup.TryGetValue(chars, out var found))
        {
            return found;
        }

        return Add(new string(chars));
    }

    private string Add(string s)
    {
        _set.Add(s);
        return s;
    }
}
