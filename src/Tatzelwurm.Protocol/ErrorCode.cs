namespace Tatzelwurm.Protocol;

/// <summary>
/// Typed error codes carried by <see cref="ErrorReply"/>. The numeric values are part of the wire
/// contract (docs/protocol.md) and must never change.
/// </summary>
public enum ErrorCode
{
    /// <summary>The frame could not be read: zero length, truncated or not MessagePack.</summary>
    BadFrame = 1,
    /// <summary>The client speaks a protocol version the coordinator does not.</summary>
    UnsupportedVersion = 2,
    /// <summary>The auth token is wrong.</summary>
    AuthFailed = 3,
    /// <summary>The message is not allowed for the role declared in the handshake.</summary>
    NotAllowedForRole = 4,
    /// <summary>The message type is unknown to this coordinator.</summary>
    UnknownMessage = 5,
    /// <summary>The request is malformed (a missing or out-of-range field).</summary>
    InvalidRequest = 6,
    /// <summary>No task has that id.</summary>
    UnknownTask = 7,
    /// <summary>The task's state does not allow the requested transition; nothing changed.</summary>
    IllegalTransition = 8,
    /// <summary>No worker has that id or name.</summary>
    UnknownWorker = 9,
    /// <summary>The store could not persist the change; it was not acknowledged.</summary>
    StoreUnavailable = 10,
    /// <summary>No client holds the RPC identifier called.</summary>
    Unroutable = 11,
    /// <summary>The recipient went away before it answered.</summary>
    DeliveryFailed = 12,
    /// <summary>The identifier is already registered.</summary>
    DuplicateIdentifier = 13,
    /// <summary>The identifier is not registered by this connection.</summary>
    UnknownIdentifier = 14,
    /// <summary>The first frame was not a Hello.</summary>
    HandshakeRequired = 15,
    /// <summary>The frame's declared length exceeds the coordinator's maximum.</summary>
    FrameTooLarge = 16,
    /// <summary>A bug in the coordinator; details are in its log, not on the wire.</summary>
    Internal = 17,
    /// <summary>The coordinator is shutting down.</summary>
    ShuttingDown = 18,
    /// <summary>The connection could not keep up with its deliveries and is being closed.</summary>
    Overloaded = 19,
}
