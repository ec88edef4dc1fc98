using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace Tatzelwurm.Dashboard.Tests;

internal static class HttpJson
{
    public static async Task<(HttpStatusCode Status, JsonElement Body)> GetApiAsync(this HttpClient http, string path, string? token = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return await SendAsync(http, request);
    }

    public static async Task<(HttpStatusCode Status, JsonElement Body)> PostApiAsync(this HttpClient http, string path, string? token = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return await SendAsync(http, request);
    }

    private static async Task<(HttpStatusCode, JsonElement)> SendAsync(HttpClient http, HttpRequestMessage request)
    {
        using var response = await http.SendAsync(request, TestDeadline.Token);
        var text = await response.Content.ReadAsStringAsync(TestDeadline.Token);
        var body = text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone();
        return (response.StatusCode, body);
    }

    public static long[] Ids(this JsonElement page) =>
        page.GetProperty("tasks").EnumerateArray().Select(t => t.GetProperty("id").GetInt64()).ToArray();
}
