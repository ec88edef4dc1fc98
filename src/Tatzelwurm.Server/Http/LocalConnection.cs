using System.Collections.Concurrent;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server.Http;

/// <summary>
/// An actioner connection to the coordinator that lives inside the coordinator's process: a real
/// <see cref="Session"/> over an in-memory pipe pair, spoken to in wire frames.
/// </summary>
/// <remarks>
/// Why the dashboard talks to the loop this way instead of through a private command: every action
/// (play, pause, kill, drain) and every live event then takes exactly the path a remote actioner's
/// does: the same validation, the same refusal while the store fails, the reply released by the
/// writer only once the change is durable (EffectKind.Ack), task events delivered only after their
/// batch is committed (EffectKind.Held), the same watcher filtering and the same slow-consumer guard.
/// Nothing in the loop or the writer needs to know the dashboard exists. The cost is one MessagePack
/// encode/decode per frame, which is negligible at dashboard rates; the frames are counted in the
/// frames in/out metrics like any other connection's.
/// </remarks>
internal sealed class LocalConnection : IAsyncDisposable
{
    // Replies are never big (one ControlResult, one WorkerList); events are small. A frame larger
    // than the coordinator's own limit cannot come from it.
    private readonly Pipe _toServer = new();
    private readonly Pipe _toClient = new();
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<uint, TaskCompletionSource<IMessage>> _pending = new();
    private readonly TaskCompletionSource<Welcome> _welcome = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stop = new();
    private readonly Action<IMessage>? _onPush;
    private readonly int _maxFrame;
    private Task _sessionTask = Task.CompletedTask;
    private Task _readTask = Task.CompletedTask;
    private uint _nextRequestId;
    private int _disposed;

    private LocalConnection(Action<IMessage>? onPush, int maxFrame)
    {
        _onPush = onPush;
        _maxFrame = maxFrame;
    }

    /// <summary>Completes when the connection is closed, by either side.</summary>
    public Task Closed => _closed.Task;

    /// <summary>Why the coordinator closed the connection, if it said (e.g. Overloaded).</summary>
    public ErrorReply? CloseReason { get; private set; }

    /// <summary>Opens the connection and completes the handshake.</summary>
    /// <param name="onPush">Receives pushed frames (task events) on the connection's read loop; must not block.</param>
    public static async Task<LocalConnection> OpenAsync(
        ICoordinatorInbox coordinator, SessionOptions options, string clientName, Action<IMessage>? onPush,
        ILogger<Session> logger, TimeProvider time, CancellationToken cancellationToken)
    {
        var connection = new LocalConnection(onPush, options.MaxFrame);
        var session = new Session(new DuplexPipe(connection._toServer.Reader, connection._toClient.Writer), options, coordinator, logger, time);
        connection._sessionTask = Task.Run(async () =>
        {
            using (session)
            {
                await session.RunAsync(connection._stop.Token);
            }
        }, CancellationToken.None);
        connection._readTask = Task.Run(connection.ReadLoopAsync, CancellationToken.None);
        try
        {
            await connection.WriteAsync(new Hello(ProtocolConstants.Version, Roles.Actioner, options.Token, clientName));
            await connection._welcome.Task.WaitAsync(cancellationToken);
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }

        return connection;
    }

    /// <summary>Sends a request and returns its reply (an <see cref="ErrorReply"/> is returned, not thrown).</summary>
    public async Task<IMessage> RequestAsync(Func<uint, IRequest> create, CancellationToken cancellationToken)
    {
        var id = Interlocked.Increment(ref _nextRequestId);
        if (id == 0)
        {
            id = Interlocked.Increment(ref _nextRequestId);
        }

        var reply = new TaskCompletionSource<IMessage>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = reply;
        try
        {
            if (_closed.Task.IsCompleted)
            {
                throw new ConnectionClosedException(CloseReason);
            }

            await WriteAsync(create(id));
            return await reply.Task.WaitAsync(cancellationToken);
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private async Task WriteAsync(IMessage message)
    {
        await _writeLock.WaitAsync();
        try
        {
            FrameCodec.WriteFrame(_toServer.Writer, message);
            var flushed = await _toServer.Writer.FlushAsync();
            if (flushed.IsCompleted)
            {
                throw new ConnectionClosedException(CloseReason);
            }
        }
        catch (InvalidOperationException)
        {
            // The writer was completed by DisposeAsync.
            throw new ConnectionClosedException(CloseReason);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        var input = _toClient.Reader;
        try
        {
            while (true)
            {
                var read = await input.ReadAsync();
                var buffer = read.Buffer;
                while (FrameCodec.TryReadFrame(ref buffer, _maxFrame, out var body, out _) == FrameStatus.Complete)
                {
                    Dispatch(FrameCodec.Decode(body));
                }

                input.AdvanceTo(buffer.Start, buffer.End);
                if (read.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (ProtocolException)
        {
            // Cannot happen with frames the coordinator wrote; treat as closed.
        }
        finally
        {
            await input.CompleteAsync();
            var closed = new ConnectionClosedException(CloseReason);
            _welcome.TrySetException(closed);
            foreach (var pending in _pending.Values)
            {
                pending.TrySetException(closed);
            }

            _closed.TrySetResult();
        }
    }

    private void Dispatch(IMessage message)
    {
        switch (message)
        {
            case Welcome welcome:
                _welcome.TrySetResult(welcome);
                break;
            case ErrorReply { RequestId: 0 } final:
                CloseReason = final;
                break;
            case TaskLayer:
                // Progress of a wait; the dashboard never waits.
                break;
            case IReply reply when _pending.TryGetValue(reply.RequestId, out var pending):
                pending.TrySetResult(reply);
                break;
            case IReply:
                break;
            default:
                _onPush?.Invoke(message);
                break;
        }
    }

    /// <summary>Closes the connection (the coordinator sees a clean end of stream) and waits for both loops.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            await _closed.Task;
            return;
        }

        await _writeLock.WaitAsync();
        try
        {
            await _toServer.Writer.CompleteAsync();
        }
        finally
        {
            _writeLock.Release();
        }

        await _stop.CancelAsync();
        await _sessionTask;
        await _readTask;

        // The semaphore is not disposed: a request racing with the close may still touch it, and
        // without a wait handle it holds nothing that needs releasing.
        _stop.Dispose();
    }

    private sealed record DuplexPipe(PipeReader Input, PipeWriter Output) : IDuplexPipe;
}

/// <summary>The in-process connection to the coordinator is closed (shutting down, or it was overloaded).</summary>
internal sealed class ConnectionClosedException(ErrorReply? reason)
    : Exception(reason is null ? "the coordinator connection is closed" : $"the coordinator closed the connection: {reason.Code}: {reason.Message}");
