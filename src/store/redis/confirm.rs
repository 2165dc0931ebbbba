//! `WAIT`s shared by concurrent writes on Redis Cluster. A `WAIT` on a connection covers every
//! write sent on it before, and Redis answers one connection's commands in order, so one `WAIT`
//! per write would queue a burst of writes behind each other's `WAIT`s. Instead, a write that
//! completed before a `WAIT` to its slot was sent is confirmed by that `WAIT`: at most one is in
//! flight per slot, and a write waits for the first one sent after it. (A cluster routes `WAIT`
//! by slot: after a failover it goes to the new primary whether shared or not.)

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreResult;

/// The `WAIT`s of one connection: how many were sent, and the newest one that confirmed.
#[derive(Default)]
pub(super) struct WaitGroup {
    gate: tokio::sync::Mutex<()>,
    sent: AtomicU64,
    confirmed: AtomicU64,
}

impl WaitGroup {
    /// Confirms a write that has completed: by a `WAIT` sent after it, made by `wait` unless
    /// one is already confirmed. A failed `WAIT` confirms nothing; the next caller sends another.
    pub(super) async fn confirm<F, Fut>(&self, wait: F) -> StoreResult<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<()>>,
    {
        // Every WAIT numbered above this was sent after this write had completed.
        let after = self.sent.load(Ordering::SeqCst);
        if self.confirmed.load(Ordering::SeqCst) > after {
            return Ok(());
        }
        let _turn = self.gate.lock().await;
        if self.confirmed.load(Ordering::SeqCst) > after {
            return Ok(());
        }
        let number = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        wait().await?;
        self.confirmed.fetch_max(number, Ordering::SeqCst);
        Ok(())
    }
}

/// The wait groups of a store on a cluster, one per slot written to.
#[derive(Default)]
pub(super) struct Waits {
    slots: std::sync::Mutex<HashMap<u16, Arc<WaitGroup>>>,
}

impl Waits {
    pub(super) fn slot(&self, slot: u16) -> Arc<WaitGroup> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(slot)
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_their_waits_and_a_failed_one_confirms_nothing() {
        let group = Arc::new(WaitGroup::default());
        let sent = Arc::new(AtomicUsize::new(0));
        let confirms = (0..200).map(|_| {
            let (group, sent) = (group.clone(), sent.clone());
            tokio::spawn(async move {
                group
                    .confirm(|| async {
                        sent.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        Ok(())
                    })
                    .await
            })
        });
        for done in futures_util::future::join_all(confirms).await {
            done.unwrap().unwrap();
        }
        let n = sent.load(Ordering::SeqCst);
        assert!((1..=3).contains(&n), "200 writes at once sent {n} WAITs");

        // A write after the last WAIT needs its own; a failed one does not count.
        let failed = group
            .confirm(|| async { Err(crate::store::StoreError::Unavailable("no replica".into())) })
            .await;
        assert!(failed.is_err());
        let again = AtomicUsize::new(0);
        group
            .confirm(|| async {
                again.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(again.load(Ordering::SeqCst), 1);
    }
}
