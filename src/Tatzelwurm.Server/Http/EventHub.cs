using System.Threading.Channels;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server.Http;

/// <summary>
/// Fans the coordinator's task events out to the dashboard's server-sent-event clients. While at
/// least one client listens, the hub holds one in-process watcher connection (WatchTasks on a
/// <see cref="LocalConnection"/>), so events arrive exactly as a protocol watcher gets them: after
/// the batch that caused them is durable. With no client it holds nothing and costs the loop nothing.
/// </summary>
/// <remarks>
/// A client that cannot keep up is not allowed to grow memory: its queue is bounded, and once it
/// overflows the client is sent <c>resync</c> (reload your view) instead of the events it missed. The
/// same happens to every client if the watcher connection is lost (e.g. the coordinator closed it as
/// overloaded after a burst of events); the hub then opens a new one.
/// </remarks>
internal sealed class EventHub(Func<Action<IMessage>, CancellationToken, Task<LocalConnection>> connect, int subscriberCapacity = EventHub.DefaultCapacity)
    : IAsyncDisposable
{
    /// <summary>Events queued for one client before it is told to resync instead.</summary>
    public const int DefaultCapacity = 10_000;

    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _closing = [];
    private Subscriber[] _subscribers = [];
    private Task<LocalConnection>? _watcher;
    private bool _disposed;

    public int Subscribers => Volatile.Read(ref _subscribers).Length;

    public bool WatcherOpen
    {
        get
        {
            lock (_lock)
            {
                return _watcher is not null || _closing.Any(t => !t.IsCompleted);
            }
        }
    }

    /// <summary>Registers a client; returns once every event committed from now on will reach it.</summary>
    public async Task<Subscriber> SubscribeAsync(CancellationToken cancellationToken)
    {
        var subscriber = new Subscriber(subscriberCapacity);
        Task<LocalConnection> watcher;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _subscribers = [.. _subscribers, subscriber];
            if (_watcher is null || _watcher.IsFaulted || _watcher.IsCanceled)
            {
                _watcher = OpenWatcherAsync();
            }

            watcher = _watcher;
        }

        try
        {
            await watcher.WaitAsync(cancellationToken);
        }
        catch
        {
            Unsubscribe(subscriber);
            throw;
        }

        return subscriber;
    }

    public void Unsubscribe(Subscriber subscriber)
    {
        lock (_lock)
        {
            _subscribers = _subscribers.Where(s => s != subscriber).ToArray();
            subscriber.Complete();
            if (_subscribers.Length == 0 && _watcher is { } watcher)
            {
                _watcher = null;
                _closing.RemoveAll(t => t.IsCompleted);
                _closing.Add(CloseAsync(watcher));
            }
        }
    }

    private async Task<LocalConnection> OpenWatcherAsync()
    {
        var connection = await connect(Publish, _stopping.Token);
        try
        {
            var reply = await connection.RequestAsync(id => new WatchTasks(id, null, null), _stopping.Token);
            if (reply is not OkReply)
            {
                throw new ConnectionClosedException(reply as ErrorReply);
            }
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }

        _ = ReopenWhenLostAsync(connection);
        return connection;
    }

    // Our own close (no subscriber left, or shutdown) clears _watcher first, so a connection that
    // closes while it is still the current one was lost: tell everyone to resync, and reconnect.
    private async Task ReopenWhenLostAsync(LocalConnection connection)
    {
        await connection.Closed;
        lock (_lock)
        {
            if (_disposed || _watcher is not { IsCompletedSuccessfully: true } current || current.Result != connection)
            {
                return;
            }

            foreach (var subscriber in _subscribers)
            {
                subscriber.Resync();
            }

            _watcher = _subscribers.Length > 0 ? OpenWatcherAsync() : null;
            _closing.Add(connection.DisposeAsync().AsTask());
        }
    }

    private static async Task CloseAsync(Task<LocalConnection> watcher)
    {
        try
        {
            await (await watcher).DisposeAsync();
        }
        catch (Exception ex) when (ex is ConnectionClosedException or OperationCanceledException)
        {
        }
    }

    // Called on the watcher connection's read loop: never blocks.
    private void Publish(IMessage message)
    {
        if (message is not TaskEvent change)
        {
            return;
        }

        var dto = change.ToDto();
        foreach (var subscriber in Volatile.Read(ref _subscribers))
        {
            subscriber.Offer(dto);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Task[] closing;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var subscriber in _subscribers)
            {
                subscriber.Complete();
            }

            _subscribers = [];
            if (_watcher is { } watcher)
            {
                _closing.Add(CloseAsync(watcher));
                _watcher = null;
            }

            closing = [.. _closing];
        }

        await _stopping.CancelAsync();
        try
        {
            await Task.WhenAll(closing);
        }
        catch (Exception ex) when (ex is ConnectionClosedException or OperationCanceledException)
        {
        }

        _stopping.Dispose();
    }

    /// <summary>One SSE client's queue: events, or a note that it must reload because it missed some.</summary>
    internal sealed class Subscriber(int capacity)
    {
        private readonly Channel<TaskEventDto> _events = Channel.CreateBounded<TaskEventDto>(
            new BoundedChannelOptions(capacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });

        private int _resync;
        private long _offered;

        public ChannelReader<TaskEventDto> Events => _events.Reader;

        /// <summary>Events handed to this client so far, queued or not.</summary>
        public long Offered => Interlocked.Read(ref _offered);

        public void Offer(TaskEventDto change)
        {
            Interlocked.Increment(ref _offered);
            if (!_events.Writer.TryWrite(change))
            {
                Resync();
            }
        }

        public void Resync()
        {
            Interlocked.Exchange(ref _resync, 1);

            // Wake the reader even when the queue is empty; the marker is never shown as an event.
            _events.Writer.TryWrite(ResyncMarker);
        }

        /// <summary>True once after events were lost; the caller drops what is queued and sends resync.</summary>
        public bool TakeResync() => Interlocked.Exchange(ref _resync, 0) == 1;

        public void Complete() => _events.Writer.TryComplete();

        public static readonly TaskEventDto ResyncMarker = new(0, "", "", null, null, 0, null);
    }
}
