using Tatzelwurm.Protocol;

namespace Tatzelwurm.Client;

/// <summary>
/// How to reach a coordinator. Resolution order: <see cref="Server"/>/<see cref="Token"/>, then the
/// environment (TATZELWURM_SERVER, TATZELWURM_TOKEN), then the files a local coordinator writes in its
/// data directory (<see cref="DataDirectory"/>, TATZELWURM_DATA, or the per-user default).
/// </summary>
public sealed record ConnectionOptions
{
    /// <summary>Defaults: resolve everything from the environment or the default data directory.</summary>
    public static readonly ConnectionOptions Default = new();

    /// <summary>host:port of the coordinator.</summary>
    public string? Server { get; init; }

    /// <summary>The coordinator's auth token.</summary>
    public string? Token { get; init; }

    /// <summary>A local coordinator's data directory, to read its address and token from.</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Free text sent in the handshake, shown in the coordinator's logs.</summary>
    public string ClientName { get; init; } = "tatzelwurm-dotnet";

    /// <summary>Limit for establishing the TCP connection and the handshake.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Frames larger than this are refused when received.</summary>
    public int MaxFrame { get; init; } = ProtocolConstants.DefaultMaxFrame;

    /// <summary>
    /// Resolves the address and token, or throws with what is missing (<see cref="InvalidOperationException"/>)
    /// or malformed (<see cref="FormatException"/>).
    /// </summary>
    public (string Host, int Port, string Token) Resolve()
    {
        var dataDir = Protocol.DataDirectory.Resolve(DataDirectory);
        var server = Server ?? Environment.GetEnvironmentVariable(Protocol.DataDirectory.ServerEnv) ?? Protocol.DataDirectory.ReadAddress(dataDir)
            ?? throw new InvalidOperationException($"no coordinator address: pass --server, set {Protocol.DataDirectory.ServerEnv}, or start a coordinator with data in {dataDir}");
        var token = Token ?? Environment.GetEnvironmentVariable(Protocol.DataDirectory.TokenEnv) ?? Protocol.DataDirectory.ReadToken(dataDir)
            ?? throw new InvalidOperationException($"no token: pass --token, set {Protocol.DataDirectory.TokenEnv}, or read it from {Path.Combine(dataDir, Protocol.DataDirectory.TokenFile)}");
        var colon = server.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(server.AsSpan(colon + 1), System.Globalization.CultureInfo.InvariantCulture, out var port))
        {
            // Not InvalidOperationException, which a worker takes as "not yet" (no address file while its
            // coordinator starts) and waits out: a malformed address never becomes a good one.
            throw new FormatException($"coordinator address '{server}' is not host:port");
        }

        return (server[..colon].Trim('[', ']'), port, token);
    }
}
