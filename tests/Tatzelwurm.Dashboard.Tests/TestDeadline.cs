using System.Runtime.CompilerServices;
using Xunit;

namespace Tatzelwurm.Dashboard.Tests;

/// <summary>
/// The cancellation token tests pass to every client call: the test's own token, also cancelled
/// three minutes into the test, so a regression that leaves a reply unanswered fails that test
/// instead of hanging the whole run.
/// </summary>
internal static class TestDeadline
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(3);
    private static readonly ConditionalWeakTable<object, CancellationTokenSource> Sources = [];

    public static CancellationToken Token
    {
        get
        {
            var context = TestContext.Current;
            var source = Sources.GetValue((object?)context.Test ?? context, _ =>
            {
                var linked = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
                linked.CancelAfter(Limit);
                return linked;
            });
            return source.Token;
        }
    }
}
