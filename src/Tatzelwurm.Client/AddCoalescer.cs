using Tatzelwurm.Protocol;

namespace Tatzelwurm.Client;

/// <summary>
/// Turns concurrent adds on one connection into as few AddTasks requests as the write loop allows.
/// Calls queue here; the first call to find nothing scheduled asks the write loop to drain the queue,
/// so a lone add goes out as soon as the write loop runs and adds arriving while it is busy (writing,
/// flushing, not yet woken) go out together in one frame. No call waits for an earlier reply. Each
/// caller gets its own slice of the ids: the coordinator answers them in request order.
/// </summary>
internal sealed class AddCoalescer
{
    /// <summary>
    /// Tasks per coalesced request. The coordinator has no count limit, but it applies one AddTasks in
    /// one step of its single loop, so an unbounded batch would stall everyone else's commands.
    /// A single call with more tasks is still sent whole, as the caller asked.
    /// </summary>
    internal const int MaxBatchTasks = 1000;

    private readonly Connection _connection;
    private readonly Func<IRequest?> _next;
    private readonly Lock _lock = new();
    private readonly Queue<AddCall> _queue = new();
    private readonly int _maxFrame;
    private bool _scheduled;
    private bool _closed;

    public AddCoalescer(Connection connection)
    {
        _connection = connection;
        _maxFrame = connection.Welcome.MaxFrame;
        _next = Next;
        // Calls still queued when the write loop stopped would otherwise wait for ever.
        connection.Closed.Register(FailQueued);
    }

    public Task<IReadOnlyList<long>> AddAsync(IReadOnlyList<TaskSpec> tasks, CancellationToken cancellationToken)
    {
        var call = Enqueue(tasks, cancellationToken);
        return cancellationToken.CanBeCanceled && !call.Done.Task.IsCompleted ? WaitAsync(call, cancellationToken) : call.Done.Task;
    }

    /// <summary>One task: the same as <see cref="AddAsync"/>, with one state machine for the wait and the id.</summary>
    public async Task<long> AddOneAsync(TaskSpec task, CancellationToken cancellationToken)
    {
        var call = Enqueue([task], cancellationToken);
        if (!cancellationToken.CanBeCanceled || call.Done.Task.IsCompleted)
        {
            return (await call.Done.Task)[0];
        }

        await using var registration = Cancel(call, cancellationToken);
        return (await call.Done.Task)[0];
    }

    // Queues a call, or returns it already failed (cancelled, or the connection closed) without queueing it.
    private AddCall Enqueue(IReadOnlyList<TaskSpec> tasks, CancellationToken cancellationToken)
    {
        var call = new AddCall(tasks, EstimateBytes(tasks));
        if (cancellationToken.IsCancellationRequested)
        {
            call.Done.TrySetCanceled(cancellationToken);
            return call;
        }

        bool schedule;
        lock (_lock)
        {
            if (_closed)
            {
                call.Done.TrySetException(_connection.Lost());
                return call;
            }

            _queue.Enqueue(call);
            schedule = !_scheduled;
            _scheduled = true;
        }

        if (schedule)
        {
            try
            {
                _connection.SendFrom(_next);
            }
            catch (ConnectionLostException)
            {
                FailQueued();
            }
        }

        return call;
    }

    private static async Task<IReadOnlyList<long>> WaitAsync(AddCall call, CancellationToken cancellationToken)
    {
        await using var registration = Cancel(call, cancellationToken);
        return await call.Done.Task;
    }

    // A call cancelled while queued is skipped by Next, so its tasks are not added. Once its request is
    // written, cancelling only stops the wait (as for any request): the tasks may still be added.
    private static CancellationTokenRegistration Cancel(AddCall call, CancellationToken cancellationToken) =>
        cancellationToken.Register(static (state, token) => ((AddCall)state!).Done.TrySetCanceled(token), call);

