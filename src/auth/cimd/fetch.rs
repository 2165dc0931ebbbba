//! Fetching a document from a URL a stranger chose, without becoming their proxy into our
//! network (SSRF): https only; the host's addresses resolved by us and every one checked
//! (`address::refusal`), and the connection made to exactly those (a resolver that answers
//! differently the second time, DNS rebinding, gains nothing); IP-literal hosts checked the
//! same way; no proxy, no redirects; a size cap enforced while reading; one timeout for all.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{AGE, CACHE_CONTROL, CONTENT_LENGTH, EXPIRES};

use super::address::refusal;

/// Why a fetch failed. `transient` failures (network, timeouts, 5xx) may be answered from a
/// stale copy; the others are the host's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub message: String,
    pub transient: bool,
    /// For a passing fault: when the next fetch will be tried (the client's `Retry-After`).
    pub retry_in: Option<Duration>,
}

impl FetchError {
    pub fn definitive(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
            retry_in: None,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
            retry_in: None,
        }
    }
}

/// A fetched body and how long the host says it stays fresh (`None`: it says nothing).
#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub max_age: Option<Duration>,
}

/// How names are resolved: the system resolver, or a stand-in in tests.
type Lookup = Arc<
    dyn Fn(String) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>
        + Send
        + Sync,
>;

fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map(Iterator::collect)
        })
    })
}

