using Xunit.Sdk;
using Xunit.v3;

// Each test runs several processes on timing-sensitive settings (heartbeat 200 ms, lease 1 s); run
// them one at a time so one test's start-up load cannot starve another's heartbeats.
[assembly: Parallelization(Mode = ParallelMode.None)]
