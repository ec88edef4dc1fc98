using System.Net;
using System.Net.Sockets;

namespace Tatzelwurm.EndToEnd.Tests.Fixtures;

/// <summary>
/// A TCP forwarder on 127.0.0.1:0 between a worker and the coordinator, to fake network faults:
/// <see cref="Sever"/> cuts every open connection (both ends see it close), <see cref="Block"/>
/// also refuses new ones until <see cref="Restore"/>, and <see cref="Stall"/> keeps the sockets open
/// but stops moving bytes (a silent network: neither end sees a close).
/// </summary>
internal sealed class TcpProxy : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly IPEndPoint _upstream;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _lock = new();
    private readonly List<Link> _links = [];
    private readonly Task _acceptLoop;
    private volatile bool _blocked;
    private int _accepted;

    private TcpProxy(IPEndPoint upstream)
    {
        _upstream = upstream;
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(64);
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    /// <summary>host:port to give the worker.</summary>
    public string Address => $"127.0.0.1:{((IPEndPoint)_listener.LocalEndPoint!).Port}";

    /// <summary>Connections forwarded so far (refused ones not counted).</summary>
    public int Accepted => Volatile.Read(ref _accepted);

    /// <summary>Starts forwarding to <paramref name="upstream"/> (host:port).</summary>
    public static TcpProxy Start(string upstream) => new(IPEndPoint.Parse(upstream));

    /// <summary>Closes every open connection on both sides; new connections are forwarded again.</summary>
    public void Sever()
    {
        List<Link> links;
        lock (_lock)
        {
            links = [.. _links];
            _links.Clear();
        }

        foreach (var link in links)
        {
            link.Close();
        }
    }

    /// <summary>Severs every connection and refuses new ones until <see cref="Restore"/>.</summary>
    public void Block()
    {
        _blocked = true;
        Sever();
    }

    /// <summary>Forwards new connections again.</summary>
    public void Restore() => _blocked = false;

    /// <summary>Stops moving bytes on the open connections without closing them.</summary>
    public void Stall()
    {
        lock (_lock)
        {
            foreach (var link in _links)
            {
                link.Stalled = true;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        _listener.Dispose();
        await _acceptLoop;
        Sever();
        _stopping.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stopping.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            if (_blocked)
            {
                client.Dispose();
                continue;
            }

            var upstream = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await upstream.ConnectAsync(_upstream, _stopping.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException)
            {
                upstream.Dispose();
                client.Dispose();
                continue;
            }

            client.NoDelay = true;
            var link = new Link(client, upstream);
            lock (_lock)
            {
                _links.Add(link);
            }

            Interlocked.Increment(ref _accepted);
            link.Start(() =>
            {
                lock (_lock)
                {
                    _links.Remove(link);
                }
            });
        }
    }

    private sealed class Link(Socket client, Socket upstream)
    {
        private int _closed;

        public volatile bool Stalled;

        public void Start(Action closed)
        {
            var a = PumpAsync(client, upstream);
            var b = PumpAsync(upstream, client);
            _ = Task.WhenAny(a, b).ContinueWith(_ =>
            {
                Close();
                closed();
            }, TaskScheduler.Default);
        }

        public void Close()
        {
            if (Interlocked.Exchange(ref _closed, 1) == 0)
            {
                client.Dispose();
                upstream.Dispose();
            }
        }

        private async Task PumpAsync(Socket from, Socket to)
        {
            var buffer = new byte[64 * 1024];
            try
            {
                while (true)
                {
                    var read = await from.ReceiveAsync(buffer, SocketFlags.None);
                    if (read == 0)
                    {
                        return;
                    }

                    // A stalled link swallows what it reads: nothing reaches the other side, and
                    // nothing tells either side the link is gone.
                    if (!Stalled)
                    {
                        await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None);
                    }
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }
        }
    }
}