/// Resolves each connection's host and hands the connector only addresses that passed the
/// check; if any answer is refused the host is (an error naming why). The check and the
/// connection use the same answer, so a name that resolves elsewhere the second time gains
/// nothing.
struct GuardedResolver {
    loopback_ok: bool,
    lookup: Lookup,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let loopback_ok = self.loopback_ok;
        let host = name.as_str().to_string();
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            let found: Vec<SocketAddr> = lookup
                .await
                .map_err(|e| boxed(format!("{host} does not resolve: {e}")))?;
            if found.is_empty() {
                return Err(boxed(format!("{host} has no address")));
            }
            // Any refused address refuses the host: a name that points inside is not served
            // from its other addresses either.
            if let Some((ip, why)) = found
                .iter()
                .find_map(|a| refusal(a.ip(), loopback_ok).map(|why| (a.ip(), why)))
            {
                return Err(boxed(format!(
                    "{host} resolves to {ip}, {why}: not fetched"
                )));
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

fn boxed(message: String) -> Box<dyn std::error::Error + Send + Sync> {
    message.into()
}

/// The guarded HTTP client, shared by every fetch.
pub struct Fetcher {
    client: reqwest::Client,
    loopback_ok: bool,
}

impl Fetcher {
    pub fn new(
        timeout: Duration,
        test_loopback_ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let loopback_ok = test_loopback_ca.is_some();
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("mcp-oauth-gateway/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                loopback_ok,
                lookup: system_lookup(),
            }));
        if let Some(path) = test_loopback_ca {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            loopback_ok,
        })
    }

    /// GETs `url` (already checked to be https) for at most `limit` bytes of body.
    pub async fn get(&self, url: &url::Url, limit: usize) -> Result<Fetched, FetchError> {
        if url.scheme() != "https" {
            return Err(FetchError::definitive("only https URLs are fetched"));
        }
        // The resolver never sees an IP-literal host: check it here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(FetchError::definitive("the URL has no host")),
        };
        if let Some(ip) = literal
            && let Some(why) = refusal(ip, self.loopback_ok)
        {
            return Err(FetchError::definitive(format!(
                "{ip} is {why}: not fetched"
            )));
        }
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                let chain = error_chain(&e);
                // A refused address is the host's doing, not a passing fault.
                if chain.contains("not fetched") {
                    FetchError::definitive(chain)
                } else {
                    FetchError::transient(chain)
                }
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::definitive(format!(
                "the document answered {status}; redirects are not followed"
            )));
        }
        // A server error or being told to come back later is a passing fault; any other
        // answer (404, 410, 403, …) is the host's word about the document.
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            return Err(FetchError::transient(format!(
                "the document answered {status}"
            )));
        }
        if status != reqwest::StatusCode::OK {
            return Err(FetchError::definitive(format!(
                "the document answered {status}"
            )));
        }
        let headers = response.headers().clone();
        if let Some(length) = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && length > limit as u64
        {
            return Err(FetchError::definitive(format!(
                "the document is {length} bytes; at most {limit} are read"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::transient(error_chain(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::definitive(format!(
                    "the document is over {limit} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            body,
            max_age: freshness(&headers),
        })
    }
}

/// The error and its causes on one line (reqwest hides the resolver's message in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// How long the response says it is fresh (RFC 9111 §4.2.1): `no-store`/`no-cache` → zero;
/// `s-maxage`, else `max-age`, less `Age`; else `Expires` (relative to now); else nothing.
pub fn freshness(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let cache_control: Vec<String> = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    if cache_control
        .iter()
        .any(|d| d == "no-store" || d == "no-cache")
    {
        return Some(Duration::ZERO);
    }
    let directive = |name: &str| {
        cache_control.iter().find_map(|d| {
            d.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
        })
    };
    let age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if let Some(max_age) = directive("s-maxage").or_else(|| directive("max-age")) {
        return Some(Duration::from_secs(max_age.saturating_sub(age)));
    }
    let expires = headers.get(EXPIRES)?.to_str().ok()?;
    let at = httpdate_to_unix(expires)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds; anything else (the
/// obsolete formats, `0`) is `Some(0)`: already expired, as RFC 9111 §5.3 says.
fn httpdate_to_unix(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return Some(0);
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let (day, year): (u64, u64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    let [h, m, s] = hms.as_slice() else {
        return Some(0);
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y % 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3_600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    /// A name that answers a public address first and an internal one next (DNS rebinding):
    /// each resolution is checked on its own, and the connector only ever gets the addresses
    /// that passed.
    #[tokio::test]
    async fn every_resolution_is_checked_so_rebinding_gains_nothing() {
        let answers = Arc::new(std::sync::Mutex::new(vec![
            vec!["127.0.0.1:0".parse().unwrap()],
            vec![
                "10.0.0.7:0".parse().unwrap(),
                "93.184.216.34:0".parse().unwrap(),
            ],
            vec!["93.184.216.34:0".parse().unwrap()],
        ]));
        let lookup: Lookup = Arc::new(move |_host: String| {
            let next = answers.lock().unwrap().pop().unwrap_or_default();
            Box::pin(async move { Ok(next) })
        });
        let resolver = GuardedResolver {
            loopback_ok: false,
            lookup,
        };
        let name = |h: &str| h.parse::<Name>().unwrap();
        let first: Vec<SocketAddr> = resolver
            .resolve(name("rebind.example"))
            .await
            .unwrap()
            .collect();
        assert_eq!(
            first,
            vec!["93.184.216.34:0".parse::<SocketAddr>().unwrap()]
        );
        // Mixed answers: refused whole, not served from the public one.
        let second = resolver.resolve(name("rebind.example")).await;
        let message = second.err().unwrap().to_string();
        assert!(
            message.contains("10.0.0.7") && message.contains("private"),
            "{message}"
        );
        let third = resolver.resolve(name("rebind.example")).await;
        assert!(third.err().unwrap().to_string().contains("loopback"));
    }

    #[test]
    fn freshness_follows_the_caching_headers() {
        assert_eq!(freshness(&headers(&[])), None);
        assert_eq!(
            freshness(&headers(&[("cache-control", "public, max-age=600")])),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            freshness(&headers(&[
                ("cache-control", "max-age=600, s-maxage=60"),
                ("age", "20")
            ])),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            freshness(&headers(&[("cache-control", "no-cache")])),
            Some(Duration::ZERO)
        );
        assert_eq!(
            freshness(&headers(&[("expires", "0")])),
            Some(Duration::ZERO)
        );
        assert_eq!(
            freshness(&headers(&[("expires", "Sun, 06 Nov 1994 08:49:37 GMT")])),
            Some(Duration::ZERO)
        );
        assert_eq!(
            httpdate_to_unix("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
    }
}
