using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Spectre.Console;
using Tatzelwurm.Protocol;

namespace Tatzelwurm.Actionwurm;

/// <summary>Human tables (Spectre.Console) and machine JSON for the CLI's records.</summary>
internal static class Output
{
    public static readonly string[] StateNames = ["created", "ready", "submit", "run", "pause", "terminated"];

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = false,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static string State(int state) => state is >= 0 and < 6 ? StateNames[state] : state.ToString(CultureInfo.InvariantCulture);

    public static int ParseState(string name)
    {
        var index = Array.IndexOf(StateNames, name.ToLowerInvariant());
        return index >= 0 ? index : throw new ArgumentException($"unknown state '{name}'; one of {string.Join(", ", StateNames)}");
    }

    public static void WriteJson(object value) => Console.WriteLine(JsonSerializer.Serialize(value, Json));

    public static object ToJson(TaskInfo t, bool withHistory) => new
    {
        id = t.Id,
        state = State(t.State),
        exit_code = t.ExitCode,
        type = t.Type,
        priority = t.Priority,
        tags = t.Tags,
        worker = t.Worker,
        worker_lease = t.WorkerLease,
        attempts = t.Attempts,
        policy = t.Policy switch { DeliveryPolicy.AtLeastOnce => "at-least-once", _ => "at-most-once" },
        reason = t.Reason,
        created_at = Time(t.CreatedAtMs),
        updated_at = Time(t.UpdatedAtMs),
        payload_size = t.PayloadSize,
        has_result = t.HasResult,
        no_reply = t.NoReply,
        history = withHistory ? t.History.Select(h => new { state = State(h.State), at = Time(h.AtMs), reason = h.Reason }) : null,
    };

    public static object ToJson(WorkerInfo w) => new
    {
        id = w.WorkerId,
        name = w.Name,
        types = w.Types,
        slots = w.Slots,
        load = w.Load,
        state = w.State,
        draining = w.Draining,
        last_heartbeat = Time(w.LastSeenMs),
        connected_at = Time(w.ConnectedAtMs),
    };

    public static string Time(long unixMs) => DateTimeOffset.FromUnixTimeMilliseconds(unixMs).ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);

    public static string Age(long unixMs)
    {
        var age = TimeProvider.System.GetUtcNow() - DateTimeOffset.FromUnixTimeMilliseconds(unixMs);
        return age.TotalSeconds < 60 ? $"{age.TotalSeconds:0.0}s ago"
            : age.TotalMinutes < 60 ? $"{age.TotalMinutes:0}m ago"
            : age.TotalHours < 48 ? $"{age.TotalHours:0}h ago"
            : $"{age.TotalDays:0}d ago";
    }

    public static void TaskTable(IReadOnlyList<TaskInfo> tasks, IReadOnlyDictionary<int, int> counts, int matched)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("id", "state", "exit", "type", "prio", "tags", "worker", "updated");
        foreach (var t in tasks)
        {
            table.AddRow(
                t.Id.ToString(CultureInfo.InvariantCulture),
                Markup.Escape(State(t.State)),
                t.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "",
                Markup.Escape(t.Type),
                t.Priority.ToString(CultureInfo.InvariantCulture),
                Markup.Escape(string.Join(",", t.Tags)),
                Markup.Escape(t.Worker ?? ""),
                Age(t.UpdatedAtMs));
        }

        AnsiConsole.Write(table);
        var summary = string.Join("  ", StateNames.Select((name, i) => $"{name}: {counts.GetValueOrDefault(i)}"));
        AnsiConsole.MarkupLine($"[grey]{Markup.Escape(summary)}[/]");
        if (matched > tasks.Count)
        {
            AnsiConsole.MarkupLine($"[grey]showing {tasks.Count} of {matched} matching tasks; use --after {(tasks.Count > 0 ? tasks[^1].Id : 0)} for the next page[/]");
        }
    }

    public static void TaskDetail(TaskInfo t)
    {
        var grid = new Grid().AddColumn().AddColumn();
        void Row(string key, string? value) => grid.AddRow($"[bold]{key}[/]", Markup.Escape(value ?? "-"));
        Row("id", t.Id.ToString(CultureInfo.InvariantCulture));
        Row("state", State(t.State));
        Row("exit code", t.ExitCode?.ToString(CultureInfo.InvariantCulture));
        Row("type", t.Type);
        Row("priority", t.Priority.ToString(CultureInfo.InvariantCulture));
        Row("tags", string.Join(", ", t.Tags));
        Row("policy", t.Policy == DeliveryPolicy.AtLeastOnce ? "at-least-once" : "at-most-once");
        Row("worker", t.Worker);
        Row("worker lease", t.WorkerLease);
        Row("attempts", t.Attempts.ToString(CultureInfo.InvariantCulture));
        Row("reason", t.Reason);
        Row("payload", $"{t.PayloadSize} bytes");
        Row("result", t.NoReply ? "not kept (no reply)" : t.HasResult ? "kept (actionwurm task wait)" : "-");
        Row("created", Time(t.CreatedAtMs));
        Row("updated", Time(t.UpdatedAtMs));
        AnsiConsole.Write(grid);
        var history = new Table().Border(TableBorder.Rounded).AddColumns("state", "at", "reason");
        foreach (var h in t.History)
        {
            history.AddRow(Markup.Escape(State(h.State)), Time(h.AtMs), Markup.Escape(h.Reason ?? ""));
        }

        AnsiConsole.Write(history);
    }

    public static void WorkerTable(IReadOnlyList<WorkerInfo> workers)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumns("name", "id", "types", "slots", "load", "state", "last heartbeat");
        foreach (var w in workers)
        {
            table.AddRow(
                Markup.Escape(w.Name),
                Markup.Escape(w.WorkerId),
                Markup.Escape(w.Types.Count == 0 ? "*" : string.Join(",", w.Types)),
                w.Slots.ToString(CultureInfo.InvariantCulture),
                w.Load.ToString(CultureInfo.InvariantCulture),
                Markup.Escape(w.State),
                Age(w.LastSeenMs));
        }

        AnsiConsole.Write(table);
    }
}
