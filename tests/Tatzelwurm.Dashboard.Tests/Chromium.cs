using Microsoft.Playwright;

namespace Tatzelwurm.Dashboard.Tests;

/// <summary>
/// Debian's chromium driven by Playwright (its bundled driver talks to the browser over CDP; no
/// browser is downloaded: never <c>playwright install</c>). A machine without the browser fails the
/// browser tests with instructions, it does not skip them: CI installs chromium in .ci/run.
/// </summary>
internal sealed class Chromium : IAsyncDisposable
{
    public const string DefaultPath = "/usr/bin/chromium";

    private static readonly string[] Arguments =
    [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
    ];

    private readonly IPlaywright _playwright;

    private Chromium(IPlaywright playwright, IBrowser browser)
    {
        _playwright = playwright;
        Browser = browser;
    }

    public IBrowser Browser { get; }

    /// <summary>TATZELWURM_CHROMIUM overrides the executable.</summary>
    public static string ExecutablePath => Environment.GetEnvironmentVariable("TATZELWURM_CHROMIUM") is { Length: > 0 } path ? path : DefaultPath;

    public static async Task<Chromium> LaunchAsync(string? executablePath = null)
    {
        var path = executablePath ?? ExecutablePath;
        if (!File.Exists(path))
        {
            throw new InvalidOperationException(
                $"the browser tests need Chromium at {path}, which does not exist: install Debian's chromium "
                + "(apt-get install -y chromium; .ci/run does) or point TATZELWURM_CHROMIUM at a Chromium binary");
        }

        var playwright = await Playwright.CreateAsync();
        try
        {
            var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = path,
                Headless = true,
                Args = Arguments,
                Timeout = 60_000,
            });
            return new Chromium(playwright, browser);
        }
        catch (PlaywrightException ex)
        {
            playwright.Dispose();
            throw new InvalidOperationException($"Chromium at {path} could not be started: {ex.Message}", ex);
        }
    }

    /// <summary>A page with a desktop-sized viewport that records console errors and uncaught exceptions.</summary>
    public async Task<(IPage Page, List<string> Errors)> NewPageAsync()
    {
        var page = await Browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1440, Height = 900 } });
        var errors = new List<string>();
        page.Console += (_, message) =>
        {
            if (message.Type == "error")
            {
                lock (errors)
                {
                    errors.Add($"console: {message.Text}");
                }
            }
        };
        page.PageError += (_, error) =>
        {
            lock (errors)
            {
                errors.Add($"page error: {error}");
            }
        };
        return (page, errors);
    }

    public async ValueTask DisposeAsync()
    {
        await Browser.DisposeAsync();
        _playwright.Dispose();
    }
}

internal static class Screenshots
{
    /// <summary>artifacts/screenshots under the repository root (not committed: artifacts/ is ignored).</summary>
    public static string Directory { get; } = Create();

    public static string PathOf(string name) => Path.Combine(Directory, name);

    private static string Create()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Tatzelwurm.sln")))
            {
                return System.IO.Directory.CreateDirectory(Path.Combine(dir.FullName, "artifacts", "screenshots")).FullName;
            }
        }

        throw new InvalidOperationException("repository root (Tatzelwurm.sln) not found above " + AppContext.BaseDirectory);
    }
}
