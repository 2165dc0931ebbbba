//! What the store's failover tests share (Sentinel and Redis Cluster): verify under load while
//! a primary dies, the verdict on what it answered, and store calls retried through the
//! election.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcp_oauth_gateway::store::StoreResult;

use super::helpers::Verify;

/// One answer under load: when, whether for the cached token, the status.
pub type Seen = (Instant, bool, u16);

/// verify asked, every 40 ms until stopped, about the cached token and then the next fresh
/// token (a cache miss) while there are any.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Seen>>,
}

impl Load {
    pub fn start(verify: &Verify, cached: &str, fresh: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let verify = Verify {
            base: verify.base.clone(),
            settings: verify.settings.clone(),
        };
        let (flag, cached) = (stop.clone(), cached.to_string());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut fresh = fresh.into_iter();
            while !flag.load(Ordering::Relaxed) {
                seen.push((Instant::now(), true, verify.status(&cached).await));
                if let Some(token) = fresh.next() {
                    seen.push((Instant::now(), false, verify.status(&token).await));
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            seen
        });
        Self { stop, task }
    }

    pub async fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The verdict on a failover that began at `killed` and ended (a new primary elected or
/// promoted) at `elected`: the cached token answered 200 throughout, every cache miss 200 or
/// 503 (never 401 or 403), and every miss from 5 s after the election 200 again. Returns how
/// many misses got 503, of how many.
pub fn judged(seen: &[Seen], killed: Instant, elected: Instant, what: &str) -> (usize, usize) {
    let cached: Vec<u16> = seen.iter().filter(|s| s.1).map(|s| s.2).collect();
    assert!(
        cached.iter().all(|s| *s == 200),
        "a cached token keeps 200 through the failover: {cached:?}"
    );
    let misses: Vec<(f64, u16)> = seen
        .iter()
        .filter(|s| !s.1)
        .map(|s| (s.0.saturating_duration_since(killed).as_secs_f64(), s.2))
        .collect();
    assert!(
        misses.iter().all(|(_, s)| *s == 200 || *s == 503),
        "a cache miss gets 200 or 503, never 401 or 403: {misses:?}"
    );
    let refused = misses.iter().filter(|(_, s)| *s == 503).count();
    let last_503 = misses
        .iter()
        .filter(|(_, s)| *s == 503)
        .map(|(t, _)| *t)
        .fold(0.0, f64::max);
    eprintln!(
        "{what}: new primary {:.1} s after the kill; {refused} of {} misses got 503, the last {last_503:.1} s after the kill",
        elected.duration_since(killed).as_secs_f64(),
        misses.len()
    );
    let back_by = elected + Duration::from_secs(5);
    let late: Vec<u16> = seen
        .iter()
        .filter(|s| !s.1 && s.0 > back_by)
        .map(|s| s.2)
        .collect();
    assert!(
        !late.is_empty() && late.iter().all(|s| *s == 200),
        "misses are served again within 5 s of the new primary: {misses:?}"
    );
    (refused, misses.len())
}

/// Retries a store call while the store is unavailable (the failover), up to 30 s.
pub async fn settled<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
