using System.Data;
using System.Globalization;
using System.Text;
using Tatzelwurm.Client;

namespace Tatzelwurm.Workwurm;

/// <summary>Runs the mock tasks; sleeps honour pause (at 50 ms checkpoints) and kill.</summary>
internal static class MockRunner
{
    private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(50);

    public static async Task<TaskOutcomeReport> RunAsync(AssignedTask task, TaskControl control)
    {
        MockTask mock;
        try
        {
            mock = MockTask.FromPayload(task.Payload);
        }
        catch (FormatException ex)
        {
            return TaskOutcomeReport.Failed(2, ex.Message);
        }

        switch (mock.Kind)
        {
            case MockKind.Sleep:
                for (var left = mock.Duration; left > TimeSpan.Zero; left -= Step)
                {
                    await control.WaitWhilePausedAsync();
                    await Task.Delay(left < Step ? left : Step, control.Killed);
                }

                return TaskOutcomeReport.Completed();
            case MockKind.Block:
                // A real blocking sleep on a thread of its own: it must not hold up the worker's
                // event loop or its heartbeats.
                await Task.Factory.StartNew(() =>
                {
                    for (var left = mock.Duration; left > TimeSpan.Zero; left -= Step)
                    {
                        control.WaitWhilePaused();
                        Thread.Sleep(left < Step ? left : Step);
                        control.Killed.ThrowIfCancellationRequested();
                    }
                }, control.Killed, TaskCreationOptions.LongRunning, TaskScheduler.Default);
                return TaskOutcomeReport.Completed();
            case MockKind.Eval:
                // DataTable.Compute is the framework's expression evaluator: arithmetic, comparison, parentheses.
                try
                {
                    using var table = new DataTable { Locale = CultureInfo.InvariantCulture };
                    var value = Convert.ToString(table.Compute(mock.Expression, null), CultureInfo.InvariantCulture) ?? "";
                    return TaskOutcomeReport.Completed(Encoding.UTF8.GetBytes(value));
                }
                catch (Exception ex) when (ex is EvaluateException or SyntaxErrorException or InvalidCastException or OverflowException or DivideByZeroException)
                {
                    return TaskOutcomeReport.Failed(3, $"cannot evaluate '{mock.Expression}': {ex.Message}");
                }

            default:
                return TaskOutcomeReport.Failed(mock.ExitCode, $"mock failure with exit code {mock.ExitCode}");
        }
    }
}
