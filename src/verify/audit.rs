//! verify's part of the audit trail, kept off the request path (DESIGN §7): each decision is
//! handed to a bounded channel as a [`Sample`] (a reference-counted token and body, no
//! copy, nothing awaited; a full channel drops it and counts the drop), and a background
//! writer turns samples into
//!
//! - usage counts per (user, client, method, tool or resource, outcome, reason), flushed
//!   every `AUDIT_USAGE_FLUSH` in one pipelined write to the hour's hash `oauth:usage:{hour}`;
//! - `access_refused` (or `binding_mismatch`) events, at most one per client and reason per
//!   `AUDIT_REFUSAL_INTERVAL`, counting the ones held back (a flood of bad tokens cannot flood
//!   the trail);
//! - `token_used`, the first time this replica admits a token.
//!
//! The writer never waits on the channel (a waiting receiver would make every request wake
//! it): it drains what has come every [`DRAIN_INTERVAL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use actix_web::web::Bytes;
use base64::Engine;
use prometheus::IntCounter;
use tokio::sync::mpsc;

use super::cache::VerifiedToken;
use super::metrics::Reason;
use crate::audit::{Actor, Event, Events, Kind, Limiter};
use crate::clock::SharedClock;
use crate::config::AuditSettings;
use crate::store::Store;

/// How many decisions may wait for the writer; past that they are dropped (and counted).
pub const QUEUE: usize = 65_536;
/// How often the writer drains the queue.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);
/// The largest body kept for the writer to read the tool from.
const BODY_LIMIT: usize = 64 * 1024;
/// Distinct usage keys held between flushes; past that new keys go to one `(other)` row.
const USAGE_KEYS: usize = 100_000;
/// Tokens remembered as used (per replica), for `token_used`.
const USED_TOKENS: u64 = 100_000;
/// The longest tool name counted as itself.
const NAME_LIMIT: usize = 128;

/// One decision, as the request path hands it over.
pub struct Sample {
    pub reason: Reason,
    /// The verified token (a decision that got that far).
    pub token: Option<Arc<VerifiedToken>>,
    /// The presented bearer token of a refusal that got no verified token: read (without
    /// trusting it) only for whose it claims to be, then dropped; never stored.
    pub presented: Option<Box<str>>,
    pub body: Option<Bytes>,
    pub mcp_method: Option<HeaderValue>,
    pub mcp_name: Option<HeaderValue>,
    pub content_type: Option<HeaderValue>,
    /// A refusal's client address and User-Agent.
    pub ip: Option<IpAddr>,
    pub user_agent: Option<HeaderValue>,
}

impl Sample {
    /// A decision on `headers` and `body`; what only a refusal needs is taken only for one.
    pub fn of(
        reason: Reason,
        token: Option<Arc<VerifiedToken>>,
        headers: &HeaderMap,
        body: &Bytes,
        ip: Option<IpAddr>,
    ) -> Self {
        let refused = reason != Reason::Ok;
        Self {
            reason,
            presented: (refused && token.is_none())
                .then(|| super::request::access_token(headers).map(|(_, t)| t.into()))
                .flatten(),
            token,
            body: (!body.is_empty() && body.len() <= BODY_LIMIT).then(|| body.clone()),
            mcp_method: headers.get(super::mcp::MCP_METHOD).cloned(),
            mcp_name: headers.get(super::mcp::MCP_NAME).cloned(),
            content_type: headers.get(CONTENT_TYPE).cloned(),
            ip: ip.filter(|_| refused),
            user_agent: refused
                .then(|| headers.get(actix_web::http::header::USER_AGENT).cloned())
                .flatten(),
        }
    }
}

/// The request path's end of the channel.
pub struct Recorder {
    tx: Option<mpsc::Sender<Sample>>,
    dropped: IntCounter,
}

