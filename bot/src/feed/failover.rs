//! Primary/backup source selection with automatic failover and fail-back, and the pin
//! of `marketData.use` (`primary` / `backup`): a pinned manager stays on its source,
//! fresh or not, and never switches on its own until the pin is lifted (`auto`).
//!
//! Time is passed in as monotonic milliseconds so the rules are unit-testable.

use super::{FeedError, MarketDataSource, build_source};
use crate::config::{FailbackPolicy, MarketDataConfig, SourceUse};
use serde::Serialize;

/// Which configured source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `marketData.primary`.
    Primary,
    /// `marketData.backup`.
    Backup,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }
    /// Parse `primary` / `backup`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "primary" => Some(Role::Primary),
            "backup" => Some(Role::Backup),
            _ => None,
        }
    }
}

/// Why the active source is the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Started on it.
    Initial,
    /// Automatic switch away from a stale source.
    Failover,
    /// Automatic return to the primary.
    Failback,
    /// Switched over the API.
    Manual,
    /// Pinned by `marketData.use` (no automatic switch while pinned).
    Pinned,
    /// The pin was lifted (`use: auto`): the source stays until the automatic rules
    /// move it (fail-back from the backup as `failback` says, failover when stale).
    Unpinned,
}

/// A source switch that just happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// Previously active.
    pub from: Role,
    /// Now active.
    pub to: Role,
    /// Why.
    pub why: Selection,
}

/// Errors from manual control.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwitchError {
    /// No backup is configured.
    #[error("no backup market data source is configured")]
    NoBackup,
    /// The target has no fresh data.
    #[error("the {0} source is stale; refusing to switch to it")]
    Stale(&'static str),
    /// `marketData.use` pins the bot to another source.
    #[error(
        "marketData.use pins the bot to the {0} source; set marketData.use to auto (spec.marketData.use of the TradingBot) before switching by hand"
    )]
    Pinned(&'static str),
}

struct Slot {
    name: String,
    role: Role,
    source: Box<dyn MarketDataSource>,
    stall_after_ms: Option<u64>,
    stalled: bool,
    last_tick_ms: Option<u64>,
    up_since_ms: Option<u64>,
    ticks: u64,
}

/// Snapshot of one source for status and metrics.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// Display name.
    pub name: String,
    /// Kind (`simulator`, `csv`).
    pub kind: &'static str,
    /// Role.
    pub role: Role,
    /// Whether it is the active source.
    pub active: bool,
    /// Seconds since its last tick.
    pub age_seconds: f64,
    /// Whether that age is within `staleAfter`.
    pub fresh: bool,
    /// Whether the test hook holds it stalled.
    pub stalled: bool,
    /// Ticks produced.
    pub ticks: u64,
}

/// The source manager.
pub struct FeedManager {
    slots: Vec<Slot>,
    active: usize,
    selection: Selection,
    stale_after_ms: u64,
    failback: FailbackPolicy,
    failback_after_ms: u64,
    created_ms: u64,
    failovers: u64,
    use_source: SourceUse,
}

impl FeedManager {
    /// Build sources from config; `now_ms` is monotonic time.
    pub fn new(cfg: &MarketDataConfig, pairs: &[String], now_ms: u64) -> Result<Self, FeedError> {
        let mut slots = vec![Self::slot(&cfg.primary, Role::Primary, pairs, now_ms)?];
        if let Some(b) = &cfg.backup {
            slots.push(Self::slot(b, Role::Backup, pairs, now_ms)?);
        }
        let mut m = FeedManager {
            slots,
            active: 0,
            selection: Selection::Initial,
            stale_after_ms: cfg.stale_after.0.as_millis() as u64,
            failback: cfg.failback,
            failback_after_ms: cfg.failback_after.unwrap_or(cfg.stale_after).0.as_millis() as u64,
            created_ms: now_ms,
            failovers: 0,
            use_source: SourceUse::Auto,
        };
        if cfg.use_source.is_pinned() {
            // The configuration was validated: a pinned backup exists.
            m.set_use(cfg.use_source)
                .map_err(|e| FeedError::Pin(e.to_string()))?;
            m.selection = Selection::Pinned;
        }
        Ok(m)
    }

