using System.IO.Pipelines;
using System.Threading.Channels;
using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.Server.Tests.Harness;

/// <summary>
/// The client end of an in-memory connection to a <see cref="Session"/>: writes frames (well-formed or
/// raw bytes) and reads what the session sends, in order. One test drives one client from one flow,
/// so nothing here is thread-safe.
/// </summary>
internal sealed class PipeClient : IAsyncDisposable
{
    /// <summary>Generous limit for anything the coordinator should answer at once; never a timer under test.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly Channel<IMessage> _inbound = Channel.CreateUnbounded<IMessage>(new UnboundedChannelOptions { SingleReader = true });
    private readonly List<IMessage> _stash = [];
    private readonly Task _reader;
    private volatile TaskCompletionSource? _paused;
    private uint _nextId;
    private bool _outputCompleted;

    public PipeClient(PipeReader input, PipeWriter output, Task session)
    {
        _input = input;
        _output = output;
        SessionTask = session;
        _reader = Task.Run(ReadLoopAsync);
    }

    /// <summary>The server side's <see cref="Session.RunAsync"/>; completes when the session ends.</summary>
    public Task SessionTask { get; }

    public uint NextId() => ++_nextId;

    /// <summary>
    /// Stops taking bytes off the pipe (a read in progress gives its bytes back), so what the session sends
    /// from now on backs up as it would behind a client that stopped reading its socket.
    /// </summary>
    public void PauseReading()
    {
        _paused ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _input.CancelPendingRead();
    }

    public void ResumeReading()
    {
        _paused?.TrySetResult();
        _paused = null;
    }

    public async Task SendAsync(IMessage message)
    {
        FrameCodec.WriteFrame(_output, message);
        await _output.FlushAsync();
    }

    /// <summary>Sends bytes exactly as given: no length prefix is added.</summary>
    public async Task SendRawAsync(byte[] bytes) => await _output.WriteAsync(bytes);

    /// <summary>Sends <paramref name="body"/> behind a correct length prefix.</summary>
    public Task SendBodyAsync(byte[] body) => SendRawAsync(RawFrames.Frame(body));

    /// <summary>Ends the client's side of the stream (what a socket close looks like to the session).</summary>
    public async Task CompleteAsync()
    {
        if (!_outputCompleted)
        {
            _outputCompleted = true;
            await _output.CompleteAsync();
        }
    }

    /// <summary>The next message, or null when the session closed the stream.</summary>
    public async Task<IMessage?> ReceiveOrEndAsync()
    {
        if (_stash.Count > 0)
        {
            var first = _stash[0];
            _stash.RemoveAt(0);
            return first;
        }

        return await _inbound.Reader.WaitToReadAsync().AsTask().WaitAsync(Patience) && _inbound.Reader.TryRead(out var message)
            ? message
            : null;
    }

    public async Task<IMessage> ReceiveAsync() =>
        await ReceiveOrEndAsync() ?? throw new Xunit.Sdk.XunitException("the session closed the connection; expected another message");

    public async Task<T> ReceiveAsync<T>()
        where T : IMessage
    {
        var message = await ReceiveAsync();
        return message is T typed ? typed : throw new Xunit.Sdk.XunitException($"expected {typeof(T).Name}, got {message}");
    }

    /// <summary>Reads a connection-level error and then the end of the stream, and checks the session ended.</summary>
    public async Task<ErrorReply> ExpectFatalAsync(ErrorCode code)
    {
        var error = await ReceiveAsync<ErrorReply>();
        Assert.Equal(code, error.Code);
        Assert.Equal(0u, error.RequestId);
        Assert.False(string.IsNullOrWhiteSpace(error.Message));
        await ExpectClosedAsync();
        return error;
    }

    /// <summary>Asserts that nothing more arrives and the session ended.</summary>
    public async Task ExpectClosedAsync()
    {
        var next = await ReceiveOrEndAsync();
        Assert.True(next is null, $"expected the connection to close, got {next}");
        await SessionTask.WaitAsync(Patience);
    }

    /// <summary>
    /// Reads until the final reply to <paramref name="requestId"/> (not a layer notice); everything else
    /// read on the way is kept, in order, for the next <see cref="ReceiveAsync()"/>.
    /// </summary>
    public async Task<T> ReplyAsync<T>(uint requestId)
        where T : IReply
    {
        var skipped = new List<IMessage>();
        try
        {
            while (true)
            {
                var message = await ReceiveAsync();
                if (message is IReply reply and not (TaskLayer or RpcLayer) && reply.RequestId == requestId)
                {
                    return message is T typed ? typed : throw new Xunit.Sdk.XunitException($"expected {typeof(T).Name} for request {requestId}, got {message}");
                }

                skipped.Add(message);
            }
        }
        finally
        {
            _stash.InsertRange(0, skipped);
        }
    }

    public async Task<T> RequestAsync<T>(Func<uint, IRequest> build)
        where T : IReply
    {
        var id = NextId();
        await SendAsync(build(id));
        return await ReplyAsync<T>(id);
    }

    /// <summary>Sends a request that must be refused with <paramref name="code"/>, correlated with its id.</summary>
    public async Task<ErrorReply> RequestErrorAsync(Func<uint, IRequest> build, ErrorCode code)
    {
        var id = NextId();
        await SendAsync(build(id));
        var error = await ReplyAsync<ErrorReply>(id);
        Assert.Equal(code, error.Code);
        return error;
    }

    /// <summary>
    /// A barrier: sends a cheap read and returns every message that arrived before its answer. The
    /// session sends frames in the order the coordinator released them, so whatever the coordinator
    /// decided for this connection before the barrier is in the result.
    /// </summary>
    public async Task<List<IMessage>> DrainAsync()
    {
        var id = NextId();
        await SendAsync(new ListTagLimits(id));
        var before = new List<IMessage>();
        while (true)
        {
            var message = await ReceiveAsync();
            if (message is TagLimitList list && list.RequestId == id)
            {
                return before;
            }

            before.Add(message);
        }
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (true)
            {
                if (_paused is { } paused)
                {
                    await paused.Task;
                }

                var read = await _input.ReadAsync();
                if (read.IsCanceled || _paused is not null)
                {
                    // Paused while this read was pending: leave its bytes in the pipe.
                    _input.AdvanceTo(read.Buffer.Start);
                    continue;
                }

                var buffer = read.Buffer;
                while (FrameCodec.TryReadFrame(ref buffer, int.MaxValue, out var body, out _) == FrameStatus.Complete)
                {
                    _inbound.Writer.TryWrite(FrameCodec.Decode(body));
                }

                _input.AdvanceTo(buffer.Start, buffer.End);
                if (read.IsCompleted)
                {
                    if (!buffer.IsEmpty)
                    {
                        throw new InvalidDataException("the session sent a truncated frame");
                    }

                    break;
                }
            }

            _inbound.Writer.TryComplete();
        }
        catch (Exception ex)
        {
            _inbound.Writer.TryComplete(ex);
        }
        finally
        {
            await _input.CompleteAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await CompleteAsync();
        ResumeReading();
        await _reader.WaitAsync(Patience);
    }
}
