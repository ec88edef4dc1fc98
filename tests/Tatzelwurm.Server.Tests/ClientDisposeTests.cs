using System.Net;
using System.Net.Sockets;
using Tatzelwurm.Client;
using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.Server.Tests;

/// <summary>Disposing a client whose coordinator died (found by the crash test, tests/Tatzelwurm.Crash.Tests).</summary>
public class ClientDisposeTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Dispose_PeerResetWhileAFrameWasBeingSent_DoesNotThrow()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;

        // A coordinator that answers the handshake, reads the first byte of the next frame (so the
        // client is sending it) and dies: a reset, as after kill -9.
        var peer = Task.Run(async () =>
        {
            using var socket = await listener.AcceptAsync(Ct);
            var buffer = new byte[64 * 1024];
            await socket.ReceiveAsync(buffer, SocketFlags.None, Ct);
            await socket.SendAsync(FrameCodec.EncodeFrame(new Welcome(ProtocolConstants.Version, "s", 1000, 10_000, ProtocolConstants.DefaultMaxFrame)), SocketFlags.None, Ct);
            await socket.ReceiveAsync(buffer.AsMemory(0, 1), SocketFlags.None, Ct);
            socket.LingerState = new LingerOption(true, 0);
            socket.Close();
        }, Ct);

        var client = await TatzelwurmClient.ConnectAsync(new ConnectionOptions { Server = $"127.0.0.1:{port}", Token = "t" }, Ct);
        // Larger than the socket buffers take: most of it is still in the client's pipe at the reset.
        var add = client.AddAsync(new byte[12 * 1024 * 1024], "t", cancellationToken: Ct);
        await peer;
        await Assert.ThrowsAsync<ConnectionLostException>(() => add);

        await client.DisposeAsync();
    }
}
