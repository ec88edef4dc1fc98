using System.Security.Cryptography;
using Microsoft.AspNetCore.Http;

namespace Tatzelwurm.Server.Http;

/// <summary>
/// The dashboard's static files, embedded in this assembly (Http/wwwroot, see the csproj): plain
/// HTML, CSS and JavaScript with no build step and nothing fetched from elsewhere.
/// </summary>
internal sealed class DashboardAssets
{
    private const string Prefix = "wwwroot/";

    private readonly Dictionary<string, Asset> _assets;

    private DashboardAssets(Dictionary<string, Asset> assets) => _assets = assets;

    /// <summary>Request paths of the assets, e.g. <c>/index.html</c>, <c>/app.js</c>.</summary>
    public IEnumerable<string> Paths => _assets.Keys;

    public static DashboardAssets Load()
    {
        var assembly = typeof(DashboardAssets).Assembly;
        var assets = new Dictionary<string, Asset>(StringComparer.Ordinal);
        foreach (var name in assembly.GetManifestResourceNames().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)))
        {
            using var stream = assembly.GetManifestResourceStream(name)!;
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            var content = copy.ToArray();
            var etag = "\"" + Convert.ToHexStringLower(SHA256.HashData(content).AsSpan(0, 12)) + "\"";
            assets["/" + name[Prefix.Length..]] = new Asset(content, ContentType(name), etag);
        }

        return new DashboardAssets(assets);
    }

    public async Task ServeAsync(HttpContext context, string path)
    {
        var asset = _assets[path];
        var response = context.Response;
        response.Headers.ETag = asset.ETag;

        // Revalidate every time: a new coordinator version must not run an old page.
        response.Headers.CacheControl = "no-cache";
        if (context.Request.Headers.IfNoneMatch == asset.ETag)
        {
            response.StatusCode = StatusCodes.Status304NotModified;
            return;
        }

        response.ContentType = asset.ContentType;
        response.ContentLength = asset.Content.Length;
        await response.Body.WriteAsync(asset.Content, context.RequestAborted);
    }

    private static string ContentType(string name) => Path.GetExtension(name) switch
    {
        ".html" => "text/html; charset=utf-8",
        ".js" => "text/javascript; charset=utf-8",
        ".css" => "text/css; charset=utf-8",
        ".svg" => "image/svg+xml",
        _ => "application/octet-stream",
    };

    private sealed record Asset(byte[] Content, string ContentType, string ETag);
}
