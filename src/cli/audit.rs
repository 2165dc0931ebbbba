//! `mcp-gateway audit`, `usage` and `trace`: the audit trail as the operator reads it after an
//! incident or a support ticket. Each reads page by page (constant memory at any size), a
//! user's or a client's events through their index, and prints a table, or JSON Lines with
//! `--json` (one event a line, so the output streams and follows).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::admin::{Admin, RowWriter};
use super::progress::Progress;
use super::{Cli, CliError, CliResult};
use crate::audit::{Actor, Kind, Outcome, Stored};
use crate::clock::{Clock, SystemClock, utc_rfc3339};
use crate::store::trail::{Source, Window};

/// Events asked for per page.
const PAGE: usize = 500;
/// How often `--follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this user's events (their login).
    #[arg(long)]
    pub user: Option<String>,
    /// Only this client's events (its client_id, or its metadata document URL).
    #[arg(long)]
    pub client: Option<String>,
    /// Only events of these types (repeat, or comma-separated): login, token_issued, …
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// From this long ago (`2h`, `7d`) or this time (RFC 3339).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Up to this long ago or this time.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// At most this many events (default: all that match).
    #[arg(long)]
    pub limit: Option<u64>,
    /// After the listing, print new events as they are written (oldest first) until stopped.
    #[arg(long, conflicts_with = "out")]
    pub follow: bool,
    /// Export the matching events to this file as JSON Lines (newest first), showing
    /// progress on a terminal.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UsageBy {
    User,
    Client,
    Tool,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// From this long ago or this time (default 24h).
    #[arg(long, value_name = "WHEN", default_value = "24h")]
    pub since: String,
    /// Up to this long ago or this time (default now).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Group the calls by user, client or tool (the method when a call names no tool).
    #[arg(long, value_enum, default_value = "user")]
    pub by: UsageBy,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The client whose story to tell (its client_id, or its metadata document URL).
    #[arg(long)]
    pub client: String,
    /// Only this user's part of it.
    #[arg(long)]
    pub user: Option<String>,
    /// From this long ago or this time (default: as far as the trail goes).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

fn now_ms() -> i64 {
    SystemClock.now_millis()
}

/// `2h`, `30m`, `7d` ago, or an RFC 3339 time, as milliseconds since the epoch.
pub fn parse_when(text: &str, now_ms: i64) -> CliResult<i64> {
    if let Some(ms) = crate::clock::parse_rfc3339(text) {
        return Ok(ms);
    }
    crate::config::parse_duration(text)
        .map(|d| now_ms - d.as_millis() as i64)
        .map_err(|_| {
            CliError::Failed(format!(
                "{text:?} is neither a duration (2h, 7d) nor a time (2026-12-07T05:00:00Z)"
            ))
        })
}

fn window(since: Option<&str>, until: Option<&str>) -> CliResult<Window> {
    let now = now_ms();
    Ok(Window {
        since_ms: since.map(|s| parse_when(s, now)).transpose()?,
        until_ms: until.map(|s| parse_when(s, now)).transpose()?,
    })
}

fn actor_text(actor: &Actor) -> String {
    match actor {
        Actor::User(id) => format!("user:{id}"),
        Actor::Client(id) => format!("client:{id}"),
        Actor::Operator(id) => format!("operator:{id}"),
        Actor::Upstream(id) => format!("upstream:{id}"),
        Actor::System(id) => format!("system:{id}"),
        Actor::Anonymous => "-".into(),
    }
}

/// The facts of an event beyond its columns, in one short line.
fn details(stored: &Stored) -> String {
    let e = &stored.event;
    let mut parts = Vec::new();
    if e.outcome != Outcome::Success {
        let outcome = if e.outcome == Outcome::Refused {
            "refused"
        } else {
            "failed"
        };
        parts.push(format!(
            "{outcome}: {}",
            e.reason.as_deref().unwrap_or("no reason given")
        ));
    } else if let Some(reason) = &e.reason {
        parts.push(reason.clone());
    }
    for (name, value) in [
        ("method", &e.method),
        ("tool", &e.tool),
        ("scope", &e.scope),
        ("resource", &e.resource),
        ("jti", &e.jti),
        ("family", &e.family),
        ("ip", &e.ip),
        ("upstream", &e.upstream),
    ] {
        if let Some(v) = value {
            parts.push(format!("{name}={v}"));
        }
    }
    for (name, value) in &e.detail {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        parts.push(format!("{name}={text}"));
    }
    parts.join(" ")
}

const AUDIT_HEADERS: &[&str] = &["TIME", "TYPE", "LEVEL", "ACTOR", "USER", "CLIENT", "DETAIL"];
const AUDIT_WIDTHS: &[usize] = &[24, 22, 8, 18, 12, 22];

fn audit_row(out: &mut RowWriter, stored: &Stored) -> CliResult {
    let e = &stored.event;
    out.row(
        &stored.to_json(),
        &[
            &utc_rfc3339(stored.millis()),
            &e.kind,
            e.level.as_str(),
            &actor_text(&e.actor),
            e.user.as_deref().unwrap_or("-"),
            e.client_id.as_deref().unwrap_or("-"),
            &details(stored),
        ],
    )
}

