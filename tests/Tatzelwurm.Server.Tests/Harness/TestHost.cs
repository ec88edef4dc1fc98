using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Tatzelwurm.Client;
using Tatzelwurm.Storage;
using Xunit;

namespace Tatzelwurm.Server.Tests.Harness;

/// <summary>
/// A real <see cref="CoordinatorHost"/> on 127.0.0.1:0 (the OS picks the port) over an
/// <see cref="InMemoryTaskStore"/>, with a <see cref="FakeTimeProvider"/> so that no lease, grace or
/// handshake timer runs unless a test advances it, and C# clients connected over TCP.
/// </summary>
internal sealed class TestHost : IAsyncDisposable
{
    private readonly List<IAsyncDisposable> _clients = [];

    private readonly bool _ownsDataDirectory;

    private TestHost(CoordinatorHost host, InMemoryTaskStore store, FakeTimeProvider time, string dataDirectory, bool ownsDataDirectory)
    {
        _ownsDataDirectory = ownsDataDirectory;
        Host = host;
        Store = store;
        Time = time;
        DataDirectory = dataDirectory;
    }

    public CoordinatorHost Host { get; }

    public InMemoryTaskStore Store { get; }

    public FakeTimeProvider Time { get; }

    public string DataDirectory { get; }

    public IPEndPoint EndPoint => Host.LocalEndPoint;

    /// <param name="dataDirectory">An existing data directory (and so the same token) to start on; the caller deletes it.</param>
    public static async Task<TestHost> StartAsync(Func<HostOptions, HostOptions>? configure = null, InMemoryTaskStore? store = null, string? dataDirectory = null)
    {
        var owns = dataDirectory is null;
        dataDirectory ??= Directory.CreateTempSubdirectory("tatzelwurm-server-tests-").FullName;
        var options = new HostOptions { DataDirectory = dataDirectory, Listen = new IPEndPoint(IPAddress.Loopback, 0) };
        options = configure?.Invoke(options) ?? options;
        store ??= new InMemoryTaskStore();
        var time = new FakeTimeProvider();
        var host = await CoordinatorHost.StartAsync(options, store, time, NullLoggerFactory.Instance, TestContext.Current.CancellationToken);
        return new TestHost(host, store, time, dataDirectory, owns);
    }

    /// <summary>How a client reaches this host (or, with <paramref name="via"/>, a proxy in front of it).</summary>
    public ConnectionOptions Connection(IPEndPoint? via = null, string name = "server-tests") => new()
    {
        Server = $"127.0.0.1:{(via ?? EndPoint).Port}",
        Token = Host.Token,
        ClientName = name,
    };

    public async Task<TatzelwurmClient> ClientAsync(string name = "server-tests")
    {
        var client = await TatzelwurmClient.ConnectAsync(Connection(name: name), TestContext.Current.CancellationToken);
        _clients.Add(client);
        return client;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var client in _clients)
        {
            await client.DisposeAsync();
        }

        await Host.DisposeAsync();
        if (!_ownsDataDirectory)
        {
            return;
        }

        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
