using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server.Tests.Harness;

/// <summary>
/// A TCP relay on 127.0.0.1:0 in front of a coordinator, so a test can cut a client's connection
/// (both directions at once, as a network failure would) while the client and coordinator stay up,
/// hold back what clients send, and see how the frames they sent were batched.
/// </summary>
internal sealed class TcpProxy : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private volatile IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private readonly List<Socket> _open = [];
    private readonly List<IMessage> _fromClient = [];
    private readonly Channel<int> _accepted = Channel.CreateUnbounded<int>();
    private readonly Task _acceptLoop;
    private TaskCompletionSource _release = Completed();
    private TaskCompletionSource _heldChunk = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _held;
    private int _count;

    /// <param name="target">Where connections are relayed to.</param>
    /// <param name="smallReceiveBuffer">
    /// Accept with a 4 KiB receive buffer: with the client's send buffer (at most 4 MiB by default on
    /// Linux) a held client then cannot finish writing a large frame and its write loop stays in its flush.
    /// </param>
    public TcpProxy(IPEndPoint target, bool smallReceiveBuffer = false)
    {
        _target = target;
        if (smallReceiveBuffer)
        {
            // Inherited by the accepted sockets.
            _listener.ReceiveBufferSize = 4096;
        }

        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(16);
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    /// <summary>Where new connections are relayed to (e.g. a coordinator restarted on another port).</summary>
    public IPEndPoint Target
    {
        get => _target;
        set => _target = value;
    }

    /// <summary>Every complete frame clients sent that was forwarded, in order.</summary>
    public IReadOnlyList<IMessage> FromClient
    {
        get
        {
            lock (_lock)
            {
                return [.. _fromClient];
            }
        }
    }

    /// <summary>Completes when the proxy has relayed its <paramref name="n"/>-th connection (1-based).</summary>
    public async Task WaitForConnectionAsync(int n)
    {
        while (await _accepted.Reader.ReadAsync().AsTask().WaitAsync(PipeClient.Patience) < n)
        {
        }
    }

    /// <summary>Holds back the clients' next bytes; the returned task completes once the first of them arrived.</summary>
    public Task HoldAsync()
    {
        _release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _heldChunk = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _held = true;
        return _heldChunk.Task.WaitAsync(PipeClient.Patience);
    }

    public void Release()
    {
        _held = false;
        _release.TrySetResult();
    }

    /// <summary>Drops every relayed connection at once (and lets go of held bytes); new ones are still accepted.</summary>
    public void Cut()
    {
        lock (_lock)
        {
            foreach (var socket in _open)
            {
                socket.Dispose();
            }

            _open.Clear();
        }

        _release.TrySetResult();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            client.NoDelay = true;
            try
            {
                await server.ConnectAsync(_target, _stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException)
            {
                client.Dispose();
                server.Dispose();
                continue;
            }

            lock (_lock)
            {
                _open.Add(client);
                _open.Add(server);
            }

            _ = PumpAsync(client, server, new ArrayBufferWriter<byte>());
            _ = PumpAsync(server, client, partial: null);
            _accepted.Writer.TryWrite(Interlocked.Increment(ref _count));
        }
    }

    // partial is the client's unparsed bytes (client → server only; null the other way).
    private async Task PumpAsync(Socket from, Socket to, ArrayBufferWriter<byte>? partial)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                var read = await from.ReceiveAsync(buffer, SocketFlags.None);
                if (read == 0)
                {
                    break;
                }

                if (partial is not null)
                {
                    if (_held)
                    {
                        _heldChunk.TrySetResult();
                        await _release.Task;
                    }

                    Record(partial, buffer.AsSpan(0, read));
                }

                await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None);
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }
        finally
        {
            from.Dispose();
            to.Dispose();
        }
    }

    private void Record(ArrayBufferWriter<byte> partial, ReadOnlySpan<byte> bytes)
    {
        partial.Write(bytes);
        var offset = 0;
        var written = partial.WrittenSpan;
        while (written.Length - offset >= ProtocolConstants.HeaderSize)
        {
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(written[offset..]);
            if (written.Length - offset - ProtocolConstants.HeaderSize < length)
            {
                break;
            }

            // Only what decodes is recorded; the relay forwards bytes whatever they are.
            try
            {
                var message = FrameCodec.DecodeFrame(written.Slice(offset, ProtocolConstants.HeaderSize + length));
                lock (_lock)
                {
                    _fromClient.Add(message);
                }
            }
            catch (ProtocolException)
            {
            }

            offset += ProtocolConstants.HeaderSize + length;
        }

        if (offset > 0)
        {
            var left = written[offset..].ToArray();
            partial.Clear();
            partial.Write(left);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _acceptLoop;
        Cut();
        _stop.Dispose();
    }

    private static TaskCompletionSource Completed()
    {
        var done = new TaskCompletionSource();
        done.SetResult();
        return done;
    }
}
