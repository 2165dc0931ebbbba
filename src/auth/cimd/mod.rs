//! Client ID Metadata Documents (`draft-ietf-oauth-client-id-metadata-document`): a client
//! whose `client_id` is an https URL is described by the JSON document at that URL, fetched
//! here (SSRF-safe, [`fetch`]), validated as a registration would be, and cached per its HTTP
//! caching headers within `CIMD_MIN_AGE`..`CIMD_MAX_AGE`. A refetch that fails for a passing
//! reason is answered from the cached copy for up to `CIMD_STALE_IF_ERROR`; the host's own
//! answer (404, an invalid document) ends the client at once. Concurrent requests for one URL
//! wait for one fetch.
//!
//! Nothing is stored: the document is the registration. A client may authenticate with
//! `none` (public) or `private_key_jwt` (keys from the document's `jwks` or `jwks_uri`).

pub mod address;
pub mod fetch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};

use super::OAuthError;
use super::client_metadata::{ClientMetadata, validate_for};
use crate::audit::{Actor, Event, Events, Kind};
use crate::config::CimdSettings;
use crate::records::ClientRecord;
use fetch::{FetchError, Fetcher};

/// The largest document read (the draft's recommendation).
pub const DOCUMENT_LIMIT: usize = 5 * 1024;
/// The largest `jwks_uri` document read.
pub const JWKS_LIMIT: usize = 64 * 1024;
/// A `jwks_uri` is fetched again for an unknown `kid` at most this often (or every
/// `CIMD_MIN_AGE`, when shorter).
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Documents and key sets kept in memory, each.
const CACHE_CAPACITY: u64 = 10_000;

/// How a metadata-document client authenticates at `/token`.
pub const DOCUMENT_AUTH_METHODS: &[&str] = &["none", "private_key_jwt"];

/// What a document or key set that cannot be used means for the request: the host's own
/// answer (404, 410, an invalid document) ends the client (`invalid_client`); a passing fault
/// (network, timeout, TLS, 5xx, 429) with no usable copy is a retryable 503, never a reason
/// for a client to drop its grant.
fn unusable(error: FetchError, what: &str) -> OAuthError {
    unusable_as(error, what, OAuthError::invalid_client)
}

/// `unusable`, with the error the host's own answer gives (`invalid_grant` for an
/// assertion's issuer).
pub fn unusable_as(
    error: FetchError,
    what: &str,
    definitive: fn(String) -> OAuthError,
) -> OAuthError {
    if error.transient {
        let mut e = OAuthError::temporarily_unavailable(format!(
            "{what} cannot be fetched right now ({}); retry shortly",
            error.message
        ));
        let wait = error.retry_in.unwrap_or(Duration::from_secs(1));
        e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        e
    } else {
        definitive(format!("{what}: {}", error.message))
    }
}

/// Whether `client_id` names a metadata document (rather than a registration).
pub fn is_document_id(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// Why `client_id` cannot be a document URL (the draft, §3): https, a host, a path, no
/// fragment, no credentials, no dot segments.
fn url_problem(client_id: &str) -> Option<&'static str> {
    let Ok(url) = url::Url::parse(client_id) else {
        return Some("is not a URL");
    };
    if url.scheme() != "https" {
        return Some("must be an https URL");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Some("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("must not carry credentials");
    }
    if url.fragment().is_some() || client_id.contains('#') {
        return Some("must not have a fragment");
    }
    if url.path() == "/" || url.path().is_empty() {
        return Some("must have a path");
    }
    // The parser resolves dot segments away: any in the original is refused.
    let raw_path = client_id
        .splitn(4, '/')
        .nth(3)
        .unwrap_or("")
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    if raw_path.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase();
        matches!(
            seg.as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        )
    }) {
        return Some("must not have . or .. path segments");
    }
    // The document must name itself exactly: the URL is compared as written.
    if url.as_str() != client_id {
        return Some("is not in normalized form");
    }
    None
}

/// Where a document client's keys are.
#[derive(Debug, Clone)]
pub enum ClientKeys {
    None,
    Inline(Arc<JwkSet>),
    Uri(url::Url),
}

