using Tatzelwurm.Protocol;

namespace Tatzelwurm.Client;

/// <summary>
/// The coordinator answered with a typed error (docs/protocol.md §4), or the client refused to send what
/// the coordinator would refuse by closing the connection (<see cref="ErrorCode.FrameTooLarge"/>).
/// </summary>
public class TatzelwurmException(ErrorCode code, string message) : Exception(message)
{
    /// <summary>The wire error code.</summary>
    public ErrorCode Code { get; } = code;
}

/// <summary>The connection to the coordinator is gone; outstanding requests fail with this.</summary>
public sealed class ConnectionLostException(string message, Exception? inner = null) : Exception(message, inner);
