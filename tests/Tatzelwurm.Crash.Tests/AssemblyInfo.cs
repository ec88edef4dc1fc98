using Xunit.Sdk;
using Xunit.v3;

// A crash run owns the machine's attention: one coordinator, its clients and a kill schedule.
[assembly: Parallelization(Mode = ParallelMode.None)]
