using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server.Tests.Harness;

/// <summary>
/// A relay on 127.0.0.1:0 for one client connection that can hold back what the client sends: while
/// held it takes one chunk from the client and forwards nothing until released. Once the socket
/// buffers are full the client's write loop is stuck in its flush, so whatever the client is asked to
/// send meanwhile queues behind it. Records the frames the client sent, to see how they were batched.
/// </summary>
internal sealed class HoldingProxy : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly IPEndPoint _target;
    private readonly Lock _lock = new();
    private readonly List<IMessage> _fromClient = [];
    private readonly ArrayBufferWriter<byte> _partial = new();
    private readonly List<Socket> _open = [];
    private TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _heldChunk = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _relay;
    private volatile bool _held;

    public HoldingProxy(IPEndPoint target)
    {
        _target = target;
        // Inherited by the accepted socket: with the client's send buffer (at most 4 MiB by default on
        // Linux) far less than a 12 MiB frame, so a held client cannot finish writing one.
        _listener.ReceiveBufferSize = 4096;
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(1);
        _relay = Task.Run(RelayAsync);
    }

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    /// <summary>Every complete frame the client sent that was forwarded, in order.</summary>
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

    /// <summary>Holds back the client's next bytes; the returned task completes once the first of them arrived.</summary>
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

    /// <summary>Drops the connection in both directions, as a network failure would.</summary>
    public void Cut()
    {
        lock (_lock)
        {
            foreach (var socket in _open)
            {
                socket.Dispose();
            }
        }

        _release.TrySetResult();
    }

    private async Task RelayAsync()
    {
        Socket client;
        try
        {
            client = await _listener.AcceptAsync();
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException)
        {
            return;
        }

        var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        client.NoDelay = true;
        await server.ConnectAsync(_target);
        lock (_lock)
        {
            _open.Add(client);
            _open.Add(server);
        }

        await Task.WhenAll(PumpAsync(client, server, fromClient: true), PumpAsync(server, client, fromClient: false));
    }

    private async Task PumpAsync(Socket from, Socket to, bool fromClient)
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

                if (fromClient && _held)
                {
                    _heldChunk.TrySetResult();
                    await _release.Task;
                }

                if (fromClient)
                {
                    Record(buffer.AsSpan(0, read));
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

    private void Record(ReadOnlySpan<byte> bytes)
    {
        lock (_lock)
        {
            _partial.Write(bytes);
            var offset = 0;
            var written = _partial.WrittenSpan;
            while (written.Length - offset >= ProtocolConstants.HeaderSize)
            {
                var length = (int)BinaryPrimitives.ReadUInt32BigEndian(written[offset..]);
                if (written.Length - offset - ProtocolConstants.HeaderSize < length)
                {
                    break;
                }

                _fromClient.Add(FrameCodec.DecodeFrame(written.Slice(offset, ProtocolConstants.HeaderSize + length)));
                offset += ProtocolConstants.HeaderSize + length;
            }

            if (offset > 0)
            {
                var left = written[offset..].ToArray();
                _partial.Clear();
                _partial.Write(left);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _listener.Dispose();
        Cut();
        await _relay;
    }
}