    fn slot(
        c: &crate::config::SourceConfig,
        role: Role,
        pairs: &[String],
        now_ms: u64,
    ) -> Result<Slot, FeedError> {
        Ok(Slot {
            name: c.display_name(role.as_str()),
            role,
            source: build_source(c, pairs)?,
            stall_after_ms: c.stall_after.map(|d| now_ms + d.0.as_millis() as u64),
            stalled: false,
            last_tick_ms: None,
            up_since_ms: None,
            ticks: 0,
        })
    }

    /// Poll every source for every pair; ticks of the active source go to `out`.
    #[inline]
    pub fn poll(&mut self, now_ms: u64, n_pairs: usize, out: &mut Vec<(usize, f64)>) {
        let stale_after = self.stale_after_ms;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.stalled || slot.stall_after_ms.is_some_and(|t| now_ms >= t) {
                continue;
            }
            let mut got = false;
            for pair in 0..n_pairs {
                if let Some(px) = slot.source.poll(pair) {
                    got = true;
                    slot.ticks += 1;
                    if i == self.active {
                        out.push((pair, px));
                    }
                }
            }
            if got {
                if slot
                    .last_tick_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) > stale_after)
                {
                    slot.up_since_ms = Some(now_ms);
                }
                slot.last_tick_ms = Some(now_ms);
            }
        }
    }

    fn age_ms(&self, idx: usize, now_ms: u64) -> u64 {
        let last = self.slots[idx].last_tick_ms.unwrap_or(self.created_ms);
        now_ms.saturating_sub(last)
    }

    fn fresh(&self, idx: usize, now_ms: u64) -> bool {
        self.slots[idx].last_tick_ms.is_some() && self.age_ms(idx, now_ms) <= self.stale_after_ms
    }

    /// Apply failover / fail-back rules; returns the switch if one happened. A pinned
    /// manager never switches on its own.
    pub fn evaluate(&mut self, now_ms: u64) -> Option<Switch> {
        if self.slots.len() < 2 || self.use_source.is_pinned() {
            return None;
        }
        let other = 1 - self.active;
        if self.age_ms(self.active, now_ms) > self.stale_after_ms {
            if self.fresh(other, now_ms) {
                self.failovers += 1;
                return Some(self.set_active(other, Selection::Failover));
            }
            return None;
        }
        if self.failback == FailbackPolicy::Auto
            && self.slots[self.active].role == Role::Backup
            && matches!(self.selection, Selection::Failover | Selection::Unpinned)
            && self.fresh(0, now_ms)
            && self.slots[0]
                .up_since_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= self.failback_after_ms)
        {
            return Some(self.set_active(0, Selection::Failback));
        }
        None
    }

    fn set_active(&mut self, idx: usize, why: Selection) -> Switch {
        let from = self.slots[self.active].role;
        self.active = idx;
        self.selection = why;
        Switch {
            from,
            to: self.slots[idx].role,
            why,
        }
    }

    /// Apply `marketData.use`: pin to a source (at once, fresh or not: the pin is what
    /// was asked for, and its staleness is reported) or lift the pin (`auto`: the
    /// active source stays until the automatic rules move it). Returns the switch if
    /// one happened; pinning to an absent backup is refused and changes nothing.
    pub fn set_use(&mut self, use_source: SourceUse) -> Result<Option<Switch>, SwitchError> {
        let role = match use_source {
            SourceUse::Auto => {
                if self.use_source.is_pinned() {
                    self.use_source = SourceUse::Auto;
                    self.selection = Selection::Unpinned;
                }
                return Ok(None);
            }
            SourceUse::Primary => Role::Primary,
            SourceUse::Backup => Role::Backup,
        };
        let idx = self
            .slots
            .iter()
            .position(|s| s.role == role)
            .ok_or(SwitchError::NoBackup)?;
        self.use_source = use_source;
        if idx == self.active {
            self.selection = Selection::Pinned;
            return Ok(None);
        }
        Ok(Some(self.set_active(idx, Selection::Pinned)))
    }

    /// `marketData.use` in force.
    pub fn use_source(&self) -> SourceUse {
        self.use_source
    }

    /// Manual switch (over the API); refused while `marketData.use` pins another
    /// source.
    pub fn switch_to(&mut self, role: Role, now_ms: u64) -> Result<Option<Switch>, SwitchError> {
        match (self.use_source, role) {
            (SourceUse::Primary, Role::Backup) => return Err(SwitchError::Pinned("primary")),
            (SourceUse::Backup, Role::Primary) => return Err(SwitchError::Pinned("backup")),
            _ => {}
        }
        let idx = self
            .slots
            .iter()
            .position(|s| s.role == role)
            .ok_or(SwitchError::NoBackup)?;
        if idx == self.active {
            if !self.use_source.is_pinned() {
                self.selection = Selection::Manual;
            }
            return Ok(None);
        }
        if !self.fresh(idx, now_ms) {
            return Err(SwitchError::Stale(role.as_str()));
        }
        Ok(Some(self.set_active(idx, Selection::Manual)))
    }

    /// Test hook: hold a source stalled (no ticks) or release it.
    pub fn set_stalled(&mut self, role: Role, stalled: bool) -> Result<(), SwitchError> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.role == role)
            .ok_or(SwitchError::NoBackup)?;
        slot.stalled = stalled;
        Ok(())
    }

    /// Active role.
    pub fn active_role(&self) -> Role {
        self.slots[self.active].role
    }
    /// Active source name.
    pub fn active_name(&self) -> &str {
        &self.slots[self.active].name
    }
    /// Why the active source is active.
    pub fn selection(&self) -> Selection {
        self.selection
    }
    /// Automatic failovers since start.
    pub fn failovers(&self) -> u64 {
        self.failovers
    }
    /// Whether the active source is within `staleAfter`.
    pub fn active_fresh(&self, now_ms: u64) -> bool {
        self.fresh(self.active, now_ms)
    }
    /// Per-source status.
    pub fn status(&self, now_ms: u64) -> Vec<SourceStatus> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| SourceStatus {
                name: s.name.clone(),
                kind: s.source.kind(),
                role: s.role,
                active: i == self.active,
                age_seconds: self.age_ms(i, now_ms) as f64 / 1000.0,
                fresh: self.fresh(i, now_ms),
                stalled: s.stalled || s.stall_after_ms.is_some_and(|t| now_ms >= t),
                ticks: s.ticks,
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{HumanDuration, SourceConfig};

    fn mgr(policy: FailbackPolicy) -> FeedManager {
        let cfg = MarketDataConfig {
            backup: Some(SourceConfig::simulator(2)),
            stale_after: HumanDuration::secs(1),
            failback: policy,
            failback_after: Some(HumanDuration::secs(2)),
            ..MarketDataConfig::default()
        };
        FeedManager::new(&cfg, &["A/B".to_string()], 0).unwrap()
    }

    fn run(m: &mut FeedManager, from: u64, to: u64) -> Vec<Switch> {
        let mut out = vec![];
        let mut sw = vec![];
        for t in (from..to).step_by(100) {
            m.poll(t, 1, &mut out);
            sw.extend(m.evaluate(t));
        }
        sw
    }

    #[test]
    fn fails_over_when_primary_stalls_and_back_when_it_recovers() {
        let mut m = mgr(FailbackPolicy::Auto);
        assert!(run(&mut m, 0, 2000).is_empty());
        m.set_stalled(Role::Primary, true).unwrap();
        let sw = run(&mut m, 2000, 4000);
        assert_eq!(
            sw,
            vec![Switch {
                from: Role::Primary,
                to: Role::Backup,
                why: Selection::Failover
            }]
        );
        assert_eq!(m.failovers(), 1);
        assert_eq!(m.active_role(), Role::Backup);
        m.set_stalled(Role::Primary, false).unwrap();
        // fresh again, but must stay fresh for failbackAfter (2s) first
        let sw = run(&mut m, 4000, 5500);
        assert!(sw.is_empty());
        let sw = run(&mut m, 5500, 7000);
        assert_eq!(
            sw,
            vec![Switch {
                from: Role::Backup,
                to: Role::Primary,
                why: Selection::Failback
            }]
        );
    }

    #[test]
    fn manual_policy_stays_on_backup() {
        let mut m = mgr(FailbackPolicy::Manual);
        run(&mut m, 0, 1000);
        m.set_stalled(Role::Primary, true).unwrap();
        run(&mut m, 1000, 3000);
        m.set_stalled(Role::Primary, false).unwrap();
        run(&mut m, 3000, 10_000);
        assert_eq!(m.active_role(), Role::Backup);
        assert!(m.switch_to(Role::Primary, 10_000).unwrap().is_some());
        assert_eq!(m.selection(), Selection::Manual);
    }

    #[test]
    fn a_pin_holds_a_stale_source_and_lifting_it_fails_back() {
        let mut m = mgr(FailbackPolicy::Auto);
        run(&mut m, 0, 1000);
        assert_eq!(m.active_role(), Role::Primary);
        // pin to the backup: switches at once
        let sw = m.set_use(SourceUse::Backup).unwrap();
        assert_eq!(
            sw,
            Some(Switch {
                from: Role::Primary,
                to: Role::Backup,
                why: Selection::Pinned
            })
        );
        assert_eq!(
            (m.active_role(), m.selection(), m.use_source()),
            (Role::Backup, Selection::Pinned, SourceUse::Backup)
        );
        // the pinned backup goes stale: no failover to the fresh primary, and it says so
        m.set_stalled(Role::Backup, true).unwrap();
        assert!(run(&mut m, 1000, 5000).is_empty());
        assert_eq!(m.active_role(), Role::Backup);
        assert!(!m.active_fresh(5000));
        assert_eq!(m.failovers(), 0);
        // a manual switch against the pin is refused
        assert_eq!(
            m.switch_to(Role::Primary, 5000),
            Err(SwitchError::Pinned("backup"))
        );
        // lifting the pin: the automatic rules fail over to the fresh primary
        assert_eq!(m.set_use(SourceUse::Auto).unwrap(), None);
        assert_eq!(m.selection(), Selection::Unpinned);
        let sw = run(&mut m, 5000, 6000);
        assert_eq!(sw.len(), 1, "{sw:?}");
        assert_eq!(m.active_role(), Role::Primary);
        // pin to the primary while it is active: no switch, no failover when it stalls
        assert_eq!(m.set_use(SourceUse::Primary).unwrap(), None);
        m.set_stalled(Role::Backup, false).unwrap();
        m.set_stalled(Role::Primary, true).unwrap();
        assert!(run(&mut m, 6000, 9000).is_empty());
        assert_eq!(m.active_role(), Role::Primary);
    }

    #[test]
    fn unpinning_from_a_fresh_backup_fails_back_after_failback_after() {
        let mut m = mgr(FailbackPolicy::Auto);
        run(&mut m, 0, 1000);
        m.set_use(SourceUse::Backup).unwrap();
        run(&mut m, 1000, 3000);
        assert_eq!(m.active_role(), Role::Backup);
        m.set_use(SourceUse::Auto).unwrap();
        let sw = run(&mut m, 3000, 3500);
        assert_eq!(
            sw,
            vec![Switch {
                from: Role::Backup,
                to: Role::Primary,
                why: Selection::Failback
            }]
        );
        // with failback manual the bot stays on the backup after the pin is lifted
        let mut m = mgr(FailbackPolicy::Manual);
        run(&mut m, 0, 1000);
        m.set_use(SourceUse::Backup).unwrap();
        m.set_use(SourceUse::Auto).unwrap();
        assert!(run(&mut m, 1000, 5000).is_empty());
        assert_eq!(m.active_role(), Role::Backup);
    }

    #[test]
    fn a_pin_in_the_config_applies_at_start_and_needs_a_backup() {
        let cfg = MarketDataConfig {
            backup: Some(SourceConfig::simulator(2)),
            use_source: SourceUse::Backup,
            ..MarketDataConfig::default()
        };
        let m = FeedManager::new(&cfg, &["A/B".to_string()], 0).unwrap();
        assert_eq!(
            (m.active_role(), m.selection()),
            (Role::Backup, Selection::Pinned)
        );
        let mut single =
            FeedManager::new(&MarketDataConfig::default(), &["A/B".to_string()], 0).unwrap();
        assert_eq!(
            single.set_use(SourceUse::Backup),
            Err(SwitchError::NoBackup)
        );
        assert_eq!(single.use_source(), SourceUse::Auto);
    }

    #[test]
    fn no_switch_when_both_stale_and_refuses_stale_target() {
        let mut m = mgr(FailbackPolicy::Auto);
        run(&mut m, 0, 1000);
        m.set_stalled(Role::Primary, true).unwrap();
        m.set_stalled(Role::Backup, true).unwrap();
        assert!(run(&mut m, 1000, 5000).is_empty());
        assert!(!m.active_fresh(5000));
        assert_eq!(
            m.switch_to(Role::Backup, 5000),
            Err(SwitchError::Stale("backup"))
        );
    }
}
