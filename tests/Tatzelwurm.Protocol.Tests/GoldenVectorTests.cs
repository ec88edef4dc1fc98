using Tatzelwurm.Protocol;
using Xunit;

namespace Tatzelwurm.Protocol.Tests;

public class GoldenVectorTests
{
    [Fact]
    public void Hello_RoundTrips()
    {
        var hello = new Hello(1, Roles.Worker, "tok", "test");
        var frame = FrameCodec.EncodeFrame(hello);
        var back = FrameCodec.DecodeFrame(frame);
        Assert.Equal(hello, back);
        var reg = new RegisterWorker(3, "w", "n", ["a", "b"], 4, [new HeldTask(5, true)]);
        var back2 = (RegisterWorker)FrameCodec.DecodeFrame(FrameCodec.EncodeFrame(reg));
        Assert.Equal(reg.Types, back2.Types);
        Assert.Equal(reg.Held[0], back2.Held[0]);
    }
}
