using System.Collections.Concurrent;
using System.Globalization;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Tatzelwurm.LoadGen;

/// <summary>
/// RabbitMQ with the durability a task queue needs: a durable queue (deleted and declared anew per run),
/// persistent messages (delivery mode 2), publisher confirms awaited before a task counts as added,
/// manual acks after the task ran, prefetch = the worker's slots. Each submitter and worker has its own
/// connection, as separate processes would. Round trip is RPC-style: the submitter's exclusive reply
/// queue and a correlation id; the worker publishes the reply, then acks the task.
/// </summary>
public sealed class RabbitTarget(string host, int port, int serverPid) : ITarget
{
    private const string Queue = "tatzelwurm-bench";
    private readonly List<IConnection> _connections = [];
    private Workload _workload = Workload.Throughput;
    private Timeline _timeline = new(0);
    private byte[] _result = [];
    private long _done;
    private long _doneBase;

    public string Name => "rabbitmq";

    public string Store => "durable queue, persistent messages, publisher confirms";

    public int ServerPid => serverPid;

    private ConnectionFactory Factory(string name) => new()
    {
        HostName = host,
        Port = port,
        ClientProvidedName = name,
        AutomaticRecoveryEnabled = false,
    };

    public async Task PrepareAsync(Workload workload, Timeline timeline, CancellationToken cancellationToken)
    {
        _workload = workload;
        _timeline = timeline;
        _result = new byte[workload.ResultBytes];
        var admin = await ConnectAsync("loadgen-admin", cancellationToken);
        await using (var channel = await admin.CreateChannelAsync(cancellationToken: cancellationToken))
        {
            await channel.QueueDeleteAsync(Queue, ifUnused: false, ifEmpty: false, cancellationToken: cancellationToken);
            await channel.QueueDeclareAsync(Queue, durable: true, exclusive: false, autoDelete: false,
                arguments: workload.Priorities > 1 ? new Dictionary<string, object?> { ["x-max-priority"] = (byte)Math.Min(255, workload.Priorities) } : null,
                cancellationToken: cancellationToken);
        }

        if (workload.Prefill > 0)
        {
            await using var channel = await admin.CreateChannelAsync(ConfirmOptions, cancellationToken);
            var payload = workload.Payload(-1);
            var pending = new Queue<Task>();
            for (var i = 0; i < workload.Prefill; i++)
            {
                pending.Enqueue(channel.BasicPublishAsync("", Queue, false, Properties(workload, i, null), payload, cancellationToken).AsTask());
                if (pending.Count >= 1000)
                {
                    await pending.Dequeue();
                }
            }

            while (pending.Count > 0)
            {
                await pending.Dequeue();
            }
        }

        for (var i = 0; i < workload.Workers; i++)
        {
            await StartWorkerAsync(i, cancellationToken);
        }
    }

    public async Task SubmitAsync(CancellationToken cancellationToken)
    {
        var submitters = Enumerable.Range(0, _workload.Submitters).Select(k => SubmitterAsync(k, cancellationToken)).ToList();
        await Task.WhenAll(submitters);
    }

    public async Task WarmupAsync(int tasks, CancellationToken cancellationToken)
    {
        var measured = (_workload, _timeline);
        _workload = _workload with { Name = "warmup", Tasks = tasks, Unmeasured = true };
        _timeline = new Timeline(tasks);
        await SubmitAsync(cancellationToken);
        while (!WorkersDone())
        {
            await Task.Delay(5, cancellationToken);
        }

        (_workload, _timeline) = measured;
        _doneBase = Interlocked.Read(ref _done);
    }

    public bool WorkersDone() => Interlocked.Read(ref _done) - _doneBase >= _workload.Tasks;

