using System.Buffers;
using System.IO.Pipelines;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server;

/// <summary>Per-connection limits and the handshake's answers.</summary>
public sealed record SessionOptions
{
    public required string Token { get; init; }
    public int MaxFrame { get; init; } = ProtocolConstants.DefaultMaxFrame;

    /// <summary>Frames queued for a slow client before it is sent Overloaded and closed.</summary>
    public int OutboundCapacity { get; init; } = 10_000;

    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a closing connection may take to deliver its last frames before it is dropped.</summary>
    public TimeSpan CloseTimeout { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(2);
    public TimeSpan Lease { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>
/// One client connection over any duplex pipe (a socket in production, an in-memory pipe in tests).
/// It knows bytes and the handshake; everything after the handshake goes to the coordinator's inbox.
/// Reads happen in one loop; writes come from a bounded channel drained by one write loop, so the
/// coordinator never blocks on a slow client.
/// </summary>
public sealed partial class Session : IDisposable
{
    private static long _nextId;

    private readonly IDuplexPipe _pipe;
    private readonly SessionOptions _options;
    private readonly ICoordinatorInbox _inbox;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Channel<IMessage> _outbound;
    private readonly CancellationTokenSource _closed = new();
    private int _closing;
    private ITimer? _closeTimer;
    private volatile bool _abandoned;

    public Session(IDuplexPipe pipe, SessionOptions options, ICoordinatorInbox inbox, ILogger logger, TimeProvider time)
    {
        _pipe = pipe;
        _options = options;
        _inbox = inbox;
        _logger = logger;
        _time = time;
        _outbound = Channel.CreateBounded<IMessage>(new BoundedChannelOptions(options.OutboundCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    public long Id { get; } = Interlocked.Increment(ref _nextId);

    public string Role { get; private set; } = "";

    public string ClientName { get; private set; } = "";

    /// <summary>Queues a frame. Never blocks: a client that cannot keep up is closed with Overloaded.</summary>
    public void Send(IMessage message)
    {
        if (Volatile.Read(ref _closing) != 0)
        {
            return;
        }

        if (!_outbound.Writer.TryWrite(message))
        {
            LogOverloaded(_logger, Id, _options.OutboundCapacity);
            Close(new ErrorReply(0, ErrorCode.Overloaded, $"more than {_options.OutboundCapacity} frames queued for this connection"));
        }
    }

    /// <summary>Closes the connection, optionally after a final error frame.</summary>
    public void Close(ErrorReply? final = null)
    {
        if (Interlocked.Exchange(ref _closing, 1) != 0)
        {
            return;
        }

        _finalFrame = final;
        _outbound.Writer.TryComplete();

        // A client that stopped reading (the usual reason for Overloaded) would keep the write loop
        // waiting on its socket for good, and the connection open: give it a grace period to take its
        // last frames, then drop it with whatever it did not read.
        _closeTimer = _time.CreateTimer(_ => Abandon(), null, _options.CloseTimeout, Timeout.InfiniteTimeSpan);
    }

    private ErrorReply? _finalFrame;

    private void Abandon()
    {
        _abandoned = true;
        try
        {
            _pipe.Output.CancelPendingFlush();
        }
        catch (Exception ex) when (ex is ObjectDisposedException or InvalidOperationException)
        {
            // The write loop finished in the meantime.
        }
    }

    public void Dispose()
    {
        _closeTimer?.Dispose();
        _closed.Dispose();
    }

    /// <summary>Runs the connection until either side closes it.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closed.Token);
        var writer = WriteLoopAsync();
        var registered = false;
        try
        {
            if (await HandshakeAsync(linked.Token))
            {
                registered = true;
                _inbox.Post(new SessionOpened(this));
                await ReadLoopAsync(linked.Token);
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or InvalidOperationException)
        {
            LogConnectionError(_logger, Id, ex.Message);
        }
        finally
        {
            Close();
            if (registered)
            {
                _inbox.Post(new SessionClosed(this));
            }

            await writer;
            await _pipe.Input.CompleteAsync();
        }
    }

    private async Task<bool> HandshakeAsync(CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(_options.HandshakeTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        IMessage? first;
        try
        {
            first = await ReadMessageAsync(linked.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            return Refuse(ErrorCode.HandshakeRequired, "no Hello within the handshake timeout");
        }
        catch (ProtocolException ex) when (ex.Code == ErrorCode.UnknownMessage)
        {
            return Refuse(ErrorCode.HandshakeRequired, "the first frame must be Hello");
        }

        switch (first)
        {
            case null:
                return false;
            case not Hello:
                return Refuse(ErrorCode.HandshakeRequired, "the first frame must be Hello");
            case Hello { Version: not ProtocolConstants.Version } hello:
                return Refuse(ErrorCode.UnsupportedVersion, $"protocol version {hello.Version} is not supported; this coordinator speaks {ProtocolConstants.Version}");
            case Hello { Role: not (Roles.Worker or Roles.Actioner) } hello:
                return Refuse(ErrorCode.InvalidRequest, $"unknown role '{hello.Role}'; expected '{Roles.Worker}' or '{Roles.Actioner}'");
            case Hello hello when !TokenMatches(hello.Token):
                LogAuthFailed(_logger, Id, hello.Client);
                return Refuse(ErrorCode.AuthFailed, "wrong token");
            case Hello hello:
                Role = hello.Role;
                ClientName = hello.Client ?? "";
                Send(new Welcome(ProtocolConstants.Version, Id.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    (int)_options.HeartbeatInterval.TotalMilliseconds, (int)_options.Lease.TotalMilliseconds, _options.MaxFrame));
                LogHandshake(_logger, Id, Role, ClientName);
                return true;
        }
    }

    private bool TokenMatches(string? token) =>
        token is not null && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(token), Encoding.UTF8.GetBytes(_options.Token));

    private bool Refuse(ErrorCode code, string message)
    {
        TatzelwurmMetrics.ConnectionsRefused.Add(1, new KeyValuePair<string, object?>("code", code.ToString()));
        Close(new ErrorReply(0, code, message));
        return false;
    }

    private async Task ReadLoopAsync(CancellationToken cancellationToken)
    {
        var input = _pipe.Input;
        while (true)
        {
            // Every complete frame of one read goes to the inbox before the next read: one await per
            // read, not per frame, when a client sends several frames at once.
            var read = await input.ReadAsync(cancellationToken);
            var buffer = read.Buffer;
            var frames = 0;
            try
            {
                FrameStatus status;
                long declared;
                while ((status = FrameCodec.TryReadFrame(ref buffer, _options.MaxFrame, out var body, out declared)) == FrameStatus.Complete)
                {
                    if (DecodeRequest(body) is not { } message)
                    {
                        continue;
                    }

                    if (message is Hello)
                    {
                        throw Fatal(ErrorCode.InvalidRequest, "Hello was already received");
                    }

                    frames++;
                    _inbox.Post(new FromClient(this, message));
                }

                ThrowIfBroken(status, declared);
            }
            finally
            {
                TatzelwurmMetrics.FramesIn.Add(frames);
                input.AdvanceTo(buffer.Start, buffer.End);
            }

            if (read.IsCompleted)
            {
                ThrowIfTruncated(buffer);
                return;
            }
        }
    }

    /// <summary>Decodes a frame after the handshake; null when it was answered with an error and the connection stays.</summary>
    private IMessage? DecodeRequest(ReadOnlySequence<byte> body)
    {
        try
        {
            return FrameCodec.Decode(body);
        }
        catch (ProtocolException ex) when (ex.Code == ErrorCode.UnknownMessage && ex.RequestId != 0)
        {
            // The frame was intact and names its request: answer and keep the connection.
            TatzelwurmMetrics.ProtocolErrors.Add(1, new KeyValuePair<string, object?>("code", ex.Code.ToString()));
            Send(new ErrorReply(ex.RequestId, ex.Code, ex.Message));
            return null;
        }
        catch (ProtocolException ex)
        {
            // BadFrame, or an unknown message with nothing to correlate an answer with: an Error with
            // request id 0 closes (docs/protocol.md §4).
            throw Fatal(ex.Code, ex.Message);
        }
    }

    /// <summary>Reads one message; null at a clean end of stream. Broken framing closes the connection.</summary>
    private async Task<IMessage?> ReadMessageAsync(CancellationToken cancellationToken)
    {
        var input = _pipe.Input;
        while (true)
        {
            var read = await input.ReadAsync(cancellationToken);
            var buffer = read.Buffer;
            var status = FrameCodec.TryReadFrame(ref buffer, _options.MaxFrame, out var body, out var declared);
            if (status == FrameStatus.Complete)
            {
                try
                {
                    return FrameCodec.Decode(body);
                }
                catch (ProtocolException ex) when (ex.Code == ErrorCode.BadFrame)
                {
                    throw Fatal(ex.Code, ex.Message);
                }
                finally
                {
                    input.AdvanceTo(buffer.Start);
                }
            }

            ThrowIfBroken(status, declared);
            input.AdvanceTo(buffer.Start, buffer.End);
            if (read.IsCompleted)
            {
                ThrowIfTruncated(buffer);
                return null;
            }
        }
    }

    // Broken framing closes the connection, during the handshake and after it alike.
    private void ThrowIfBroken(FrameStatus status, long declared)
    {
        switch (status)
        {
            case FrameStatus.Empty:
                throw Fatal(ErrorCode.BadFrame, "zero-length frame");
            case FrameStatus.TooLarge:
                throw Fatal(ErrorCode.FrameTooLarge, $"frame of {declared} bytes exceeds the maximum of {_options.MaxFrame}");
        }
    }

    private void ThrowIfTruncated(ReadOnlySequence<byte> rest)
    {
        if (!rest.IsEmpty)
        {
            throw Fatal(ErrorCode.BadFrame, "connection closed inside a frame (truncated)");
        }
    }

    private OperationCanceledException Fatal(ErrorCode code, string message)
    {
        LogProtocolError(_logger, Id, code, message);
        TatzelwurmMetrics.ProtocolErrors.Add(1, new KeyValuePair<string, object?>("code", code.ToString()));
        Close(new ErrorReply(0, code, message));
        return new OperationCanceledException(message);
    }

    private async Task WriteLoopAsync()
    {
        var output = _pipe.Output;
        try
        {
            var reader = _outbound.Reader;
            while (await reader.WaitToReadAsync())
            {
                var frames = 0L;
                while (reader.TryRead(out var message))
                {
                    FrameCodec.WriteFrame(output, message);
                    frames++;
                }

                TatzelwurmMetrics.FramesOut.Add(frames);
                var flushed = await output.FlushAsync();
                if (flushed.IsCompleted || flushed.IsCanceled)
                {
                    break;
                }
            }

            if (_finalFrame is { } final && !_abandoned)
            {
                FrameCodec.WriteFrame(output, final);
                await output.FlushAsync();
            }
        }
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or InvalidOperationException)
        {
            LogConnectionError(_logger, Id, ex.Message);
        }
        finally
        {
            Interlocked.Exchange(ref _closing, 1);
            _outbound.Writer.TryComplete();
            if (_abandoned)
            {
                // Completing with an error discards unflushed bytes instead of waiting for them to be written.
                LogAbandoned(_logger, Id, _options.CloseTimeout);
                await output.CompleteAsync(new IOException("the client did not read its last frames in time"));
            }
            else
            {
                try
                {
                    await output.CompleteAsync();
                }
                catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException)
                {
                    // Completing flushes what a failed flush left buffered; the peer is gone, so it cannot
                    // be delivered, and this is the same disconnect the catch above already logged.
                }
            }

            await _closed.CancelAsync();
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "connection {SessionId}: handshake ok, role {Role}, client {Client}")]
    private static partial void LogHandshake(ILogger logger, long sessionId, string role, string client);

    [LoggerMessage(Level = LogLevel.Warning, Message = "connection {SessionId}: wrong token from client {Client}")]
    private static partial void LogAuthFailed(ILogger logger, long sessionId, string client);

    [LoggerMessage(Level = LogLevel.Warning, Message = "connection {SessionId}: protocol error {Code}: {Detail}; closing")]
    private static partial void LogProtocolError(ILogger logger, long sessionId, ErrorCode code, string detail);

    [LoggerMessage(Level = LogLevel.Warning, Message = "connection {SessionId}: more than {Capacity} frames queued; closing as overloaded")]
    private static partial void LogOverloaded(ILogger logger, long sessionId, int capacity);

    [LoggerMessage(Level = LogLevel.Warning, Message = "connection {SessionId}: last frames not read within {Timeout}; dropped")]
    private static partial void LogAbandoned(ILogger logger, long sessionId, TimeSpan timeout);

    [LoggerMessage(Level = LogLevel.Debug, Message = "connection {SessionId}: {Detail}")]
    private static partial void LogConnectionError(ILogger logger, long sessionId, string detail);
}