/// A validated document.
#[derive(Debug)]
pub struct ClientDocument {
    pub client: ClientRecord,
    pub keys: ClientKeys,
}

struct Cached<T> {
    value: Arc<T>,
    /// When this value was fetched.
    fetched: Instant,
    /// When the URL was last tried, with or without success (an unknown `kid` refetches a
    /// key set at most every [`JWKS_REFETCH_INTERVAL`] from here).
    tried: Instant,
    fresh_until: Instant,
    stale_until: Instant,
    /// Failed refetches in a row while this copy is served stale.
    failures: u32,
}

/// A fetch that failed with nothing usable cached: the requests that were waiting for it get
/// its outcome, and, for a passing fault, so does everyone who asks before `until` instead of
/// fetching again.
struct Failed {
    error: FetchError,
    at: Instant,
    until: Instant,
    failures: u32,
}

/// How long a passing failure stands before the next try: 1, 2, 4 … 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// A cache of fetched values (documents, key sets) by URL, with one fetch at a time per URL.
struct UrlCache<T> {
    entries: moka::sync::Cache<String, Arc<Cached<T>>>,
    failures: moka::sync::Cache<String, Arc<Failed>>,
    fetching: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
}

impl<T: Send + Sync + 'static> UrlCache<T> {
    fn new(settings: &CimdSettings) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(settings.max_age + settings.stale_if_error)
                .build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(Duration::from_secs(60))
                .build(),
            fetching: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }
}

/// What a fetch and its validation gave: the value, or why not (`transient`: a stale copy
/// may answer instead).
type Outcome<T> = Result<T, FetchError>;

pub struct Documents {
    settings: CimdSettings,
    fetcher: Fetcher,
    documents: UrlCache<ClientDocument>,
    key_sets: UrlCache<JwkSet>,
    /// Trusted issuers' metadata (their `jwks_uri`, when the configuration names none).
    metadata: UrlCache<serde_json::Value>,
    scopes_supported: Vec<String>,
    metrics: prometheus::IntCounterVec,
    /// Where fetches are recorded (`cimd_document_fetched`, `cimd_document_refused`).
    audit: Option<Arc<dyn crate::store::Store>>,
}

impl Documents {
    pub fn new(
        settings: &CimdSettings,
        scopes_supported: &[String],
        metrics: prometheus::IntCounterVec,
    ) -> Result<Self, String> {
        Ok(Self {
            fetcher: Fetcher::new(settings.fetch_timeout, settings.test_loopback_ca.as_deref())?,
            documents: UrlCache::new(settings),
            key_sets: UrlCache::new(settings),
            metadata: UrlCache::new(settings),
            settings: settings.clone(),
            scopes_supported: scopes_supported.to_vec(),
            metrics,
            audit: None,
        })
    }

    /// Records every fetch's outcome in `store`'s audit trail.
    pub fn with_audit(mut self, store: Arc<dyn crate::store::Store>) -> Self {
        self.audit = Some(store);
        self
    }

