using System.Collections.Concurrent;
using System.Globalization;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Channels;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Client;

/// <summary>
/// One protocol connection: a read loop over a <see cref="PipeReader"/> that completes requests by id
/// and queues pushes, and a channel-fed write loop. Thread-safe for concurrent requests.
/// </summary>
public sealed class Connection : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly Channel<Outbound> _outbound = Channel.CreateUnbounded<Outbound>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Channel<IMessage> _pushes = Channel.CreateUnbounded<IMessage>(new UnboundedChannelOptions { SingleReader = true });
    private readonly ConcurrentDictionary<uint, PendingReply> _pending = new();
    private readonly CancellationTokenSource _closed = new();
    private readonly int _maxFrame;
    private Task _readLoop = Task.CompletedTask;
    private Task _writeLoop = Task.CompletedTask;
    private int _nextRequestId;
    private Exception? _failure;
    private int _shutDown;

    // A frame body to write, or a source the write loop drains into requests when it gets to it (so that
    // what piles up while it is busy goes out together).
    private readonly record struct Outbound(byte[]? Body, Func<IRequest?>? Source);

    private sealed class Pending(Action<int>? layer) : PendingReply
    {
        public TaskCompletionSource<IReply> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override void Layer(int depth) => layer?.Invoke(depth);

        public override void Complete(IReply reply) => Done.TrySetResult(reply);

        public override void Fail(Exception error) => Done.TrySetException(error);
    }

    private Connection(Socket socket, int maxFrame)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _input = PipeReader.Create(_stream);
        _output = PipeWriter.Create(_stream);
        _maxFrame = maxFrame;
    }

    /// <summary>The coordinator's handshake answer: heartbeat interval, lease, frame limit.</summary>
    public Welcome Welcome { get; private set; } = null!;

    /// <summary>Messages the coordinator pushes (assignments, controls, deliveries, events), in arrival order.</summary>
    public ChannelReader<IMessage> Pushes => _pushes.Reader;

    /// <summary>Cancelled when the connection closes.</summary>
    public CancellationToken Closed => _closed.Token;


    /// <summary>Connects, performs the handshake, and starts the read and write loops.</summary>
    public static async Task<Connection> ConnectAsync(ConnectionOptions options, string role, CancellationToken cancellationToken = default)
    {
        var (host, port, token) = options.Resolve();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.ConnectTimeout);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(host, port, timeout.Token);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var connection = new Connection(socket, options.MaxFrame);
        try
        {
            FrameCodec.WriteFrame(connection._output, new Hello(ProtocolConstants.Version, role, token, options.ClientName));
            await connection._output.FlushAsync(timeout.Token);
            var first = await connection.ReadAsync(timeout.Token);
            switch (first)
            {
                case Welcome welcome:
                    connection.Welcome = welcome;
                    break;
                case ErrorReply error:
                    throw new TatzelwurmException(error.Code, error.Message);
                default:
                    throw new TatzelwurmException(ErrorCode.HandshakeRequired, $"expected Welcome, got {first?.GetType().Name ?? "end of stream"}");
            }
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }

        connection._readLoop = Task.Run(connection.ReadLoopAsync, CancellationToken.None);
        connection._writeLoop = Task.Run(connection.WriteLoopAsync, CancellationToken.None);
        return connection;
    }

    /// <summary>Sends a message that expects no reply (heartbeats, RPC responses).</summary>
    /// <exception cref="TatzelwurmException">
    /// <see cref="ErrorCode.FrameTooLarge"/>: the message encodes to more than the coordinator's
    /// <see cref="Welcome.MaxFrame"/>; nothing was sent and the connection stays open.
    /// </exception>
    public void Send(IMessage message)
    {
        var body = FrameCodec.EncodeBody(message);
        if (body.Length > Welcome.MaxFrame)
        {
            throw TooLarge(message, body.Length);
        }

        if (!_outbound.Writer.TryWrite(new Outbound(body, null)))
        {
            throw new ConnectionLostException("the connection is closed", _failure);
        }
    }

    /// <summary>
    /// Has the write loop call <paramref name="source"/> until it returns null and write each request it
    /// returns. The source runs on the write loop, so it must <see cref="Register"/> the requests it
    /// builds: one beyond the coordinator's max_frame is not written and its reply fails with FrameTooLarge.
    /// </summary>
    internal void SendFrom(Func<IRequest?> source)
    {
        if (!_outbound.Writer.TryWrite(new Outbound(null, source)))
        {
            throw new ConnectionLostException("the connection is closed", _failure);
        }
    }

    /// <summary>Registers a request's reply handler under a fresh request id; it fails at once if the connection is already closed.</summary>
    internal uint Register(PendingReply pending)
    {
        var id = NextRequestId();
        _pending[id] = pending;
        // Shutdown sets the flag before it fails what is registered: one of the two sees the other.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _shutDown) != 0 && _pending.TryRemove(id, out _))
        {
            pending.Fail(Lost());
        }

        return id;
    }

    // The coordinator closes the connection on a frame beyond its max_frame, failing every request in
    // flight, and a sender that retries after the reconnect is refused again for ever: such a frame is
    // refused here instead, with the sizes, and the connection stays.
    private TatzelwurmException TooLarge(IMessage message, int bytes) => new(ErrorCode.FrameTooLarge, string.Create(CultureInfo.InvariantCulture,
        $"{message.GetType().Name} of {bytes:N0} bytes exceeds the coordinator's max_frame of {Welcome.MaxFrame:N0} bytes"));

    internal ConnectionLostException Lost() => new(_failure is TatzelwurmException t
        ? $"connection closed by the coordinator: {t.Code}: {t.Message}"
        : "connection to the coordinator lost", _failure);

    /// <summary>
    /// Sends a request built with a fresh request id and awaits its final reply; error replies throw
    /// <see cref="TatzelwurmException"/>, and so does a request beyond the coordinator's max_frame
    /// (<see cref="ErrorCode.FrameTooLarge"/>, not sent; the connection stays open).
    /// </summary>
    public async Task<TReply> RequestAsync<TReply>(Func<uint, IRequest> build, Action<int>? layer = null, CancellationToken cancellationToken = default)
        where TReply : IReply
    {
        var pending = new Pending(layer);
        var id = Register(pending);
        try
        {
            Send(build(id));
            using var registration = cancellationToken.Register(() => pending.Done.TrySetCanceled(cancellationToken));
            var reply = await pending.Done.Task;
            return reply switch
            {
                TReply ok => ok,
                ErrorReply error => throw new TatzelwurmException(error.Code, error.Message),
                _ => throw new TatzelwurmException(ErrorCode.InvalidRequest, $"unexpected reply {reply.GetType().Name}"),
            };
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private uint NextRequestId()
    {
        uint id;
        do
        {
            id = (uint)Interlocked.Increment(ref _nextRequestId);
        }
        while (id == 0);
        return id;
    }

    private async Task<IMessage?> ReadAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var read = await _input.ReadAsync(cancellationToken);
            var buffer = read.Buffer;
            var status = FrameCodec.TryReadFrame(ref buffer, _maxFrame, out var body, out var declared);
            if (status == FrameStatus.Complete)
            {
                try
                {
                    return FrameCodec.Decode(body);
                }
                finally
                {
                    _input.AdvanceTo(buffer.Start);
                }
            }

            ThrowIfBroken(status, declared);

            _input.AdvanceTo(buffer.Start, buffer.End);
            if (read.IsCompleted)
            {
                return null;
            }
        }
    }

    private static void ThrowIfBroken(FrameStatus status, long declared)
    {
        if (status is FrameStatus.Empty or FrameStatus.TooLarge)
        {
            throw new TatzelwurmException(ErrorCode.BadFrame, $"coordinator sent a frame of {declared} bytes");
        }
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (true)
            {
                // Every complete frame of one read is handled before the next read: one await per read,
                // not per frame, when the coordinator's replies arrive together.
                var read = await _input.ReadAsync(_closed.Token);
                var buffer = read.Buffer;
                FrameStatus status;
                long declared;
                while ((status = FrameCodec.TryReadFrame(ref buffer, _maxFrame, out var body, out declared)) == FrameStatus.Complete)
                {
                    if (!Dispatch(FrameCodec.Decode(body)))
                    {
                        return;
                    }
                }

                ThrowIfBroken(status, declared);

                _input.AdvanceTo(buffer.Start, buffer.End);
                if (read.IsCompleted)
                {
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _failure ??= ex;
        }
        finally
        {
            Shutdown();
        }
    }

    /// <summary>Routes one message from the coordinator; false for a fatal error, which ends the connection.</summary>
    private bool Dispatch(IMessage message)
    {
        switch (message)
        {
            case ErrorReply { RequestId: 0 } fatal:
                _failure = new TatzelwurmException(fatal.Code, fatal.Message);
                return false;
            case TaskLayer layer when _pending.TryGetValue(layer.RequestId, out var pending):
                pending.Layer(layer.Depth);
                break;
            case RpcLayer layer when _pending.TryGetValue(layer.RequestId, out var pending):
                pending.Layer(layer.Depth);
                break;
            case IReply reply and not (TaskLayer or RpcLayer) when _pending.TryRemove(reply.RequestId, out var pending):
                pending.Complete(reply);
                break;
            default:
                _pushes.Writer.TryWrite(message);
                break;
        }

        return true;
    }

    private async Task WriteLoopAsync()
    {
        try
        {
            var reader = _outbound.Reader;
            while (await reader.WaitToReadAsync(_closed.Token))
            {
                while (reader.TryRead(out var item))
                {
                    if (item.Body is { } body)
                    {
                        FrameCodec.WriteFrame(_output, body);
                        continue;
                    }

                    while (item.Source!() is { } request)
                    {
                        if (!FrameCodec.TryWriteFrame(_output, request, Welcome.MaxFrame, out var length) && _pending.TryRemove(request.RequestId, out var refused))
                        {
                            refused.Fail(TooLarge(request, length));
                        }
                    }
                }

                await _output.FlushAsync(_closed.Token);
            }
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _failure ??= ex;
        }
        finally
        {
            Shutdown();
        }
    }

    private void Shutdown()
    {
        _outbound.Writer.TryComplete();
        _pushes.Writer.TryComplete();
        Interlocked.Exchange(ref _shutDown, 1);
        var lost = Lost();
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var pending))
            {
                pending.Fail(lost);
            }
        }

        try
        {
            _closed.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }

        _socket.Dispose();
    }

    /// <summary>Closes the connection; outstanding requests fail with <see cref="ConnectionLostException"/>.</summary>
    public async ValueTask DisposeAsync()
    {
        _outbound.Writer.TryComplete();
        try
        {
            await _writeLoop.WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
        }

        Shutdown();
        await _readLoop;
        await _input.CompleteAsync();
        try
        {
            // Completing flushes what the writer still buffers. After a failed flush (the peer died)
            // that is the frames that never went out, and the socket is already closed.
            await _output.CompleteAsync();
        }
        catch (Exception ex) when (ex is ObjectDisposedException or IOException or SocketException)
        {
        }

        await _stream.DisposeAsync();
        _closed.Dispose();
    }
}

/// <summary>What the read loop does with the replies to one request.</summary>
internal abstract class PendingReply
{
    /// <summary>A "result to follow" layer (TaskLayer, RpcLayer).</summary>
    public virtual void Layer(int depth)
    {
    }

    /// <summary>The final reply, an ErrorReply included.</summary>
    public abstract void Complete(IReply reply);

    /// <summary>The connection was lost before the final reply.</summary>
    public abstract void Fail(Exception error);
}