impl Recorder {
    /// A recorder and the writer's end of its channel; none when the trail is off or usage
    /// is not counted.
    pub fn new(
        settings: &AuditSettings,
        dropped: IntCounter,
    ) -> (Self, Option<mpsc::Receiver<Sample>>) {
        if !settings.bounds.enabled || !settings.usage {
            return (Self { tx: None, dropped }, None);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Self {
                tx: Some(tx),
                dropped,
            },
            Some(rx),
        )
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Hands a decision over, never waiting.
    pub fn decision(&self, sample: impl FnOnce() -> Sample) {
        if let Some(tx) = &self.tx
            && tx.try_send(sample()).is_err()
        {
            self.dropped.inc();
        }
    }
}

/// Whose a decision was: a verified token's, or what a refused one claims (marked so).
struct Who {
    user: String,
    client: String,
    user_id: String,
    jti: String,
    verified: bool,
}

impl Who {
    fn of(sample: &Sample) -> Self {
        if let Some(token) = &sample.token {
            return Self {
                user: token.username().to_ascii_lowercase(),
                client: token.client_id().to_string(),
                user_id: token.user_id().to_string(),
                jti: token.jti.to_string(),
                verified: true,
            };
        }
        let claims = sample
            .presented
            .as_deref()
            .and_then(|t| t.split('.').nth(1))
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .ok()
            })
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .unwrap_or_default();
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(|s| s.chars().take(NAME_LIMIT).collect::<String>())
                .unwrap_or_default()
        };
        Self {
            user: text("username").to_ascii_lowercase(),
            client: text("client_id"),
            user_id: text("sub"),
            jti: text("jti"),
            verified: false,
        }
    }
}

/// A usage row's key: the hash field, a JSON array (`usage` reads it back).
fn usage_field(who: &Who, method: &str, tool: &str, reason: Reason) -> String {
    let outcome = if reason == Reason::Ok {
        "allowed"
    } else {
        "refused"
    };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    serde_json::json!([
        or_dash(&who.user),
        or_dash(&who.client),
        or_dash(method),
        or_dash(tool),
        outcome,
        reason.as_str()
    ])
    .to_string()
}

/// The writer: drains the channel, flushes usage, writes refusal and first-use events. Ends
/// when `stop` is notified, after a last flush.
pub async fn run(
    store: Arc<dyn Store>,
    settings: AuditSettings,
    clock: SharedClock,
    mut rx: mpsc::Receiver<Sample>,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut writer = Writer {
        limiter: Limiter::new(settings.refusal_interval),
        used: moka::sync::Cache::new(USED_TOKENS),
        counts: HashMap::new(),
        repeats: HashMap::new(),
        events: Vec::new(),
        store,
        clock,
    };
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.notified() => true,
        };
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(sample) => writer.take(&sample),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        writer.write_events().await;
        if stopping || closed || last_flush.elapsed() >= settings.usage_flush {
            writer.flush().await;
            last_flush = Instant::now();
        }
        if stopping || closed {
            return;
        }
    }
}

/// An allowed decision seen before in this flush window: the same verified token (held, so
/// its address stays its own), with the same MCP headers and no body. Counted without working
/// its rows out again: most of a busy replica's decisions are such repeats, and this is what
/// keeps the writer's share of verify's CPU small (`bench/verify.sh`, (b‴)/(o)).
#[derive(PartialEq, Eq, Hash)]
struct Repeat {
    token: usize,
    method: Option<HeaderValue>,
    name: Option<HeaderValue>,
}

/// What a [`Repeat`] stands for: its token, its usage rows, and how often it came again.
struct Seen {
    _token: Arc<VerifiedToken>,
    fields: Vec<String>,
    again: u64,
}

/// Distinct repeats held between flushes; past that a decision takes the long way.
const REPEATS: usize = 10_000;

struct Writer {
    limiter: Limiter,
    used: moka::sync::Cache<Box<str>, ()>,
    counts: HashMap<String, u64>,
    repeats: HashMap<Repeat, Seen>,
    events: Vec<Event>,
    store: Arc<dyn Store>,
    clock: SharedClock,
}