    /// A fetch of `url` accepted (`error` none) or refused, in the trail. A client's document
    /// names the client; a key set only its URL.
    async fn report(&self, url: &str, client: bool, error: Option<&FetchError>) {
        let Some(store) = &self.audit else {
            return;
        };
        let kind = if error.is_some() {
            Kind::CimdDocumentRefused
        } else {
            Kind::CimdDocumentFetched
        };
        let mut event = Event::new(kind, Actor::System("cimd".into()))
            .detail("url", url)
            .detail("what", if client { "document" } else { "jwks" });
        if client {
            event = event.client(url);
        }
        match error {
            Some(e) if e.transient => event = event.failed(e.message.as_str()),
            Some(e) => event = event.refused(e.message.as_str()),
            None => {}
        }
        if let Err(e) = store.append_events(&Events::one(event)).await {
            tracing::warn!(error = %e, "cannot record a metadata fetch in the audit trail");
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The client `client_id` (an https URL) describes, fetched or cached.
    pub async fn client(&self, client_id: &str) -> Result<Arc<ClientDocument>, OAuthError> {
        let refuse =
            |why: String| OAuthError::invalid_client(format!("client_id {client_id}: {why}"));
        if !self.settings.enabled {
            return Err(refuse(
                "client ID metadata documents are not accepted here".into(),
            ));
        }
        if let Some(problem) = url_problem(client_id) {
            return Err(refuse(problem.into()));
        }
        let url = url::Url::parse(client_id).map_err(|_| refuse("is not a URL".into()))?;
        let host = url.host_str().unwrap_or("");
        if !self.settings.host_allowed(host) {
            return Err(refuse(format!(
                "documents from {host} are not accepted here"
            )));
        }
        self.cached(&self.documents, &url, false, || async {
            let fetched = self.fetcher.get(&url, DOCUMENT_LIMIT).await?;
            let document = self.document(client_id, &fetched.body)?;
            Ok((document, fetched.max_age))
        })
        .await
        .map_err(|e| unusable(e, &format!("client_id {client_id}")))
    }

    /// The keys a `private_key_jwt` client signs with; `refetch` asks for a fresh copy of a
    /// `jwks_uri` (an unknown `kid`: the client may have rotated), at most every 30 s.
    pub async fn keys(&self, keys: &ClientKeys, refetch: bool) -> Result<Arc<JwkSet>, OAuthError> {
        match keys {
            ClientKeys::None => Err(OAuthError::invalid_client("the client has no keys")),
            ClientKeys::Inline(keys) => Ok(keys.clone()),
            ClientKeys::Uri(uri) => self
                .key_set(uri, refetch)
                .await
                .map_err(|e| unusable(e, &format!("jwks_uri {uri}"))),
        }
    }

    /// The JWK set at `uri` (public signature keys only), fetched or cached; `refetch` as for
    /// [`Documents::keys`].
    pub async fn key_set(&self, uri: &url::Url, refetch: bool) -> Outcome<Arc<JwkSet>> {
        self.cached(&self.key_sets, uri, refetch, || async {
            let fetched = self.fetcher.get(uri, JWKS_LIMIT).await?;
            let keys = parse_key_set(&fetched.body).map_err(FetchError::definitive)?;
            Ok((keys, fetched.max_age))
        })
        .await
    }

    /// The JSON object at `uri` (an issuer's metadata), fetched or cached.
    pub async fn metadata(&self, uri: &url::Url) -> Outcome<Arc<serde_json::Value>> {
        self.cached(&self.metadata, uri, false, || async {
            let fetched = self.fetcher.get(uri, JWKS_LIMIT).await?;
            let value: serde_json::Value = serde_json::from_slice(&fetched.body)
                .ok()
                .filter(serde_json::Value::is_object)
                .ok_or_else(|| FetchError::definitive("the metadata is not a JSON object"))?;
            Ok((value, fetched.max_age))
        })
        .await
    }

    /// The cached value for `url` while fresh; else one fetch (others wait for it). A fetch
    /// that fails for a passing reason is answered from a stale copy when the copy is young
    /// enough, and the copy is marked fresh again for a backoff, so the requests waiting on the
    /// same URL share that outcome instead of each trying (and waiting on a hung host) in turn;
    /// with no usable copy the failure itself is shared the same way.
    async fn cached<T, F, Fut>(
        &self,
        cache: &UrlCache<T>,
        url: &url::Url,
        refetch: bool,
        fetch: F,
    ) -> Outcome<Arc<T>>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Outcome<(T, Option<Duration>)>>,
    {
        let key = url.as_str().to_string();
        let is_document = std::ptr::eq(
            (cache as *const UrlCache<T>).cast::<()>(),
            (&self.documents as *const UrlCache<ClientDocument>).cast::<()>(),
        );
        let interval = JWKS_REFETCH_INTERVAL.min(self.settings.min_age);
        let usable = |entry: &Cached<T>, now: Instant| {
            now < entry.fresh_until && !(refetch && now.duration_since(entry.tried) >= interval)
        };
        // `waiting_since`: when this request began to wait for a fetch, whose outcome (a
        // failure included) then answers it too.
        let settled = |now: Instant, waiting_since: Option<Instant>| -> Option<Outcome<Arc<T>>> {
            if let Some(entry) = cache.entries.get(&key)
                && usable(&entry, now)
            {
                return Some(Ok(entry.value.clone()));
            }
            match cache.failures.get(&key) {
                Some(failed)
                    if now < failed.until || waiting_since.is_some_and(|w| failed.at >= w) =>
                {
                    let mut error = failed.error.clone();
                    error.retry_in = Some(failed.until.saturating_duration_since(now));
                    Some(Err(error))
                }
                _ => None,
            }
        };
        let waiting_since = Instant::now();
        if let Some(outcome) = settled(waiting_since, None) {
            return outcome;
        }
        let lock = cache
            .fetching
            .get_with(key.clone(), || Arc::new(tokio::sync::Mutex::new(())));
        let _one_fetch = lock.lock().await;
        // Fetched (or failed) while we waited: that outcome answers us too.
        if let Some(outcome) = settled(Instant::now(), Some(waiting_since)) {
            return outcome;
        }
        let previous = cache.entries.get(&key);
        if let Some(entry) = &previous
            && refetch
            && Instant::now().duration_since(entry.tried) < interval
        {
            return Ok(entry.value.clone());
        }
        match fetch().await {
            Ok((value, max_age)) => {
                self.metrics.with_label_values(&["ok"]).inc();
                let now = Instant::now();
                let age = max_age
                    .unwrap_or(self.settings.min_age)
                    .clamp(self.settings.min_age, self.settings.max_age);
                let value = Arc::new(value);
                cache.entries.insert(
                    key.clone(),
                    Arc::new(Cached {
                        value: value.clone(),
                        fetched: now,
                        tried: now,
                        fresh_until: now + age,
                        stale_until: now + age + self.settings.stale_if_error,
                        failures: 0,
                    }),
                );
                cache.failures.invalidate(&key);
                self.report(&key, is_document, None).await;
                Ok(value)
            }
            Err(error) => {
                let now = Instant::now();
                if error.transient
                    && let Some(entry) = previous
                    && now < entry.stale_until
                {
                    self.metrics.with_label_values(&["stale"]).inc();
                    tracing::warn!(url = %url, error = %error.message, "metadata refetch failed; serving the cached copy");
                    let failures = entry.failures + 1;
                    cache.entries.insert(
                        key,
                        Arc::new(Cached {
                            value: entry.value.clone(),
                            fetched: entry.fetched,
                            tried: now,
                            fresh_until: (now + backoff(failures)).min(entry.stale_until),
                            stale_until: entry.stale_until,
                            failures,
                        }),
                    );
                    return Ok(entry.value.clone());
                }
                let result = if error.transient { "failed" } else { "refused" };
                self.metrics.with_label_values(&[result]).inc();
                tracing::info!(url = %url, error = %error.message, "metadata document not usable");
                cache.entries.invalidate(&key);
                let failures = cache.failures.get(&key).map_or(0, |f| f.failures) + 1;
                // The host's own answer stands for the requests already waiting; a passing
                // fault for a backoff.
                let hold = if error.transient {
                    backoff(failures)
                } else {
                    Duration::ZERO
                };
                self.report(&key, is_document, Some(&error)).await;
                cache.failures.insert(
                    key,
                    Arc::new(Failed {
                        error: error.clone(),
                        at: now,
                        until: now + hold,
                        failures,
                    }),
                );
                let mut error = error;
                error.retry_in = Some(hold);
                Err(error)
            }
        }
    }

    /// Validates a fetched document for `client_id`.
    fn document(&self, client_id: &str, body: &[u8]) -> Outcome<ClientDocument> {
        let bad = |message: String| FetchError::definitive(message);
        let json: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| bad(format!("the document is not JSON: {e}")))?;
        let Some(object) = json.as_object() else {
            return Err(bad("the document is not a JSON object".into()));
        };
        if object.get("client_id").and_then(|v| v.as_str()) != Some(client_id) {
            return Err(bad("the document's client_id is not exactly its URL".into()));
        }
        for forbidden in ["client_secret", "client_secret_expires_at"] {
            if object.contains_key(forbidden) {
                return Err(bad(format!(
                    "a metadata document must not carry {forbidden}"
                )));
            }
        }
        if object
            .get("client_name")
            .and_then(|v| v.as_str())
            .is_none_or(|n| n.trim().is_empty())
        {
            return Err(bad("the document has no client_name".into()));
        }
        let metadata: ClientMetadata = serde_json::from_value(json.clone())
            .map_err(|e| bad(format!("invalid client metadata: {e}")))?;
        let valid = validate_for(metadata, &self.scopes_supported, DOCUMENT_AUTH_METHODS)
            .map_err(|e| bad(e.description.to_string()))?;
        let client = valid.into_record(client_id.to_string());
        let jwks = object.get("jwks");
        let jwks_uri = object.get("jwks_uri");
        let keys = match (jwks, jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(bad("the document has both jwks and jwks_uri".into()));
            }
            (Some(set), None) => ClientKeys::Inline(Arc::new(
                parse_key_set(set.to_string().as_bytes()).map_err(bad)?,
            )),
            (None, Some(uri)) => {
                let uri = uri
                    .as_str()
                    .and_then(|u| url::Url::parse(u).ok())
                    .filter(|u| u.scheme() == "https" && u.host_str().is_some())
                    .ok_or_else(|| bad("jwks_uri must be an https URL".into()))?;
                if !self.settings.host_allowed(uri.host_str().unwrap_or("")) {
                    return Err(bad("jwks_uri is on a host not accepted here".into()));
                }
                ClientKeys::Uri(uri)
            }
            (None, None) => ClientKeys::None,
        };
        if client.token_endpoint_auth_method == "private_key_jwt"
            && matches!(keys, ClientKeys::None)
        {
            return Err(bad(
                "private_key_jwt needs jwks or jwks_uri in the document".into(),
            ));
        }
        Ok(ClientDocument { client, keys })
    }
}