/// What `--user`/`--client`/`--type` ask for; the index of one of them is read, the others
/// filter.
struct Filter {
    user: Option<String>,
    client: Option<String>,
    types: Vec<String>,
}

impl Filter {
    fn source(&self) -> Source {
        match (&self.user, &self.client) {
            (Some(u), _) => Source::User(u.clone()),
            (None, Some(c)) => Source::Client(c.clone()),
            (None, None) => Source::All,
        }
    }

    fn admits(&self, stored: &Stored) -> bool {
        let e = &stored.event;
        self.user
            .as_ref()
            .is_none_or(|u| e.user.as_deref() == Some(u.to_ascii_lowercase().as_str()))
            && self
                .client
                .as_ref()
                .is_none_or(|c| e.client_id.as_deref() == Some(c.as_str()))
            && (self.types.is_empty() || self.types.contains(&e.kind))
    }
}

pub async fn audit(cli: &Cli, args: &AuditArgs) -> CliResult {
    for t in &args.types {
        if Kind::parse(t).is_none() {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(CliError::Failed(format!(
                "--type {t:?} is not an event type; they are: {}",
                known.join(", ")
            )));
        }
    }
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let filter = Filter {
        user: args.user.clone(),
        client: args.client.clone(),
        types: args.types.clone(),
    };
    let source = filter.source();
    let window = window(args.since.as_deref(), args.until.as_deref())?;
    if let Some(path) = &args.out {
        return export(cli, &mut admin, &filter, window, args.limit, path).await;
    }
    let mut out = RowWriter::lines(cli.json, AUDIT_HEADERS, AUDIT_WIDTHS);
    // Where `--follow` goes on from: the newest entry now, read before the listing so that
    // nothing written meanwhile is missed.
    let mut last = if args.follow {
        Some(admin.audit_last_id(&source).await?)
    } else {
        None
    };
    let mut printed = 0;
    let mut cursor: Option<String> = None;
    'pages: loop {
        let page = admin
            .audit_page(&source, window, cursor.as_deref(), PAGE, true)
            .await?;
        for stored in page.events.iter().filter(|s| filter.admits(s)) {
            if args.limit.is_some_and(|l| printed >= l) {
                break 'pages;
            }
            audit_row(&mut out, stored)?;
            printed += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if let Some(after) = last.as_mut() {
        follow(&mut admin, &source, &filter, after, &mut out).await?;
    }
    out.finish()
}

/// `audit --out FILE`: the matching events as JSON Lines, page by page.
async fn export(
    cli: &Cli,
    admin: &mut Admin,
    filter: &Filter,
    window: Window,
    limit: Option<u64>,
    path: &std::path::Path,
) -> CliResult {
    use std::io::Write;
    let failed =
        |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", path.display()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(failed)?);
    let source = filter.source();
    let total = match source {
        Source::All => Some(admin.audit_len().await?),
        _ => None,
    };
    let progress = Progress::new(cli, total, "exporting events");
    let (mut written, mut cursor) = (0u64, None::<String>);
    'pages: loop {
        let page = admin
            .audit_page(&source, window, cursor.as_deref(), PAGE, true)
            .await?;
        progress.inc(page.events.len() as u64);
        for stored in page.events.iter().filter(|s| filter.admits(s)) {
            if limit.is_some_and(|l| written >= l) {
                break 'pages;
            }
            writeln!(file, "{}", stored.to_json()).map_err(failed)?;
            written += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    file.flush().map_err(failed)?;
    progress.finish();
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"exported": written, "file": path.display().to_string()})
        );
    } else {
        println!("exported {written} events to {}", path.display());
    }
    Ok(())
}

