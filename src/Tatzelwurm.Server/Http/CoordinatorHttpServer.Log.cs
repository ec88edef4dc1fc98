using Microsoft.Extensions.Logging;

namespace Tatzelwurm.Server.Http;

public sealed partial class CoordinatorHttpServer
{
    private static readonly Func<ILogger, long, IDisposable?> TaskScope = LoggerMessage.DefineScope<long>("task {TaskId}");

    private static readonly Func<ILogger, string, IDisposable?> WorkerScope = LoggerMessage.DefineScope<string>("worker {WorkerId}");

    [LoggerMessage(Level = LogLevel.Information, Message = "dashboard, metrics and health on {Url}")]
    private static partial void LogListening(ILogger logger, string url);

    [LoggerMessage(Level = LogLevel.Warning, Message = "the HTTP endpoint listens on {Address}, not on loopback: anyone who reaches it can read task metadata (actions still need the token)")]
    private static partial void LogNotLoopback(ILogger logger, string address);

    [LoggerMessage(Level = LogLevel.Information, Message = "dashboard action {Action} on {Target}: {Outcome}")]
    private static partial void LogAction(ILogger logger, string action, string target, string outcome);

    [LoggerMessage(Level = LogLevel.Warning, Message = "dashboard action {Action} on {Target} from {Remote} refused: missing or wrong token")]
    private static partial void LogUnauthorized(ILogger logger, string action, string target, string remote);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Request}: the coordinator loop did not answer within {Seconds} s")]
    private static partial void LogLoopSlow(ILogger logger, string request, double seconds);
}
