using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>
/// The filter rules of docs/protocol.md (kiwipy's BroadcastFilter): matched at the start of the value;
/// glob '*' matches any run and every other character is literal; regex is .NET syntax; a missing
/// value passes every filter.
/// </summary>
public class BroadcastFilterTests
{
    [Theory]
    // '*' wildcard
    [InlineData("state_*", "state_changed", true)]
    [InlineData("state_*", "state_", true)]
    [InlineData("state_*", "xstate_changed", false)]
    [InlineData("*", "", true)]
    [InlineData("*", "anything at all", true)]
    [InlineData("*.done", "task.42.done", true)]
    [InlineData("*.done", "task.42.failed", false)]
    [InlineData("a*b*c", "a--b--c", true)]
    [InlineData("a*b*c", "a--c--b", false)]
    // '.' and every other character are literal
    [InlineData("a.b", "a.b", true)]
    [InlineData("a.b", "axb", false)]
    [InlineData("a+b", "a+b", true)]
    [InlineData("a+b", "aab", false)]
    [InlineData("(x)?", "(x)?", true)]
    [InlineData("(x)?", "", false)]
    [InlineData("[ab]", "a", false)]
    [InlineData("$", "$", true)]
    // matched at the start: a prefix matches, an infix does not
    [InlineData("foo", "foobar", true)]
    [InlineData("foo", "barfoo", false)]
    [InlineData("foo", "fo", false)]
    [InlineData("", "whatever", true)]
    // case-sensitive
    [InlineData("Foo", "foo", false)]
    public void Glob_Value_MatchesAsKiwipyDoes(string pattern, string value, bool passes) =>
        Assert.Equal(passes, Messaging.Passes(Messaging.Compile(new BroadcastFilter(FilterKind.Glob, pattern)), value));

    [Theory]
    [InlineData("^(?!state_changed).*", "state_changed", false)]
    [InlineData("^(?!state_changed).*", "state_changed.42", false)]
    [InlineData("^(?!state_changed).*", "broadcast", true)]
    [InlineData("^(?!state_changed).*", "", true)]
    [InlineData("task\\.\\d+", "task.42.done", true)]
    [InlineData("task\\.\\d+", "task.x", false)]
    [InlineData("done", "task.done", false)]
    [InlineData(".*done", "task.done", true)]
    [InlineData("a|b", "b", true)]
    [InlineData("a|b", "cb", false)]
    public void Regex_Value_MatchedAtTheStart(string pattern, string value, bool passes) =>
        Assert.Equal(passes, Messaging.Passes(Messaging.Compile(new BroadcastFilter(FilterKind.Regex, pattern)), value));

    [Theory]
    [InlineData(FilterKind.Glob, "x*")]
    [InlineData(FilterKind.Regex, "^(?!state_changed).*")]
    [InlineData(FilterKind.Regex, "nothing-matches-this-$^")]
    public void Filter_MissingValue_PassesEveryFilter(FilterKind kind, string pattern) =>
        Assert.True(Messaging.Passes(Messaging.Compile(new BroadcastFilter(kind, pattern)), null));

    [Fact]
    public void Filter_None_PassesEverything()
    {
        Assert.Null(Messaging.Compile(null));
        Assert.True(Messaging.Passes(null, "x"));
        Assert.True(Messaging.Passes(null, null));
    }

    [Fact]
    public void Regex_CatastrophicBacktracking_CountsAsNoMatchWithinTheTimeout()
    {
        var filter = Messaging.Compile(new BroadcastFilter(FilterKind.Regex, "(a+)+$"));

        Assert.False(Messaging.Passes(filter, new string('a', 5000) + "!"));
    }
}
