namespace Tatzelwurm.EndToEnd.Tests.Fixtures;

/// <summary>
/// Where the three programs were built. With UseArtifactsOutput every project lands in
/// artifacts/bin/&lt;Project&gt;/&lt;pivot&gt;/, and this test assembly runs from its own such folder, so the
/// programs are its siblings under the same pivot (e.g. "debug"). The project references in the
/// csproj make sure they are built before the tests run.
/// </summary>
internal static class Apps
{
    public static string Coordinator { get; } = Locate("Tatzelwurm", "tatzelwurm");

    public static string Worker { get; } = Locate("Workwurm", "workwurm");

    public static string Actioner { get; } = Locate("Actionwurm", "actionwurm");

    /// <summary>The dotnet host that runs this test process (the CLI exports it), else dotnet on the PATH.</summary>
    public static string DotnetHost { get; } =
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";

    private static string Locate(string project, string assembly)
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var pivot = here.Name;
        var bin = here.Parent?.Parent
            ?? throw new InvalidOperationException($"cannot find artifacts/bin above {AppContext.BaseDirectory}");
        var dll = Path.Combine(bin.FullName, project, pivot, assembly + ".dll");
        return File.Exists(dll)
            ? dll
            : throw new InvalidOperationException(
                $"{dll} does not exist. Build the solution first (dotnet build Tatzelwurm.sln, same configuration as the tests).");
    }
}
