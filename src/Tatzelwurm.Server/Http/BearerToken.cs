using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace Tatzelwurm.Server.Http;

/// <summary>Checks <c>Authorization: Bearer &lt;token&gt;</c> against the coordinator's token.</summary>
internal sealed class BearerToken(string token)
{
    private const string Scheme = "Bearer ";

    // Comparing fixed-size digests keeps the comparison constant-time whatever the presented length.
    private readonly byte[] _digest = SHA256.HashData(Encoding.UTF8.GetBytes(token));

    public bool Authorized(HttpRequest request)
    {
        var header = request.Headers.Authorization;
        if (header.Count != 1 || header[0] is not { } value || !value.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var presented = value[Scheme.Length..].Trim();
        var digest = SHA256.HashData(Encoding.UTF8.GetBytes(presented));
        return presented.Length > 0 && CryptographicOperations.FixedTimeEquals(digest, _digest);
    }
}
