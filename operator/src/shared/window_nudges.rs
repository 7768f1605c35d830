//! Bot changes that MaintenanceWindows read, told by the TradingBot watch to the
//! MaintenanceWindow controller: a bot whose [`window_view`] fingerprint changed (or
//! that appeared or went) nudges the windows of its namespace.
//!
//! Why here and not a watch of its own: a window's reconcile reads the bots from the
//! TradingBot controller's store. A second watch of the bots is not in step with that
//! store: its event can come first, and the reconcile it triggers reads the bot as it
//! was. The TradingBot watch's events come after its store took them, so a nudged
//! reconcile reads what nudged it. And a running bot's figures are written about
//! three times a minute: a watch that triggered on every write reconciled every window
//! of the namespace each time, each reconcile unpacking every bot there. Measured with
//! the e2e test `only_bot_changes_a_window_reads_reconcile_the_window`.
//!
//! The channel is a bounded broadcast: nothing piles up when no window controller
//! listens, and a listener that falls behind is told to reconcile every window.
//!
//! [`window_view`]: super::cached_bot::window_view

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::watcher;
use tokio::sync::broadcast;

use super::cached_bot::CachedBot;

/// Nudges the channel holds for a listener that has not read them yet.
const CAPACITY: usize = 1024;

/// What a window controller should reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nudge {
    /// The windows of this namespace.
    Namespace(String),
    /// Every window (the bots were listed again, or nudges were missed).
    All,
}

/// The TradingBot watch's side: the last fingerprint of each bot (by uid) and the
/// channel.
#[derive(Clone)]
pub struct WindowNudges {
    tx: broadcast::Sender<Nudge>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
}

impl Default for WindowNudges {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl WindowNudges {
    /// A listener for the window controller (it hears nudges sent from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<Nudge> {
        self.tx.subscribe()
    }

    /// Looks at an event of the TradingBot watch (after its store took it).
    pub fn observe(&self, event: &watcher::Event<CachedBot>) {
        let nudge = match event {
            watcher::Event::Apply(bot) | watcher::Event::InitApply(bot) => {
                let Some(uid) = bot.uid() else { return };
                let view = bot.summary.window_view;
                let Ok(mut seen) = self.seen.lock() else {
                    return self.send(Nudge::All);
                };
                if seen.insert(uid, view) == Some(view) {
                    return;
                }
                Nudge::Namespace(bot.namespace().unwrap_or_default())
            }
            watcher::Event::Delete(bot) => {
                if let (Some(uid), Ok(mut seen)) = (bot.uid(), self.seen.lock()) {
                    seen.remove(&uid);
                }
                Nudge::Namespace(bot.namespace().unwrap_or_default())
            }
            // A new list may have dropped bots that went while the watch was away.
            watcher::Event::InitDone => Nudge::All,
            watcher::Event::Init => return,
        };
        self.send(nudge);
    }

    fn send(&self, nudge: Nudge) {
        // No listener (yet): nothing to tell.
        let _ = self.tx.send(nudge);
    }
}

/// The nudges a listener receives, as a stream; a listener that fell behind gets
/// [`Nudge::All`] in place of what it missed.
pub fn stream(rx: broadcast::Receiver<Nudge>) -> impl futures::Stream<Item = Nudge> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(n) => Some((n, rx)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some((Nudge::All, rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::StreamExt;
    use iq720_crds::TradingBot;

    fn bot(uid: &str, pnl: &str, labels: &[(&str, &str)]) -> CachedBot {
        let mut b = TradingBot::new(
            "alpha",
            serde_json::from_value(serde_json::json!({"version": "1.0.0", "pairs": ["BTC/USDT"]}))
                .unwrap(),
        );
        b.metadata.namespace = Some("trading".into());
        b.metadata.uid = Some(uid.into());
        b.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        b.status = Some(serde_json::from_value(serde_json::json!({"pnl": pnl})).unwrap());
        CachedBot::pack(b)
    }

    #[tokio::test]
    async fn only_changes_a_window_reads_nudge() {
        let nudges = WindowNudges::default();
        let mut heard = Box::pin(stream(nudges.subscribe()));
        let ns = Nudge::Namespace("trading".into());
        nudges.observe(&watcher::Event::Apply(bot("u1", "+1.00", &[])));
        assert_eq!(heard.next().await, Some(ns.clone()), "a new bot nudges");
        nudges.observe(&watcher::Event::Apply(bot("u1", "+2.00", &[])));
        nudges.observe(&watcher::Event::Apply(bot(
            "u1",
            "+3.00",
            &[("tier", "prod")],
        )));
        assert_eq!(heard.next().await, Some(ns.clone()), "a label nudges");
        nudges.observe(&watcher::Event::Delete(bot(
            "u1",
            "+3.00",
            &[("tier", "prod")],
        )));
        assert_eq!(heard.next().await, Some(ns), "a deletion nudges");
        nudges.observe(&watcher::Event::InitDone);
        assert_eq!(heard.next().await, Some(Nudge::All));
        // the figure-only change above sent nothing: the channel is empty now
        assert!(
            futures::FutureExt::now_or_never(heard.next()).is_none(),
            "a figure change nudged"
        );
    }

    #[tokio::test]
    async fn a_listener_that_fell_behind_reconciles_everything() {
        let nudges = WindowNudges::default();
        let mut heard = Box::pin(stream(nudges.subscribe()));
        for i in 0..(CAPACITY + 5) {
            nudges.observe(&watcher::Event::Apply(bot(&format!("u{i}"), "+1.00", &[])));
        }
        assert_eq!(heard.next().await, Some(Nudge::All));
    }
}