/// The keys an operator registered for a client (`clients create --jwks-uri | --jwks`).
pub fn registered_keys(client: &ClientRecord) -> Result<ClientKeys, String> {
    match (&client.jwks, &client.jwks_uri) {
        (Some(set), _) => Ok(ClientKeys::Inline(Arc::new(parse_key_set(
            set.to_string().as_bytes(),
        )?))),
        (None, Some(uri)) => url::Url::parse(uri)
            .map(ClientKeys::Uri)
            .map_err(|e| format!("jwks_uri {uri}: {e}")),
        (None, None) => Ok(ClientKeys::None),
    }
}

/// A JWK set of public signature keys (RSA, EC P-256, Ed25519); symmetric and private keys
/// are refused.
pub fn parse_key_set(body: &[u8]) -> Result<JwkSet, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    if set.keys.is_empty() {
        return Err("the JWK set has no keys".into());
    }
    let raw: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let has_private = raw["keys"]
        .as_array()
        .is_some_and(|keys| keys.iter().any(|k| k.get("d").is_some()));
    if has_private {
        return Err("the JWK set publishes a private key".into());
    }
    if set
        .keys
        .iter()
        .any(|k| matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
    {
        return Err("the JWK set has a symmetric key".into());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_urls_follow_the_draft() {
        assert_eq!(
            url_problem("https://claude.ai/oauth/mcp-oauth-client-metadata"),
            None
        );
        assert_eq!(
            url_problem("https://vscode.dev/oauth/client-metadata.json"),
            None
        );
        for bad in [
            "http://example.com/client.json",
            "https://example.com",
            "https://example.com/",
            "https://user:pw@example.com/c.json",
            "https://example.com/c.json#x",
            "https://example.com/a/../c.json",
            "https://example.com/a/./c.json",
            "https://example.com/a/%2e%2e/c.json",
            "https://EXAMPLE.com/c.json",
            "https://example.com:443/c.json",
            "not a url",
        ] {
            assert!(url_problem(bad).is_some(), "{bad}");
        }
    }
}
