namespace Tatzelwurm.Protocol.Tests;

internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Golden => Path.Combine(Root, "protocol", "golden");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Tatzelwurm.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("repository root (Tatzelwurm.sln) not found above " + AppContext.BaseDirectory);
    }
}
