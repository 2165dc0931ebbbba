//! Reading the audit trail the way an operator's tools would, straight from Redis, and a
//! webhook receiver that checks what it is sent.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mcp_oauth_gateway::audit::Stored;
use redis::AsyncCommands;

use super::helpers::RedisServer;

/// Every event of the trail, oldest first.
pub async fn trail(redis: &RedisServer) -> Vec<Stored> {
    stream(redis, "oauth:audit").await
}

/// The events of a stream of the trail (the trail, or an index, whose entries are fetched
/// from the trail).
pub async fn stream(redis: &RedisServer, key: &str) -> Vec<Stored> {
    let mut conn = redis.conn().await;
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(key).await.unwrap();
    let mut out = Vec::new();
    for entry in reply.ids {
        match Stored::from_fields(&entry.id, &text_fields(&entry)) {
            Some(stored) => out.push(stored),
            // An index entry: the event is in the trail under the same id.
            None => {
                let reply: redis::streams::StreamRangeReply = conn
                    .xrange("oauth:audit", &entry.id, &entry.id)
                    .await
                    .unwrap();
                for e in reply.ids {
                    out.extend(Stored::from_fields(&e.id, &text_fields(&e)));
                }
            }
        }
    }
    out
}

/// A stream entry's fields as text.
fn text_fields(entry: &redis::streams::StreamId) -> Vec<(String, String)> {
    entry
        .map
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.clone(),
                redis::from_redis_value::<String>(v.clone()).ok()?,
            ))
        })
        .collect()
}

/// The types of `events`, in order.
pub fn kinds(events: &[Stored]) -> Vec<&str> {
    events.iter().map(|e| e.event.kind.as_str()).collect()
}

/// The events of one type.
pub fn of_kind<'a>(events: &'a [Stored], kind: &str) -> Vec<&'a Stored> {
    events.iter().filter(|e| e.event.kind == kind).collect()
}

/// Waits until the trail holds an event of `kind` (verify writes its events from a
/// background writer), for at most `limit`.
pub async fn until_recorded(
    redis: &RedisServer,
    kind: &str,
    limit: std::time::Duration,
) -> Vec<Stored> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let events = trail(redis).await;
        if !of_kind(&events, kind).is_empty() || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The settings of a gateway that sends its events to `receiver`, signed with [`SECRET`],
/// with short timeouts (a test's receiver is local).
pub const SECRET: &str = "a-webhook-secret-of-32-characters";

pub fn hooked(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("AUDIT_WEBHOOK_URL", receiver.url()),
        ("AUDIT_WEBHOOK_SECRET", SECRET.to_string()),
        ("AUDIT_WEBHOOK_TIMEOUT", "1".to_string()),
        ("AUDIT_WEBHOOK_CLAIM_IDLE", "3".to_string()),
    ]
}

pub async fn gateway_with(env: &[(&'static str, String)]) -> super::gateway::Gateway {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    super::gateway::Gateway::start(&env).await
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver on a loopback port: records every request, answers 200 while up and
/// can go down and come back on the same port.
pub struct Receiver {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    server: Option<actix_web::dev::ServerHandle>,
}

impl Receiver {
    pub async fn start() -> Self {
        let mut r = Self {
            port: super::helpers::free_port(),
            received: Arc::default(),
            server: None,
        };
        r.up().await;
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub async fn up(&mut self) {
        let received = self.received.clone();
        let server = HttpServer::new(move || {
            let received = received.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let received = received.clone();
                async move {
                    received.lock().unwrap().push(Received {
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    HttpResponse::Ok().finish()
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", self.port))
        .unwrap()
        .run();
        self.server = Some(server.handle());
        tokio::spawn(server);
    }

    pub async fn down(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(false).await;
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests have come (for at most `limit`), then a moment more for any
    /// that should not come: every request received.
    pub async fn settled(&self, n: usize, limit: std::time::Duration) -> Vec<Received> {
        self.until(n, limit).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        self.requests()
    }

    /// Waits until `n` requests have come, for at most `limit`.
    pub async fn until(&self, n: usize, limit: std::time::Duration) -> Vec<Received> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let got = self.requests();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Checks a request's `X-Gateway-Signature` as a receiver would: HMAC-SHA256 of `{t}.{body}`
/// under the secret, and a fresh `t`.
pub fn signature_holds(secret: &str, received: &Received) -> bool {
    let Some(header) = received.header("x-gateway-signature") else {
        return false;
    };
    let fields: std::collections::HashMap<&str, &str> = header
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (fields.get("t"), fields.get("v1")) else {
        return false;
    };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = t.as_bytes().to_vec();
    message.push(b'.');
    message.extend_from_slice(received.body.as_bytes());
    let Ok(tag) = hex::decode(v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    aws_lc_rs::hmac::verify(&key, &message, &tag).is_ok()
        && t.parse::<i64>().is_ok_and(|t| (now - t).abs() < 300)
}
