using System.Text.RegularExpressions;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server;

/// <summary>
/// RPC routing and broadcast fan-out. Owned by the coordinator loop like the tables (no locks); nothing
/// here is persisted. Every method returns the frames to send, in order.
/// </summary>
internal sealed class Messaging
{
    private static readonly TimeSpan RegexTimeout = TimeSpan.FromMilliseconds(100);

    private readonly Dictionary<(string Namespace, string Identifier), Session> _rpc = [];
    private readonly Dictionary<long, PendingCall> _calls = [];
    private readonly Dictionary<string, List<Subscription>> _subscriptions = new(StringComparer.Ordinal);
    private long _nextCallId;

    private sealed record PendingCall(Session Caller, uint RequestId, Session Recipient)
    {
        public int Layers { get; set; }
    }

    private sealed record Subscription(Session Session, string Id, Regex? Sender, Regex? Subject);

    public int RpcCount => _rpc.Count;

    public IEnumerable<Effect> Register(Session session, RpcRegister request)
    {
        if (!_rpc.TryAdd((request.Namespace, request.Identifier), session))
        {
            yield return Error(session, request.RequestId, ErrorCode.DuplicateIdentifier, $"RPC identifier '{request.Identifier}' is already registered");
            yield break;
        }

        yield return new Effect(session, new OkReply(request.RequestId), EffectKind.Plain);
    }

    public IEnumerable<Effect> Unregister(Session session, RpcUnregister request)
    {
        var key = (request.Namespace, request.Identifier);
        if (!_rpc.TryGetValue(key, out var holder) || holder != session)
        {
            yield return Error(session, request.RequestId, ErrorCode.UnknownIdentifier, $"RPC identifier '{request.Identifier}' is not registered by this connection");
            yield break;
        }

        _rpc.Remove(key);
        yield return new Effect(session, new OkReply(request.RequestId), EffectKind.Plain);
    }

    public IEnumerable<Effect> Call(Session caller, RpcCall request)
    {
        if (!_rpc.TryGetValue((request.Namespace, request.Identifier), out var recipient))
        {
            yield return Error(caller, request.RequestId, ErrorCode.Unroutable, $"no recipient holds RPC identifier '{request.Identifier}'");
            yield break;
        }

        var callId = ++_nextCallId;
        _calls[callId] = new PendingCall(caller, request.RequestId, recipient);
        yield return new Effect(recipient, new RpcDelivery(callId, request.Namespace, request.Identifier, request.Payload ?? []), EffectKind.Plain);
    }

    public IEnumerable<Effect> Respond(Session recipient, RpcResponse response)
    {
        if (!_calls.TryGetValue(response.CallId, out var call) || call.Recipient != recipient)
        {
            // The caller left, or a stale id: nobody is waiting for this answer.
            yield break;
        }

        switch (response.Kind)
        {
            case RpcResponseKind.Pending:
                call.Layers++;
                yield return new Effect(call.Caller, new RpcLayer(call.RequestId, call.Layers), EffectKind.Plain);
                break;
            case RpcResponseKind.Value or RpcResponseKind.Error:
                _calls.Remove(response.CallId);
                var ok = response.Kind == RpcResponseKind.Value;
                yield return new Effect(call.Caller,
                    new RpcResult(call.RequestId, ok, ok ? response.Payload ?? [] : null, ok ? null : response.Error ?? "", call.Layers), EffectKind.Plain);
                break;
            default:
                // The coordinator refuses unknown kinds (and closes the connection) before routing.
                throw new ArgumentOutOfRangeException(nameof(response), response.Kind, "unknown RPC response kind");
        }
    }