impl Writer {
    fn take(&mut self, sample: &Sample) {
        let repeat = match (&sample.token, &sample.body) {
            (Some(token), None) if sample.reason == Reason::Ok => Some(Repeat {
                token: Arc::as_ptr(token) as usize,
                method: sample.mcp_method.clone(),
                name: sample.mcp_name.clone(),
            }),
            _ => None,
        };
        if let Some(seen) = repeat.as_ref().and_then(|r| self.repeats.get_mut(r)) {
            seen.again += 1;
            return;
        }
        let who = Who::of(sample);
        let calls = self.calls(sample);
        let mut fields = Vec::with_capacity(calls.len());
        for (method, tool) in &calls {
            let mut field = usage_field(&who, method, tool, sample.reason);
            if self.counts.len() >= USAGE_KEYS && !self.counts.contains_key(&field) {
                field = usage_field(&who, "(other)", "(other)", sample.reason);
            }
            *self.counts.entry(field.clone()).or_default() += 1;
            fields.push(field);
        }
        if let (Some(repeat), Some(token)) = (repeat, &sample.token)
            && self.repeats.len() < REPEATS
        {
            let seen = Seen {
                _token: token.clone(),
                fields,
                again: 0,
            };
            self.repeats.insert(repeat, seen);
        }
        let (method, tool) = calls.into_iter().next().unwrap_or_default();
        if sample.reason == Reason::Ok {
            if !who.jti.is_empty() && !self.used.contains_key(who.jti.as_str()) {
                self.used.insert(who.jti.as_str().into(), ());
                self.events.push(
                    self.event(Kind::TokenUsed, &who)
                        .method(&method)
                        .tool(&tool),
                );
            }
            return;
        }
        let client = if who.client.is_empty() {
            "-"
        } else {
            &who.client
        };
        let key = format!("{client}\0{}", sample.reason.as_str());
        let Some(held) = self.limiter.admit(&key, self.clock.now_millis()) else {
            return;
        };
        let kind = if sample.reason == Reason::BindingMismatch {
            Kind::BindingMismatch
        } else {
            Kind::AccessRefused
        };
        let mut event = self
            .event(kind, &who)
            .refused(sample.reason.as_str())
            .method(&method)
            .tool(&tool)
            .ip(sample.ip)
            .user_agent(sample.user_agent.as_ref().and_then(|v| v.to_str().ok()));
        if held > 0 {
            event = event.detail("suppressed", held);
        }
        if !who.verified && !who.client.is_empty() {
            event = event.detail("unverified", true);
        }
        self.events.push(event);
    }

    fn event(&self, kind: Kind, who: &Who) -> Event {
        let actor = if who.client.is_empty() {
            Actor::Anonymous
        } else {
            Actor::Client(who.client.clone())
        };
        Event::new(kind, actor)
            .user(&who.user)
            .user_id(&who.user_id)
            .client(&who.client)
            .jti(&who.jti)
    }

    /// The (method, tool) pairs a decision was about: one per call of a batch; one empty pair
    /// when the request says nothing readable.
    fn calls(&self, sample: &Sample) -> Vec<(String, String)> {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (super::mcp::MCP_METHOD, &sample.mcp_method),
            (super::mcp::MCP_NAME, &sample.mcp_name),
            (CONTENT_TYPE, &sample.content_type),
        ] {
            if let Some(v) = value {
                headers.insert(name, v.clone());
            }
        }
        let body = sample.body.as_deref().unwrap_or(&[]);
        let calls = match super::mcp::calls(&headers, body) {
            Ok(Some(calls)) if !calls.is_empty() => calls,
            _ => return vec![(String::new(), String::new())],
        };
        let short = |s: &str| s.chars().take(NAME_LIMIT).collect::<String>();
        calls
            .into_iter()
            .map(|c| {
                (
                    short(&c.method),
                    c.name.as_deref().map(short).unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn write_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.events)
            .into_iter()
            .fold(Events::none(), Events::and);
        if let Err(e) = self.store.append_events(&events).await {
            tracing::debug!(error = %e, "verify's audit events not written");
        }
    }

    async fn flush(&mut self) {
        for seen in self.repeats.drain().map(|(_, seen)| seen) {
            for field in seen.fields.into_iter().filter(|_| seen.again > 0) {
                *self.counts.entry(field).or_default() += seen.again;
            }
        }
        if self.counts.is_empty() {
            return;
        }
        let hour = crate::clock::utc_hour(self.clock.now_unix());
        let counts: Vec<(String, u64)> = self.counts.drain().collect();
        if let Err(e) = self.store.add_usage(&hour, &counts).await {
            tracing::debug!(error = %e, "usage counts kept for the next flush");
            // Kept (within the bound) for the next flush.
            for (field, n) in counts {
                if self.counts.len() < USAGE_KEYS {
                    *self.counts.entry(field).or_default() += n;
                }
            }
        }
    }
}
