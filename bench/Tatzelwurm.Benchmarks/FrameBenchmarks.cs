using System.Buffers;
using BenchmarkDotNet.Attributes;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Benchmarks;

/// <summary>Encoding and decoding the frames of the hot path: add, its reply, an assignment, a report.</summary>
[MemoryDiagnoser]
public class FrameBenchmarks
{
    private readonly ArrayBufferWriter<byte> _buffer = new(64 * 1024);
    private IMessage _message = null!;
    private byte[] _frame = [];

    [Params("AddTasks", "TasksAdded", "AssignTask", "TaskUpdate")]
    public string Message { get; set; } = "AddTasks";

    [GlobalSetup]
    public void Setup()
    {
        var payload = new byte[200];
        Random.Shared.NextBytes(payload);
        _message = Message switch
        {
            "AddTasks" => new AddTasks(42, [new TaskSpec(payload, "bench", 0, ["site:a"], DeliveryPolicy.Default, true, false)]),
            "TasksAdded" => new TasksAdded(42, [123_456]),
            "AssignTask" => new AssignTask(123_456, "bench", payload, 1, false),
            "TaskUpdate" => new TaskUpdate(42, 123_456, TaskUpdateKind.Finished, 0, new byte[16], null),
            _ => throw new ArgumentException(Message),
        };
        _frame = FrameCodec.EncodeFrame(_message);
    }

    [Benchmark]
    public int Encode()
    {
        _buffer.ResetWrittenCount();
        FrameCodec.WriteFrame(_buffer, _message);
        return _buffer.WrittenCount;
    }

    [Benchmark]
    public IMessage Decode()
    {
        var sequence = new ReadOnlySequence<byte>(_frame);
        FrameCodec.TryReadFrame(ref sequence, ProtocolConstants.DefaultMaxFrame, out var body, out _);
        return FrameCodec.Decode(body);
    }
}