    public IEnumerable<Effect> Subscribe(Session session, Subscribe request)
    {
        var list = _subscriptions.TryGetValue(request.Namespace, out var l) ? l : _subscriptions[request.Namespace] = [];
        if (list.Any(s => s.Session == session && s.Id == request.Subscription))
        {
            return [Error(session, request.RequestId, ErrorCode.DuplicateIdentifier, $"subscription '{request.Subscription}' already exists")];
        }

        Regex? sender, subject;
        try
        {
            sender = Compile(request.Sender);
            subject = Compile(request.Subject);
        }
        catch (ArgumentException ex)
        {
            return [Error(session, request.RequestId, ErrorCode.InvalidRequest, $"bad filter: {ex.Message}")];
        }

        list.Add(new Subscription(session, request.Subscription, sender, subject));
        return [new Effect(session, new OkReply(request.RequestId), EffectKind.Plain)];
    }

    public IEnumerable<Effect> Unsubscribe(Session session, Unsubscribe request)
    {
        if (!_subscriptions.TryGetValue(request.Namespace, out var list)
            || list.RemoveAll(s => s.Session == session && s.Id == request.Subscription) == 0)
        {
            return [Error(session, request.RequestId, ErrorCode.UnknownIdentifier, $"no subscription '{request.Subscription}'")];
        }

        return [new Effect(session, new OkReply(request.RequestId), EffectKind.Plain)];
    }

    /// <summary>Fans a broadcast out: one delivery per connection, naming each of its subscriptions that matched.</summary>
    public IEnumerable<Effect> Broadcast(Session sender, Broadcast request)
    {
        var effects = new List<Effect>();
        if (_subscriptions.TryGetValue(request.Namespace, out var list))
        {
            foreach (var group in list.Where(s => Passes(s.Sender, request.Sender) && Passes(s.Subject, request.Subject)).GroupBy(s => s.Session))
            {
                effects.Add(new Effect(group.Key,
                    new BroadcastDelivery(group.Select(s => s.Id).ToList(), request.Namespace, request.Body ?? [], request.Sender, request.Subject, request.CorrelationId),
                    EffectKind.Plain));
            }
        }

        effects.Add(new Effect(sender, new OkReply(request.RequestId), EffectKind.Plain));
        return effects;
    }

    /// <summary>Forgets a closed connection: its identifiers and subscriptions go, and its callers hear DeliveryFailed.</summary>
    public IEnumerable<Effect> Remove(Session session)
    {
        foreach (var key in _rpc.Where(kv => kv.Value == session).Select(kv => kv.Key).ToList())
        {
            _rpc.Remove(key);
        }

        foreach (var list in _subscriptions.Values)
        {
            list.RemoveAll(s => s.Session == session);
        }

        var effects = new List<Effect>();
        foreach (var (callId, call) in _calls.Where(kv => kv.Value.Recipient == session || kv.Value.Caller == session).ToList())
        {
            _calls.Remove(callId);
            if (call.Caller != session)
            {
                effects.Add(Error(call.Caller, call.RequestId, ErrorCode.DeliveryFailed, "the RPC recipient disconnected before answering"));
            }
        }

        return effects;
    }

    // kiwipy's BroadcastFilter: matched at the start of the value; a missing value passes every filter.
    internal static bool Passes(Regex? filter, string? value)
    {
        if (filter is null || value is null)
        {
            return true;
        }

        try
        {
            return filter.IsMatch(value);
        }
        catch (RegexMatchTimeoutException)
        {
            return false;
        }
    }

    internal static Regex? Compile(BroadcastFilter? filter) => filter switch
    {
        null => null,
        { Kind: FilterKind.Glob } => new Regex(@"\A" + string.Join(".*", filter.Pattern.Split('*').Select(Regex.Escape)), RegexOptions.CultureInvariant, RegexTimeout),
        { Kind: FilterKind.Regex } => new Regex(@"\A(?:" + filter.Pattern + ")", RegexOptions.CultureInvariant, RegexTimeout),
        _ => throw new ArgumentException($"unknown filter kind {(int)filter.Kind}"),
    };

    private static Effect Error(Session session, uint requestId, ErrorCode code, string message) =>
        new(session, new ErrorReply(requestId, code, message), EffectKind.Plain);
}
