using Tatzelwurm.Client;
using Xunit;

namespace Tatzelwurm.Server.Tests.Harness;

/// <summary>
/// Reads an <see cref="IAsyncEnumerable{T}"/> of the C# client (a subscription or a task watch) one item
/// at a time. <see cref="StartAsync"/> returns once the coordinator has registered it: the client writes
/// the Subscribe/WatchTasks frame when enumeration starts, and a read sent after it on the same
/// connection is answered only after it was applied.
/// </summary>
internal sealed class Feed<T> : IAsyncDisposable
{
    private readonly CancellationTokenSource _cancel = new();
    private IAsyncEnumerator<T> _items = null!;
    private Task<bool>? _pending;

    private Feed()
    {
    }

    public static async Task<Feed<T>> StartAsync(TatzelwurmClient client, Func<CancellationToken, IAsyncEnumerable<T>> open)
    {
        var feed = new Feed<T>();
        feed._items = open(feed._cancel.Token).GetAsyncEnumerator(feed._cancel.Token);
        feed._pending = feed._items.MoveNextAsync().AsTask();
        await client.TagLimitsAsync(TestContext.Current.CancellationToken);
        return feed;
    }

    public async Task<T> NextAsync()
    {
        var pending = _pending ?? _items.MoveNextAsync().AsTask();
        _pending = null;
        if (!await pending.WaitAsync(PipeClient.Patience))
        {
            throw new Xunit.Sdk.XunitException("the stream ended");
        }

        return _items.Current;
    }

    /// <summary>Skips items until one matches.</summary>
    public async Task<T> NextAsync(Func<T, bool> match)
    {
        while (true)
        {
            var item = await NextAsync();
            if (match(item))
            {
                return item;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _cancel.CancelAsync();
        if (_pending is not null)
        {
            try
            {
                await _pending;
            }
            catch (Exception ex) when (ex is OperationCanceledException or ConnectionLostException)
            {
            }
        }

        try
        {
            await _items.DisposeAsync();
        }
        catch (Exception ex) when (ex is OperationCanceledException or ConnectionLostException)
        {
        }

        _cancel.Dispose();
    }
}