    public async ValueTask DisposeAsync()
    {
        foreach (var connection in _connections)
        {
            try
            {
                await connection.CloseAsync(TimeSpan.FromSeconds(5));
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
            }

            connection.Dispose();
        }

        _connections.Clear();
        try
        {
            await using var admin = await Factory("loadgen-cleanup").CreateConnectionAsync();
            await using var channel = await admin.CreateChannelAsync();
            await channel.QueueDeleteAsync(Queue, ifUnused: false, ifEmpty: false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
        }
    }

    // Confirms are tracked by the client (BasicPublishAsync completes when the broker confirmed); our
    // own window limits what is in flight, so the client's limiter is set far above it and never throttles.
    private static CreateChannelOptions ConfirmOptions => new(
        publisherConfirmationsEnabled: true,
        publisherConfirmationTrackingEnabled: true,
        outstandingPublisherConfirmationsRateLimiter: new ThrottlingRateLimiter(100_000));

    private static BasicProperties Properties(Workload workload, int seq, string? replyTo) => new()
    {
        Persistent = true,
        Priority = (byte)workload.PriorityOf(Math.Max(seq, 0)),
        CorrelationId = replyTo is null ? null : seq.ToString(CultureInfo.InvariantCulture),
        ReplyTo = replyTo,
        Headers = workload.Tags > 0 ? new Dictionary<string, object?> { ["tags"] = string.Join(',', workload.TagsOf(seq)) } : null,
    };

    private async Task<IConnection> ConnectAsync(string name, CancellationToken cancellationToken)
    {
        var connection = await Factory(name).CreateConnectionAsync(cancellationToken);
        _connections.Add(connection);
        return connection;
    }

    private async Task StartWorkerAsync(int index, CancellationToken cancellationToken)
    {
        var connection = await ConnectAsync($"loadgen-worker-{index}", cancellationToken);
        // Sleeping tasks run concurrently up to the prefetch, as tatzelwurm's worker runs up to its slots.
        var channel = await connection.CreateChannelAsync(
            new CreateChannelOptions(false, false, consumerDispatchConcurrency: (ushort)(_workload.TaskMs > 0 ? _workload.Prefetch : 1)),
            cancellationToken);
        await channel.BasicQosAsync(0, (ushort)_workload.Prefetch, false, cancellationToken);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, delivery) =>
        {
            _timeline.MarkRun(Workload.SeqOf(delivery.Body.Span));
            if (_workload.TaskMs > 0)
            {
                await Task.Delay(_workload.TaskMs);
            }

            _timeline.MarkCompleted();
            if (delivery.BasicProperties.ReplyTo is { } replyTo)
            {
                await channel.BasicPublishAsync("", replyTo, false,
                    new BasicProperties { CorrelationId = delivery.BasicProperties.CorrelationId }, _result);
            }

            await channel.BasicAckAsync(delivery.DeliveryTag, false);
            Interlocked.Increment(ref _done);
        };
        await channel.BasicConsumeAsync(Queue, autoAck: false, consumer, cancellationToken);
    }

    private async Task SubmitterAsync(int index, CancellationToken cancellationToken)
    {
        var connection = await ConnectAsync($"loadgen-submitter-{index}", cancellationToken);
        await using var channel = await connection.CreateChannelAsync(ConfirmOptions, cancellationToken);
        var replies = new ConcurrentDictionary<int, TaskCompletionSource>();
        string? replyTo = null;
        if (_workload.WaitResults)
        {
            var declared = await channel.QueueDeclareAsync("", durable: false, exclusive: true, autoDelete: true, cancellationToken: cancellationToken);
            replyTo = declared.QueueName;
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += (_, delivery) =>
            {
                if (int.TryParse(delivery.BasicProperties.CorrelationId, NumberStyles.Integer, CultureInfo.InvariantCulture, out var seq)
                    && replies.TryRemove(seq, out var done))
                {
                    _timeline.MarkResult(seq);
                    done.TrySetResult();
                }

                return Task.CompletedTask;
            };
            await channel.BasicConsumeAsync(replyTo, autoAck: true, consumer, cancellationToken);
        }

        await _workload.LanesAsync(index, OneAsync);

        async Task OneAsync(int seq)
        {
            var reply = replyTo is null ? null : replies[seq] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _timeline.Sent[seq] = Timeline.Now;
            await channel.BasicPublishAsync("", Queue, false, Properties(_workload, seq, replyTo), _workload.Payload(seq), cancellationToken);
            _timeline.MarkAcked(seq);
            if (reply is not null)
            {
                await reply.Task.WaitAsync(cancellationToken);
            }
        }
    }
}
