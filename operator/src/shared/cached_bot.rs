//! A TradingBot as the operator's store keeps it: packed ([`Compact`]), with what the
//! watches read of every event (is a stop wanted?) worked out once when it is packed.
//!
//! Why: the store holds the operator's one full copy of every bot, and a typed
//! `TradingBot` is 2.5 KiB of mostly empty inline fields before its strings (3.7 KiB a
//! bot in a heap profile at 300 bots, the largest entry per bot). Packed, the spec and
//! status are one buffer of deflated JSON; a reconcile unpacks the bot it works on (a
//! couple of KiB inflated and parsed, once per reconcile).

use iq720_crds::{TradingBot, TradingBotStatus};

use super::compact::{Compact, Summary};

/// What the watches read of a bot at every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotFacts {
    /// `spec.emergencyStop`.
    pub emergency_stop: bool,
    /// `status.emergencyStop` records a stop not cleared yet (kept while the
    /// namespace's switch cannot be read).
    pub stop_in_force: bool,
}

impl Summary<TradingBot> for BotFacts {
    fn of(bot: &TradingBot) -> Self {
        Self {
            emergency_stop: bot.spec.emergency_stop,
            stop_in_force: bot
                .status
                .as_ref()
                .is_some_and(TradingBotStatus::stop_in_force),
        }
    }
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
}
