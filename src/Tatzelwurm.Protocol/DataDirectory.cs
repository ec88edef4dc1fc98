using System.Security.Cryptography;

namespace Tatzelwurm.Protocol;

/// <summary>
/// Where a local coordinator records how to reach it (docs/operations.md): <c>&lt;data&gt;/address</c>
/// holds <c>host:port</c> and <c>&lt;data&gt;/token</c> the auth token, each written atomically.
/// Clients on the same machine read them; this is the contract between the two sides.
/// </summary>
public static class DataDirectory
{
    /// <summary>File holding the address the coordinator actually listens on.</summary>
    public const string AddressFile = "address";

    /// <summary>File holding the base URL of the coordinator's HTTP endpoint (dashboard, metrics), when it serves one.</summary>
    public const string HttpFile = "http";

    /// <summary>File holding the auth token.</summary>
    public const string TokenFile = "token";

    /// <summary>Environment variable naming the data directory.</summary>
    public const string DataEnv = "TATZELWURM_DATA";

    /// <summary>Environment variable with the coordinator address (host:port).</summary>
    public const string ServerEnv = "TATZELWURM_SERVER";

    /// <summary>Environment variable with the auth token.</summary>
    public const string TokenEnv = "TATZELWURM_TOKEN";

    /// <summary>The data directory: <paramref name="explicitPath"/>, else $TATZELWURM_DATA, else $XDG_DATA_HOME/tatzelwurm, else ~/.local/share/tatzelwurm.</summary>
    public static string Resolve(string? explicitPath = null)
    {
        if (!string.IsNullOrEmpty(explicitPath))
        {
            return Path.GetFullPath(explicitPath);
        }

        if (Environment.GetEnvironmentVariable(DataEnv) is { Length: > 0 } fromEnv)
        {
            return Path.GetFullPath(fromEnv);
        }

        var xdg = Environment.GetEnvironmentVariable("XDG_DATA_HOME");
        var root = !string.IsNullOrEmpty(xdg)
            ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share");
        return Path.Combine(root, "tatzelwurm");
    }

    /// <summary>Reads the token, creating a random one (readable by the owner only) on first start.</summary>
    public static string EnsureToken(string directory)
    {
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, TokenFile);
        if (File.Exists(path))
        {
            var existing = File.ReadAllText(path).Trim();
            if (existing.Length > 0)
            {
                return existing;
            }
        }

        var token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));
        WriteAtomically(path, token + "\n", UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return token;
    }

    /// <summary>Records the address the coordinator listens on, once it accepts connections.</summary>
    public static void WriteAddress(string directory, string hostPort) =>
        WriteAtomically(Path.Combine(directory, AddressFile), hostPort + "\n", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

    /// <summary>Records the base URL of the HTTP endpoint (e.g. <c>http://127.0.0.1:7601</c>), once it accepts requests.</summary>
    public static void WriteHttpAddress(string directory, string url) =>
        WriteAtomically(Path.Combine(directory, HttpFile), url + "\n", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

    /// <summary>Removes a stale HTTP address (the endpoint is off in this run).</summary>
    public static void RemoveHttpAddress(string directory) => File.Delete(Path.Combine(directory, HttpFile));

    /// <summary>The recorded HTTP base URL, or null when the coordinator serves none.</summary>
    public static string? ReadHttpAddress(string directory) => ReadTrimmed(Path.Combine(directory, HttpFile));

    /// <summary>The recorded address, or null when the file does not exist.</summary>
    public static string? ReadAddress(string directory) => ReadTrimmed(Path.Combine(directory, AddressFile));

    /// <summary>The recorded token, or null when the file does not exist.</summary>
    public static string? ReadToken(string directory) => ReadTrimmed(Path.Combine(directory, TokenFile));

    private static string? ReadTrimmed(string path) => File.Exists(path) ? File.ReadAllText(path).Trim() : null;

    // Write-then-rename so a reader never sees a half-written file.
    private static void WriteAtomically(string path, string content, UnixFileMode mode)
    {
        var temp = path + ".tmp-" + Environment.ProcessId;
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = mode;
        }

        using (var stream = new FileStream(temp, options))
        using (var writer = new StreamWriter(stream))
        {
            writer.Write(content);
            writer.Flush();
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
    }
}
