using Xunit;

namespace Tatzelwurm.Protocol.Tests;

public class GoldenVectorTests
{
    public static TheoryData<string> Names => new(GoldenVectors.All.Select(v => v.Name));

    [Fact]
    public void GoldenVectors_CoverEveryMessageType()
    {
        var covered = GoldenVectors.All.Select(v => v.Message.GetType()).ToHashSet();
        var all = typeof(IMessage).Assembly.GetTypes().Where(t => t.IsClass && typeof(IMessage).IsAssignableFrom(t));
        Assert.Empty(all.Where(t => !covered.Contains(t)).Select(t => t.Name));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void GoldenFrame_DecodesAndReencodesByteForByte(string name)
    {
        var message = GoldenVectors.All.Single(v => v.Name == name).Message;
        var path = Path.Combine(RepoPaths.Golden, name + ".hex");
        var encoded = FrameCodec.EncodeFrame(message);
        if (Environment.GetEnvironmentVariable("TATZELWURM_WRITE_GOLDEN") == "1")
        {
            Directory.CreateDirectory(RepoPaths.Golden);
            File.WriteAllText(path, Convert.ToHexStringLower(encoded) + "\n");
        }

        var golden = Convert.FromHexString(File.ReadAllText(path).Trim());
        Assert.Equal(golden, encoded);

        var decoded = FrameCodec.DecodeFrame(golden);
        Assert.Equal(message.GetType(), decoded.GetType());
        Assert.Equal(golden, FrameCodec.EncodeFrame(decoded));
    }

    // Frames from peers that predate the batched worker messages: the arrays lack the trailing Batches
    // key, and MessagePack's contract must still read them (as false) rather than refuse them.
    [Fact]
    public void OldShapeRegisterWorker_DecodesWithoutBatches()
    {
        var frame = Convert.FromHexString(File.ReadAllText(Path.Combine(RepoPaths.Golden, "decode-only", "register_worker_6_fields.hex")).Trim());
        var register = Assert.IsType<RegisterWorker>(FrameCodec.DecodeFrame(frame));
        Assert.Equal((1u, "host-1234-ab12", "host", 4, 2, false), (register.RequestId, register.WorkerId, register.Name, register.Slots, register.Held.Count, register.Batches));
        Assert.Equal(["async", "sync"], register.Types);
    }

    [Fact]
    public void OldShapeWorkerRegistered_DecodesWithoutBatches()
    {
        var frame = Convert.FromHexString(File.ReadAllText(Path.Combine(RepoPaths.Golden, "decode-only", "worker_registered_2_fields.hex")).Trim());
        var registered = Assert.IsType<WorkerRegistered>(FrameCodec.DecodeFrame(frame));
        Assert.Equal((1u, false), (registered.RequestId, registered.Batches));
        Assert.Equal([43L], registered.Drop);
    }

    [Fact]
    public void AddTasks_TypesAndTagsOfSeparateTasks_DecodeToOneInstanceEach()
    {
        var frame = FrameCodec.EncodeFrame(new AddTasks(1, [
            new TaskSpec([], "bench", 0, ["gpu", "site:a"], DeliveryPolicy.Default, true, false),
            new TaskSpec([], "bench", 0, ["site:a"], DeliveryPolicy.Default, true, false),
            new TaskSpec([], "other", 0, [], DeliveryPolicy.Default, true, false),
        ]));

        var tasks = Assert.IsType<AddTasks>(FrameCodec.DecodeFrame(frame)).Tasks;
        var again = Assert.IsType<AddTasks>(FrameCodec.DecodeFrame(frame)).Tasks;

        Assert.Equal(["bench", "bench", "other"], tasks.Select(t => t.Type));
        Assert.Equal([["gpu", "site:a"], ["site:a"], []], tasks.Select(t => t.Tags));
        Assert.Same(tasks[0].Type, tasks[1].Type);
        Assert.Same(tasks[0].Type, again[0].Type);
        Assert.Same(tasks[0].Tags[1], tasks[1].Tags[0]);
    }

    [Fact]
    public void AddTasks_NilTags_DecodeAsNil()
    {
        var frame = FrameCodec.EncodeFrame(new AddTasks(1, [new TaskSpec([], "bench", 0, null!, DeliveryPolicy.Default, true, false)]));

        Assert.Null(Assert.IsType<AddTasks>(FrameCodec.DecodeFrame(frame)).Tasks[0].Tags);
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void TryWriteFrame_WritesWhatEncodeFrameEncodes(string name)
    {
        var message = GoldenVectors.All.Single(v => v.Name == name).Message;
        var writer = new System.Buffers.ArrayBufferWriter<byte>();

        // Twice into one writer: the second frame must not carry anything of the first (the encoder
        // reuses its buffer).
        Assert.True(FrameCodec.TryWriteFrame(writer, message, int.MaxValue, out var length));
        Assert.True(FrameCodec.TryWriteFrame(writer, message, length, out _));

        var frame = FrameCodec.EncodeFrame(message);
        Assert.Equal(frame.Length - ProtocolConstants.HeaderSize, length);
        Assert.Equal([.. frame, .. frame], writer.WrittenSpan.ToArray());
    }

    [Fact]
    public void TryWriteFrame_BodyOverTheLimit_WritesNothingAndSaysHowLong()
    {
        var message = new AddTasks(7, [new TaskSpec(new byte[5000], "bench", 0, [], DeliveryPolicy.Default, true, false)]);
        var writer = new System.Buffers.ArrayBufferWriter<byte>();

        Assert.False(FrameCodec.TryWriteFrame(writer, message, 4096, out var length));

        Assert.Equal(0, writer.WrittenCount);
        Assert.Equal(FrameCodec.EncodeBody(message).Length, length);
    }
}
