using System.Runtime.CompilerServices;

namespace Tatzelwurm.Storage.Tests;

internal static class SqliteSetup
{
    // As in the coordinator, the store configures SQLite before anything else in the process opens
    // it; tests that open SQLite directly (to damage a file) must not get there first.
    [ModuleInitializer]
    internal static void ConfigureSqliteFirst() => RuntimeHelpers.RunClassConstructor(typeof(SqliteTaskStore).TypeHandle);
}
