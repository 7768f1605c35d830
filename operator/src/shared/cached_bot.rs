//! A TradingBot as the operator's store keeps it: packed ([`Compact`]), with what the
//! watches read of every event (is a stop wanted?) worked out once when it is packed.
//!
//! Why: the store holds the operator's one full copy of every bot, and a typed
//! `TradingBot` is 2.5 KiB of mostly empty inline fields before its strings (3.7 KiB a
//! bot in a heap profile at 300 bots, the largest entry per bot). Packed, the spec and
//! status are one buffer of deflated JSON; a reconcile unpacks the bot it works on (a
//! couple of KiB inflated and parsed, once per reconcile).

use std::hash::{Hash, Hasher};

use iq720_crds::trading_bot::ROTATE_KEYS_ANNOTATION;
use iq720_crds::{TradingBot, TradingBotStatus};

use super::compact::{Compact, Summary};
use super::conditions::MAINTENANCE_PENDING;

/// What the watches read of a bot at every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotFacts {
    /// `spec.emergencyStop`.
    pub emergency_stop: bool,
    /// `status.emergencyStop` records a stop not cleared yet (kept while the
    /// namespace's switch cannot be read).
    pub stop_in_force: bool,
    /// A fingerprint of what a MaintenanceWindow reads of the bot ([`window_view`]):
    /// a bot change that leaves it equal changes nothing in any window.
    pub window_view: u64,
}

impl Summary<TradingBot> for BotFacts {
    fn of(bot: &TradingBot) -> Self {
        Self {
            emergency_stop: bot.spec.emergency_stop,
            stop_in_force: bot
                .status
                .as_ref()
                .is_some_and(TradingBotStatus::stop_in_force),
            window_view: window_view(bot),
        }
    }
}

/// A fingerprint of what a MaintenanceWindow's reconcile reads of a bot: the labels
/// its selector matches, whether the bot may run tasks (phase, emergency stop,
/// deletion), the `MaintenancePending` condition (a deferred upgrade and since when)
/// and the key-rotation state (a deferred rotation and when one falls due).
///
/// Why: a running bot's status changes at every figure write (PnL, positions, win
/// rate: about three times a minute), and without this every such write reconciled
/// every window of its namespace, each reading every bot there.
pub fn window_view(bot: &TradingBot) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bot.metadata.labels.hash(&mut h);
    bot.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATE_KEYS_ANNOTATION))
        .hash(&mut h);
    bot.metadata.deletion_timestamp.is_some().hash(&mut h);
    bot.spec.emergency_stop.hash(&mut h);
    if let Some(st) = &bot.status {
        st.phase.as_ref().map(std::mem::discriminant).hash(&mut h);
        if let Some(c) = st
            .conditions
            .iter()
            .find(|c| c.type_ == MAINTENANCE_PENDING)
        {
            (&c.status, c.last_transition_time.0.as_second()).hash(&mut h);
        }
        if let Some(k) = &st.api_keys {
            k.rotation.is_some().hash(&mut h);
            k.next_rotation
                .as_ref()
                .map(|t| t.0.as_second())
                .hash(&mut h);
            k.last_rotation_request.hash(&mut h);
        }
    }
    h.finish()
}

/// A TradingBot as the store keeps it.
pub type CachedBot = Compact<TradingBot, BotFacts>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bot(stop: bool) -> TradingBot {
        let mut b = TradingBot::new(
            "alpha",
            serde_json::from_value(serde_json::json!({"version": "1.0.0", "pairs": ["BTC/USDT"]}))
                .unwrap(),
        );
        b.metadata.namespace = Some("trading".into());
        b.metadata.finalizers = Some(vec!["trading.iq720.io/close-positions".into()]);
        b.spec.emergency_stop = stop;
        b.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running", "pnl": "+1.00",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                    "message": "trading", "lastTransitionTime": "2026-12-07T00:00:00Z"}]
            }))
            .unwrap(),
        );
        b
    }

    #[test]
    fn a_cached_bot_unpacks_to_the_bot_and_says_whether_a_stop_is_wanted() {
        for stop in [false, true] {
            let cached = CachedBot::pack(bot(stop));
            assert_eq!(cached.summary.emergency_stop, stop);
            assert!(!cached.summary.stop_in_force, "no stop recorded");
            let (back, original) = (cached.unpack().unwrap(), bot(stop));
            assert_eq!(back.metadata, original.metadata);
            assert_eq!(back.spec, original.spec);
            assert_eq!(back.status, original.status);
        }
        let mut stopped = bot(true);
        if let Some(st) = stopped.status.as_mut() {
            st.emergency_stop = serde_json::from_value(serde_json::json!({
                "requestedAt": "2026-12-07T00:00:00Z"
            }))
            .ok();
        }
        assert!(CachedBot::pack(stopped.clone()).summary.stop_in_force);
        if let Some(e) = stopped
            .status
            .as_mut()
            .and_then(|s| s.emergency_stop.as_mut())
        {
            e.cleared_at = e.requested_at.clone();
        }
        assert!(!CachedBot::pack(stopped).summary.stop_in_force, "cleared");
    }

    #[test]
    fn the_window_view_ignores_figures_and_follows_what_a_window_reads() {
        let base = bot(false);
        let view = window_view(&base);
        let mut figures = base.clone();
        if let Some(st) = figures.status.as_mut() {
            st.pnl = Some("+7.25".into());
            st.open_positions = Some(4);
        }
        assert_eq!(
            window_view(&figures),
            view,
            "figures are not read by windows"
        );
        let mut labelled = base.clone();
        labelled.metadata.labels = Some([("tier".to_string(), "prod".to_string())].into());
        assert_ne!(window_view(&labelled), view);
        let mut pending = base.clone();
        if let Some(st) = pending.status.as_mut() {
            st.conditions.push(
                serde_json::from_value(serde_json::json!({"type": MAINTENANCE_PENDING,
                    "status": "True", "reason": "WaitingForWindow", "message": "upgrade",
                    "lastTransitionTime": "2026-12-07T01:00:00Z"}))
                .unwrap(),
            );
        }
        assert_ne!(window_view(&pending), view);
        let mut asked = base.clone();
        asked.metadata.annotations =
            Some([(ROTATE_KEYS_ANNOTATION.to_string(), "1".to_string())].into());
        assert_ne!(window_view(&asked), view);
        assert_ne!(
            window_view(&bot(true)),
            view,
            "an emergency stop ends tasks"
        );
    }
}