    /// <summary>Runs on the connection's write loop: the next request to write, or null once the queue is empty.</summary>
    private AddTasks? Next()
    {
        var batch = new List<AddCall>();
        var count = 0;
        lock (_lock)
        {
            var bytes = WireSize.Envelope;
            while (_queue.TryPeek(out var call))
            {
                if (call.Done.Task.IsCompleted)
                {
                    // Cancelled before it was sent.
                    _queue.Dequeue();
                    continue;
                }

                // Another call joins only within the coordinator's frame limit (Welcome.max_frame, which
                // it enforces by closing the connection) and the batch bound; the first always goes.
                if (batch.Count > 0 && (count + call.Tasks.Count > MaxBatchTasks || bytes + call.Bytes > _maxFrame))
                {
                    break;
                }

                _queue.Dequeue();
                batch.Add(call);
                count += call.Tasks.Count;
                bytes += call.Bytes;
            }

            if (batch.Count == 0)
            {
                _scheduled = false;
                return null;
            }
        }

        IReadOnlyList<TaskSpec> specs;
        if (batch.Count == 1)
        {
            specs = batch[0].Tasks;
        }
        else
        {
            var all = new List<TaskSpec>(count);
            foreach (var call in batch)
            {
                all.AddRange(call.Tasks);
            }

            specs = all;
        }

        return new AddTasks(_connection.Register(new AddBatch(this, batch, count)), specs);
    }

    private void FailQueued()
    {
        List<AddCall> failed;
        lock (_lock)
        {
            _closed = true;
            failed = [.. _queue];
            _queue.Clear();
        }

        if (failed.Count > 0)
        {
            var lost = _connection.Lost();
            foreach (var call in failed)
            {
                call.Done.TrySetException(lost);
            }
        }
    }

    private async Task AddAloneAsync(AddCall call)
    {
        try
        {
            var added = await _connection.RequestAsync<TasksAdded>(id => new AddTasks(id, call.Tasks));
            call.Done.TrySetResult(added.Ids);
        }
        catch (Exception ex) when (ex is TatzelwurmException or ConnectionLostException)
        {
            call.Done.TrySetException(ex);
        }
    }

    private static int EstimateBytes(IReadOnlyList<TaskSpec> tasks)
    {
        long bytes = 0;
        foreach (var spec in tasks)
        {
            bytes += WireSize.Spec(spec);
        }

        return (int)Math.Min(bytes, int.MaxValue);
    }

    private sealed class AddCall(IReadOnlyList<TaskSpec> tasks, int bytes)
    {
        public IReadOnlyList<TaskSpec> Tasks { get; } = tasks;

        public int Bytes { get; } = bytes;

        public TaskCompletionSource<IReadOnlyList<long>> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class AddBatch(AddCoalescer owner, List<AddCall> calls, int count) : PendingReply
    {
        public override void Complete(IReply reply)
        {
            switch (reply)
            {
                case TasksAdded added when added.Ids?.Count == count:
                    Distribute(added.Ids);
                    break;
                case ErrorReply { Code: ErrorCode.InvalidRequest } when calls.Count > 1:
                    // One caller's bad spec refuses the whole request. The coordinator validates every
                    // spec before it adds any (Coordinator.AddTasks), so nothing of it was added: each
                    // caller's tasks are sent again on their own and only the bad ones are refused.
                    foreach (var call in calls)
                    {
                        if (!call.Done.Task.IsCompleted)
                        {
                            _ = owner.AddAloneAsync(call);
                        }
                    }

                    break;
                case ErrorReply error:
                    // StoreUnavailable refuses each caller's add alike; anything else is not safe to resend.
                    Fail(new TatzelwurmException(error.Code, error.Message));
                    break;
                case TasksAdded added:
                    Fail(new TatzelwurmException(ErrorCode.InvalidRequest, $"the coordinator answered {added.Ids?.Count ?? 0} ids for {count} tasks"));
                    break;
                default:
                    Fail(new TatzelwurmException(ErrorCode.InvalidRequest, $"unexpected reply {reply.GetType().Name}"));
                    break;
            }
        }

        public override void Fail(Exception error)
        {
            foreach (var call in calls)
            {
                call.Done.TrySetException(error);
            }
        }

        private void Distribute(IReadOnlyList<long> ids)
        {
            if (calls.Count == 1)
            {
                calls[0].Done.TrySetResult(ids);
                return;
            }

            var offset = 0;
            foreach (var call in calls)
            {
                var own = new long[call.Tasks.Count];
                for (var i = 0; i < own.Length; i++)
                {
                    own[i] = ids[offset + i];
                }

                offset += own.Length;
                call.Done.TrySetResult(own);
            }
        }
    }
}
