using Tatzelwurm.Protocol;

namespace Tatzelwurm.Server.Http;

/// <summary>
/// The dashboard's actions (play, pause, kill, drain) as protocol requests on one shared in-process
/// connection (see <see cref="LocalConnection"/> for why). The connection opens on first use and is
/// reopened for the next request if it was lost; a request whose connection is lost mid-flight is
/// not retried (the change may or may not have been applied) but reported as unavailable.
/// </summary>
internal sealed class LocalActioner(Func<CancellationToken, Task<LocalConnection>> connect) : IAsyncDisposable
{
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stopping = new();
    private Task<LocalConnection>? _connection;
    private bool _disposed;

    public async Task<IMessage> RequestAsync(Func<uint, IRequest> create, CancellationToken cancellationToken)
    {
        Task<LocalConnection> connection;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_connection is null || _connection.IsFaulted || _connection.IsCanceled
                || (_connection.IsCompletedSuccessfully && _connection.Result.Closed.IsCompleted))
            {
                if (_connection is { IsCompletedSuccessfully: true } old)
                {
                    _ = old.Result.DisposeAsync().AsTask();
                }

                _connection = connect(_stopping.Token);
            }

            connection = _connection;
        }

        return await (await connection.WaitAsync(cancellationToken)).RequestAsync(create, cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        Task<LocalConnection>? connection;
        lock (_lock)
        {
            _disposed = true;
            connection = _connection;
            _connection = null;
        }

        await _stopping.CancelAsync();
        if (connection is not null)
        {
            try
            {
                await (await connection).DisposeAsync();
            }
            catch (Exception ex) when (ex is ConnectionClosedException or OperationCanceledException)
            {
            }
        }

        _stopping.Dispose();
    }
}
