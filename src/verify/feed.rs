//! The revocation feed: every verify replica subscribes to `oauth:revocations` and marks a
//! revoked `jti` dead at once. When the subscription drops, messages may have been missed, so
//! the liveness cache is cleared when the subscription is re-established (and, failing
//! closed, as soon as it is lost); a missed message can never extend a revoked token's life
//! beyond the liveness TTL.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use crate::config::FailureMode;

use super::VerifyState;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs until the task is aborted (the server stops).
pub async fn run(state: Arc<VerifyState>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match state.store.subscribe_revocations().await {
            Ok(mut stream) => {
                state.liveness.clear();
                state.advance_liveness_epoch();
                state.feed_up.store(true, Ordering::SeqCst);
                state.metrics.feed_up.set(1);
                tracing::info!("revocation feed subscribed");
                backoff = MIN_BACKOFF;
                while let Some(jti) = stream.next().await {
                    state.metrics.revocations_received.inc();
                    state.liveness.mark_revoked(jti, state.now_ms()).await;
                }
                state.feed_up.store(false, Ordering::SeqCst);
                state.advance_liveness_epoch();
                state.metrics.feed_up.set(0);
                state.metrics.feed_reconnects.inc();
                if state.settings.failure_mode == FailureMode::Closed {
                    state.liveness.clear();
                }
                tracing::warn!("revocation feed lost; resubscribing");
            }
            Err(e) => {
                state.metrics.redis_errors.inc();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "revocation feed cannot subscribe");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