/// Prints what is written after `after`, oldest first, until the process is stopped.
async fn follow(
    admin: &mut Admin,
    source: &Source,
    filter: &Filter,
    after: &mut String,
    out: &mut RowWriter,
) -> CliResult {
    loop {
        let page = admin.audit_after(source, after, PAGE).await?;
        if let Some(last) = &page.last {
            after.clone_from(last);
        }
        for stored in page.events.iter().filter(|s| filter.admits(s)) {
            audit_row(out, stored)?;
        }
        if page.next.is_none() {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// One group's calls.
#[derive(Default)]
struct Tally {
    calls: u64,
    allowed: u64,
    refused: u64,
    reasons: BTreeMap<String, u64>,
}

pub async fn usage(cli: &Cli, args: &UsageArgs) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let now = now_ms();
    let since = parse_when(&args.since, now)?;
    let until = args
        .until
        .as_deref()
        .map(|u| parse_when(u, now))
        .transpose()?
        .unwrap_or(now);
    if since > until {
        return Err(CliError::Failed("--since is after --until".into()));
    }
    let mut groups: HashMap<String, Tally> = HashMap::new();
    // Counts are kept per UTC hour: every hour the window touches is read whole.
    let mut hour = since.div_euclid(3_600_000) * 3_600;
    while hour * 1000 <= until {
        let name = crate::clock::utc_hour(hour);
        let mut cursor = 0;
        loop {
            let (next, page) = admin.usage_page(&name, cursor).await?;
            for (field, n) in page {
                let Ok(key) = serde_json::from_str::<Vec<String>>(&field) else {
                    continue;
                };
                let [user, client, method, tool, outcome, reason] = key.as_slice() else {
                    continue;
                };
                let group = match args.by {
                    UsageBy::User => user.clone(),
                    UsageBy::Client => client.clone(),
                    UsageBy::Tool if tool != "-" => tool.clone(),
                    UsageBy::Tool => method.clone(),
                };
                let tally = groups.entry(group).or_default();
                tally.calls += n;
                if outcome == "allowed" {
                    tally.allowed += n;
                } else {
                    tally.refused += n;
                    *tally.reasons.entry(reason.clone()).or_default() += n;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        hour += 3_600;
    }
    let mut rows: Vec<(String, Tally)> = groups.into_iter().collect();
    rows.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(&b.0)));
    let by = match args.by {
        UsageBy::User => "USER",
        UsageBy::Client => "CLIENT",
        UsageBy::Tool => "TOOL",
    };
    let headers: &'static [&'static str] = match args.by {
        UsageBy::User => &["USER", "CALLS", "ALLOWED", "REFUSED", "REFUSALS"],
        UsageBy::Client => &["CLIENT", "CALLS", "ALLOWED", "REFUSED", "REFUSALS"],
        UsageBy::Tool => &["TOOL", "CALLS", "ALLOWED", "REFUSED", "REFUSALS"],
    };
    let mut out = RowWriter::new(cli.json, headers, &[24, 8, 8, 8]);
    for (group, tally) in rows {
        let reasons: Vec<String> = tally
            .reasons
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let json = serde_json::json!({
            by.to_ascii_lowercase(): group,
            "calls": tally.calls,
            "allowed": tally.allowed,
            "refused": tally.refused,
            "refusals": tally.reasons,
        });
        out.row(
            &json,
            &[
                &group,
                &tally.calls.to_string(),
                &tally.allowed.to_string(),
                &tally.refused.to_string(),
                &reasons.join(" "),
            ],
        )?;
    }
    out.finish()
}

pub async fn trace(cli: &Cli, args: &TraceArgs) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let filter = Filter {
        user: args.user.clone(),
        client: Some(args.client.clone()),
        types: Vec::new(),
    };
    let source = Source::Client(args.client.clone());
    let window = window(args.since.as_deref(), None)?;
    let mut out = RowWriter::lines(
        cli.json,
        &["#", "TIME", "+", "TYPE", "USER", "DETAIL"],
        &[4, 24, 8, 22, 12],
    );
    let (mut n, mut first_ms, mut previous_ms) = (0u64, None, 0i64);
    let mut cursor: Option<String> = None;
    loop {
        let page = admin
            .audit_page(&source, window, cursor.as_deref(), PAGE, false)
            .await?;
        for stored in page.events.iter().filter(|s| filter.admits(s)) {
            n += 1;
            let ms = stored.millis();
            let first = *first_ms.get_or_insert(ms);
            let since_previous = if n == 1 {
                "0s".to_string()
            } else {
                step((ms - previous_ms).max(0))
            };
            previous_ms = ms;
            let mut json = stored.to_json();
            if let Some(map) = json.as_object_mut() {
                map.insert("step".into(), n.into());
                map.insert("elapsed_ms".into(), (ms - first).into());
            }
            out.row(
                &json,
                &[
                    &n.to_string(),
                    &utc_rfc3339(ms),
                    &since_previous,
                    &stored.event.kind,
                    stored.event.user.as_deref().unwrap_or("-"),
                    &details(stored),
                ],
            )?;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out.finish()?;
    if !cli.json {
        let state = client_state(&mut admin, &args.client).await?;
        println!("now: {state}");
    }
    Ok(())
}

/// A short duration between two steps.
fn step(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{}s", ms / 1_000),
        ms if ms < 3_600_000 => format!("{}m", ms / 60_000),
        ms => format!("{}h", ms / 3_600_000),
    }
}

/// How the client stands now: registered or not, and its live tokens.
async fn client_state(admin: &mut Admin, client_id: &str) -> CliResult<String> {
    let registered = admin.pttl(&crate::store::keys::client(client_id)).await? != -2;
    let live: u64 = redis::cmd("ZCOUNT")
        .arg(crate::store::keys::client_tokens(client_id))
        .arg(SystemClock.now_unix())
        .arg("+inf")
        .query_async(&mut admin.conn)
        .await
        .map_err(super::admin::redis_failed)?;
    let registration = if registered {
        "registered"
    } else if client_id.starts_with("https://") {
        "a metadata document client"
    } else {
        "not registered (deleted, expired or never)"
    };
    Ok(format!("{registration}; {live} live access tokens"))
}
