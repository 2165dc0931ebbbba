//! The revocation feed: a subscription to the revocation channel, watched by a heartbeat (a
//! black-holed connection counts as lost within seconds) and, with Sentinel, ended when the
//! primary changes, so verify resubscribes and clears its cache.

use futures_util::StreamExt;

use super::connect::{Target, unavailable};
use super::{CONNECT_TIMEOUT, FEED_HEARTBEAT_INTERVAL, FEED_HEARTBEAT_TIMEOUT, RedisStore};
use crate::store::{RevocationStream, StoreError, StoreResult, keys};

/// The revocations announced from now on, ending when the subscription is lost.
pub(super) async fn subscribe(store: &RedisStore) -> StoreResult<RevocationStream> {
    // Watched from before the primary is read: a change from here on ends the stream.
    let mut moved = match &store.target {
        Target::Sentinel(f) => {
            let mut rx = f.epoch.subscribe();
            rx.borrow_and_update();
            Some(rx)
        }
        Target::Fixed(_) | Target::Cluster(_) => None,
    };
    let pubsub = match &store.target {
        // On a cluster, any node hears every PUBLISH (the cluster bus carries it): the listed
        // nodes are tried in turn, from the one after the last that failed.
        Target::Cluster(link) => {
            use std::sync::atomic::Ordering;
            let mut last = None;
            let mut found = None;
            for _ in 0..link.seeds.len() {
                let at = link.next_seed.load(Ordering::Relaxed) % link.seeds.len();
                match subscribed(&link.seeds[at]).await {
                    Ok(pubsub) => {
                        found = Some(pubsub);
                        break;
                    }
                    Err(e) => {
                        link.next_seed.store(at + 1, Ordering::Relaxed);
                        last = Some(e);
                    }
                }
            }
            match found {
                Some(pubsub) => pubsub,
                None => {
                    return Err(last.unwrap_or_else(|| {
                        StoreError::Unavailable("no cluster node listed".into())
                    }));
                }
            }
        }
        _ => subscribed(&store.primary()?.0).await?,
    };
    let (mut sink, messages) = pubsub.split();
    let (mut lost, lost_signal) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FEED_HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let primary_moved = async {
                match moved.as_mut() {
                    Some(rx) => {
                        let _ = rx.changed().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                // The subscriber dropped the stream: nothing left to watch.
                _ = lost.closed() => return,
                _ = tick.tick() => {}
                // Subscribed to a server that is no longer the primary: its messages
                // stop, so the subscriber must resubscribe (and assume it missed some).
                _ = primary_moved => {
                    tracing::warn!("the Redis primary changed: resubscribing to revocations");
                    let _ = lost.send(());
                    return;
                }
            }
            let pong =
                tokio::time::timeout(FEED_HEARTBEAT_TIMEOUT, sink.ping::<redis::Value>()).await;
            if !matches!(pong, Ok(Ok(_))) {
                tracing::warn!(
                    timeout_ms = FEED_HEARTBEAT_TIMEOUT.as_millis() as u64,
                    "revocation subscription did not answer its heartbeat: treating it as lost"
                );
                let _ = lost.send(());
                return;
            }
        }
    });
    Ok(messages
        .filter_map(|msg| async move {
            // Family messages and markers are for backups and restores; a family's tokens
            // are announced one by one.
            msg.get_payload::<String>().ok().filter(|p| {
                !p.starts_with(keys::FAMILY_REVOCATION_MESSAGE)
                    && !p.starts_with(keys::MARKER_MESSAGE)
            })
        })
        .take_until(lost_signal)
        .boxed())
}

/// A pub/sub connection to `client`'s server, subscribed to the revocation channel.
async fn subscribed(client: &redis::Client) -> StoreResult<redis::aio::PubSub> {
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| StoreError::Unavailable("timed out connecting for pub/sub".into()))?
        .map_err(unavailable)?;
    tokio::time::timeout(CONNECT_TIMEOUT, pubsub.subscribe(keys::REVOCATION_CHANNEL))
        .await
        .map_err(|_| StoreError::Unavailable("timed out subscribing".into()))?
        .map_err(unavailable)?;
    Ok(pubsub)
}
