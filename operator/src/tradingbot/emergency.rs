//! Emergency stop, all of it: record the stop, close every position (retrying while
//! the bot is starting, within a deadline), confirm the bot is flat and halted, record
//! the outcome, then scale the StatefulSet to zero.
//!
//! Why this order: the outcome is in the status before the pod goes away, and the
//! decision to (re)run close-all is taken on a fresh read of the status, never on the
//! watch cache. So no later reconcile and no operator restart can find the pod gone,
//! run the stop again and replace a confirmed flat result with "positions may remain
//! open". The path runs before validation and touches only `spec.replicas` of the
//! StatefulSet, so nothing else wrong with the spec can skip or wedge it.
//!
//! The stop is asked for by `spec.emergencyStop` or by the namespace's fleet kill
//! switch ([`super::fleet`]); the path is the same, and [`attribute`] writes which one
//! asked into the `EmergencyStopped` and `Ready` conditions (reason
//! `FleetEmergencyStop` when the namespace did) and the Events.
//!
//! Recovery (flag set back to false, or the namespace label removed) is the normal pipeline: the bot is scaled back to
//! one replica, starts halted (the halt is persisted in its database) and is resumed
//! by [`super::converse`] once it answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iq720_crds::trading_bot::{EmergencyStopStatus, TradingBotPhase};
use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::build::Owner;
use super::decide::StopTrigger;
use super::error::Result;
use super::status::{self, condition, set_condition};
use super::{apply, validate};
use crate::botlink::client::BotApiError;
use crate::botlink::endpoint::{self, PodLookup};
use crate::botlink::{BotRef, token};
use crate::shared::context::Context;

/// How often close-all is retried while the bot is starting or not yet flat.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Where a bot's emergency stop stands, read from its status.
#[derive(Debug, Clone, PartialEq)]
pub enum StopState {
    /// No stop is recorded (or the last one was cleared): a new stop starts.
    NotStarted,
    /// A stop was recorded but has no outcome yet (operator restarted mid-stop, or a
    /// step failed): close-all runs again.
    InProgress {
        /// When the stop was first seen.
        requested_at: Time,
    },
    /// The stop has an outcome; it is never run again, only kept at zero replicas.
    Completed,
}

/// Reads the stop state from a status.
pub fn stop_state(st: &TradingBotStatus) -> StopState {
    match &st.emergency_stop {
        Some(e) if e.cleared_at.is_none() && e.completed_at.is_some() => StopState::Completed,
        Some(EmergencyStopStatus {
            cleared_at: None,
            requested_at: Some(at),
            ..
        }) => StopState::InProgress {
            requested_at: at.clone(),
        },
        _ => StopState::NotStarted,
    }
}

/// How close-all ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StopOutcome {
    /// The bot confirmed it is flat and halted after closing this many positions.
    Flat {
        /// Positions closed.
        closed: i32,
    },
    /// There was no bot pod to ask.
    NotRunning {
        /// Open positions the bot reported last (None: it never reported).
        last_known_open: Option<i32>,
        /// Whether the bot ever ran (reported a version).
        ever_ran: bool,
    },
    /// The bot could not confirm it is flat within the deadline.
    Failed(String),
}

impl StopOutcome {
    /// Whether positions may remain open on the exchange.
    pub fn may_remain(&self) -> bool {
        match self {
            StopOutcome::Flat { .. } => false,
            StopOutcome::NotRunning {
                last_known_open,
                ever_ran,
            } => match last_known_open {
                Some(n) => *n > 0,
                None => *ever_ran,
            },
            StopOutcome::Failed(_) => true,
        }
    }

    fn metric_label(&self) -> &'static str {
        if self.may_remain() {
            "positions_may_remain"
        } else {
            "flat"
        }
    }
}

/// Marks a stop as started in `st` (pure).
pub fn record_started(st: &mut TradingBotStatus, requested_at: Time, generation: Option<i64>) {
    st.emergency_stop = Some(EmergencyStopStatus {
        requested_at: Some(requested_at),
        ..EmergencyStopStatus::default()
    });
    st.phase = Some(TradingBotPhase::EmergencyStopped);
    set_condition(
        &mut st.conditions,
        condition::EMERGENCY_STOPPED,
        true,
        "InProgress",
        "closing every position and halting trading; the bot is scaled to zero next",
        generation,
    );
    set_condition(
        &mut st.conditions,
        condition::READY,
        false,
        "EmergencyStopped",
        "the bot is being stopped",
        generation,
    );
}

/// Records the outcome of close-all in `st` (pure).
pub fn record_outcome(
    st: &mut TradingBotStatus,
    outcome: &StopOutcome,
    now: Time,
    generation: Option<i64>,
) {
    let requested_at = st
        .emergency_stop
        .as_ref()
        .and_then(|e| e.requested_at.clone());
    let (closed, message) = match outcome {
        StopOutcome::Flat { closed } => (Some(*closed), None),
        StopOutcome::NotRunning { .. } if !outcome.may_remain() => (Some(0), None),
        StopOutcome::NotRunning {
            last_known_open, ..
        } => (
            None,
            Some(match last_known_open {
                Some(n) => format!(
                    "the bot pod was not running, and it last reported {n} open position(s)"
                ),
                None => "the bot pod was not running and never reported its positions".into(),
            }),
        ),
        StopOutcome::Failed(why) => (None, Some(why.clone())),
    };
    let may_remain = outcome.may_remain();
    st.emergency_stop = Some(EmergencyStopStatus {
        requested_at,
        completed_at: Some(now),
        cleared_at: None,
        positions_closed: closed,
        positions_may_remain: may_remain,
        message: message.clone(),
    });
    st.phase = Some(TradingBotPhase::EmergencyStopped);
    if !may_remain {
        st.open_positions = Some(0);
    }
    let (reason, text) = match (outcome, &message) {
        (_, Some(why)) => (
            "PositionsMayRemainOpen",
            format!(
                "trading halted and scaled to zero, but positions may remain open: {why}; check the exchange account"
            ),
        ),
        (StopOutcome::Flat { closed }, None) => (
            "Completed",
            format!("{closed} position(s) closed, trading halted, scaled to zero"),
        ),
        (_, None) => (
            "Completed",
            "the bot was not running and held no positions; kept at zero replicas".to_string(),
        ),
    };
    set_condition(
        &mut st.conditions,
        condition::EMERGENCY_STOPPED,
        true,
        reason,
        &text,
        generation,
    );
    set_condition(
        &mut st.conditions,
        condition::READY,
        false,
        "EmergencyStopped",
        "the bot is stopped",
        generation,
    );
}

/// Writes who asked for the stop into the conditions (pure): the `EmergencyStopped`
/// message starts with it, and `Ready` has reason `EmergencyStopped` (spec) or
/// `FleetEmergencyStop` (the namespace's switch). Idempotent; a change of trigger
/// (e.g. the spec flag cleared while the namespace stays labelled) replaces it.
pub fn attribute(
    st: &mut TradingBotStatus,
    trigger: StopTrigger,
    namespace: &str,
    generation: Option<i64>,
) {
    let who = trigger.describe(namespace);
    if let Some(c) = st
        .conditions
        .iter_mut()
        .find(|c| c.type_ == condition::EMERGENCY_STOPPED)
    {
        let mut base = c.message.as_str();
        for t in [StopTrigger::Spec, StopTrigger::Namespace, StopTrigger::Both] {
            let prefix = format!("{}; ", t.describe(namespace));
            if let Some(rest) = base.strip_prefix(prefix.as_str()) {
                base = rest;
                break;
            }
        }
        let message = format!("{who}; {base}");
        let (status, reason) = (c.status == "True", c.reason.clone());
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            status,
            &reason,
            &message,
            generation,
        );
    }
    set_condition(
        &mut st.conditions,
        condition::READY,
        false,
        trigger.ready_reason(),
        &format!("the bot is emergency-stopped: {who}"),
        generation,
    );
}

/// Reconciles a bot whose effective emergency stop (`spec.emergencyStop`, or the
/// namespace's fleet switch: `trigger`) is on. Runs whatever else is wrong with the
/// spec (`problems` are only reported).
pub async fn reconcile(
    bot: &TradingBot,
    ctx: &Context,
    owner: &Owner,
    problems: &[String],
    trigger: StopTrigger,
    stops: &StopsRunning,
) -> Result<Action> {
    let started = Instant::now();
    let generation = bot.metadata.generation;
    if bot.status.as_ref().map(stop_state) == Some(StopState::Completed) {
        // See `keep_stopped`: the watch's copy may decide here.
        let st = stop_status(bot, problems, generation);
        return keep_stopped(ctx, owner, bot, st, trigger, generation, Cached::Trusted).await;
    }
    // The watch cache can lag behind our own status writes: decide on a fresh read.
    let api: Api<TradingBot> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let fresh = api.get_status(&owner.name).await?;
    let mut st = stop_status(&fresh, problems, generation);

    let state = stop_state(&st);
    if state == StopState::Completed {
        // Keep it stopped (someone may have scaled the StatefulSet up by hand).
        return keep_stopped(
            ctx,
            owner,
            &fresh,
            st,
            trigger,
            generation,
            Cached::Confirmed,
        )
        .await;
    }
    let _running = stops.enter();
    let events = OffPath::new(ctx, bot, stops.clone());
    // The object the outcome is written over (its resourceVersion is the write's
    // precondition): the one our "started" write stored, else the fresh read.
    let mut base = fresh;
    if state == StopState::NotStarted {
        record_started(
            &mut st,
            Time(k8s_openapi::jiff::Timestamp::now()),
            generation,
        );
        attribute(&mut st, trigger, &owner.namespace, generation);
        if let status::Written::Stored(stored) = status::write(ctx, &base, st.clone()).await? {
            base = *stored;
        }
        events.send(
            EventType::Warning,
            "EmergencyStopRequested",
            format!(
                "{}; closing every position, halting trading and scaling to zero",
                trigger.describe(&owner.namespace)
            ),
        );
    }
    let target = BotRef::new(&owner.namespace, &owner.name);
    let outcome = close_all_with_retry(ctx, &target, ctx.settings.close_all_deadline, &st).await?;
    match &outcome {
        StopOutcome::Flat { closed } => {
            events.send(
                EventType::Normal,
                "PositionsClosed",
                format!("{closed} position(s) closed; the bot is flat and halted"),
            );
        }
        other if other.may_remain() => {
            warn!(bot = %owner.name, outcome = ?other, "emergency stop could not confirm the bot is flat");
        }
        _ => {
            info!(bot = %owner.name, "emergency stop of a bot that was not running and held no positions")
        }
    }
    // The outcome is recorded before the pod goes away.
    record_outcome(
        &mut st,
        &outcome,
        Time(k8s_openapi::jiff::Timestamp::now()),
        generation,
    );
    attribute(&mut st, trigger, &owner.namespace, generation);
    if matches!(
        status::write(ctx, &base, st.clone()).await?,
        status::Written::Stale
    ) {
        // Someone else wrote the status during close-all (e.g. a backup's record):
        // read it again and record the outcome over it.
        let stored = api.get_status(&owner.name).await?;
        status::write(ctx, &stored, st.clone()).await?;
    }
    if outcome.may_remain()
        && let Some(why) = st.emergency_stop.as_ref().and_then(|e| e.message.clone())
    {
        events.send(
            EventType::Warning,
            "PositionsMayRemainOpen",
            format!("{why}; scaled to zero anyway; check the exchange account"),
        );
    }
    apply::scale_to_zero(ctx, owner).await?;
    let elapsed = started.elapsed();
    let label = outcome.metric_label();
    ctx.metrics
        .emergency_stops
        .with_label_values(&[label])
        .inc();
    ctx.metrics
        .emergency_stop_duration
        .with_label_values(&[label])
        .observe(elapsed.as_secs_f64());
    events.send(
        EventType::Normal,
        "ScaledToZero",
        format!(
            "StatefulSet scaled to 0 replicas {:.0} ms after the stop was seen",
            elapsed.as_secs_f64() * 1000.0
        ),
    );
    info!(bot = %bot.name_any(), ms = elapsed.as_millis(), "emergency stop done");
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The status a stop starts from: `base`'s, for `generation`, with the spec's problems.
fn stop_status(
    base: &TradingBot,
    problems: &[String],
    generation: Option<i64>,
) -> TradingBotStatus {
    let mut st = base.status.clone().unwrap_or_default();
    st.observed_generation = generation;
    validate::report(&mut st, problems, generation);
    st
}

/// Where "already at zero replicas" may come from when a completed stop is kept.
enum Cached {
    /// The StatefulSet cache may say so (the watch's copy of the bot said "completed").
    Trusted,
    /// Only a fresh read may say so (see [`apply::scale_to_zero`]).
    Confirmed,
}

/// A stop that completed before: kept at zero replicas and its conditions attributed,
/// the status written over `base` only on change.
///
/// When the watch's copy of the bot already says "completed", this runs from the
/// cache alone ([`Cached::Trusted`]): its own writes and the scale-down bring several
/// such reconciles per stop, and with 100 bots stopped at once their reads competed
/// with the stops still running. Why the copy may decide: a completed stop is only
/// ever cleared by this operator's recovery (the normal pipeline, once no stop is
/// wanted), so a copy that says "completed" is never ahead of the truth in a way that
/// skips a close-all; when it lags and does not say so yet, the fresh read decides.
async fn keep_stopped(
    ctx: &Context,
    owner: &Owner,
    base: &TradingBot,
    mut st: TradingBotStatus,
    trigger: StopTrigger,
    generation: Option<i64>,
    zero: Cached,
) -> Result<Action> {
    match zero {
        Cached::Trusted => apply::keep_at_zero(ctx, owner).await?,
        Cached::Confirmed => apply::scale_to_zero(ctx, owner).await?,
    }
    st.phase = Some(TradingBotPhase::EmergencyStopped);
    attribute(&mut st, trigger, &owner.namespace, generation);
    status::write(ctx, base, st).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Longest time a stop's Event waits for the other stops to end.
const EVENT_HOLD_MAX: Duration = Duration::from_secs(15);

/// The emergency stops running now (one per controller, in [`super::fleet::Fleet`]), so
/// that their Events wait until none runs.
///
/// Why: when a namespace's fleet switch stops 100 bots at once, their 300 Events (each
/// an apiserver write, an etcd commit and maybe a webhook notification) competed with
/// the stops themselves for the apiserver and the machine's cores, and every stop
/// ended later for it. The Events are published once no stop runs, or after
/// [`EVENT_HOLD_MAX`], whichever comes first; a stop's record is its status, written
/// in line.
#[derive(Clone, Default)]
pub struct StopsRunning {
    inner: Arc<(AtomicUsize, Notify)>,
}

/// One running stop; dropping it ends it.
pub struct RunningStop(StopsRunning);

impl StopsRunning {
    /// Counts a stop as running until the returned guard is dropped.
    pub fn enter(&self) -> RunningStop {
        self.inner.0.fetch_add(1, Ordering::SeqCst);
        RunningStop(self.clone())
    }

    /// Stops running now.
    pub fn count(&self) -> usize {
        self.inner.0.load(Ordering::SeqCst)
    }

    /// Waits until no stop runs, at most `max`.
    pub async fn quiet(&self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.inner.1.notified();
            tokio::pin!(notified);
            // registered before the check, so a stop ending in between still wakes us
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for RunningStop {
    fn drop(&mut self) {
        if self.0.inner.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.1.notify_waiters();
        }
    }
}

/// The stop's Events, published in order by a task of their own, off the stop's path,
/// once no stop runs ([`StopsRunning::quiet`]).
///
/// Why: an Event is one apiserver request (plus a webhook notification); three per
/// stop, awaited in line, made each stop of 100 bots stopped at once wait for 300
/// requests it does not need. The stop's own record is its status, written in line.
struct OffPath {
    queue: tokio::sync::mpsc::UnboundedSender<(EventType, &'static str, String)>,
}

impl OffPath {
    /// Starts the publishing task for `bot`'s Events; it ends when `self` is dropped
    /// and its queue is empty.
    fn new(ctx: &Context, bot: &TradingBot, stops: StopsRunning) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (ctx, bot) = (ctx.clone(), bot.clone());
        tokio::spawn(async move {
            while let Some((type_, reason, note)) = rx.recv().await {
                stops.quiet(EVENT_HOLD_MAX).await;
                ctx.event(&bot, type_, reason, "EmergencyStop", note).await;
            }
        });
        Self { queue }
    }

    /// Queues an Event (never waits).
    fn send(&self, type_: EventType, reason: &'static str, note: String) {
        if self.queue.send((type_, reason, note)).is_err() {
            warn!(
                reason,
                "the emergency stop's event task has ended; event dropped"
            );
        }
    }
}

/// Calls close-all until the bot confirms it is flat and halted, retrying while its
/// pod is starting (no address yet, connection refused) or not yet flat, until
/// `deadline`. A bot with no pod at all is reported at once as not running. Used by
/// the emergency stop and by deletion.
pub async fn close_all_with_retry(
    ctx: &Context,
    target: &BotRef,
    deadline: Duration,
    last: &TradingBotStatus,
) -> Result<StopOutcome> {
    let until = Instant::now() + deadline;
    let not_running = || StopOutcome::NotRunning {
        last_known_open: last.open_positions,
        ever_ran: last.current_version.is_some(),
    };
    let mut first_try = true;
    loop {
        // The cached token first: under foreground deletion the garbage collector may
        // already have deleted the token Secret while the bot still runs.
        let cached = ctx.tokens.get(&target.namespace, &target.name);
        let tok = match cached {
            Some(t) => t,
            None => match token::read(&ctx.client, target).await? {
                Some(t) => {
                    ctx.tokens.put(&target.namespace, &target.name, &t);
                    t
                }
                None => {
                    // No token and no pod: a bot that never ran (e.g. created in a
                    // namespace whose fleet switch is on) holds nothing.
                    if matches!(
                        endpoint::lookup(&ctx.client, target, "").await?,
                        PodLookup::Missing
                    ) {
                        return Ok(not_running());
                    }
                    return Ok(StopOutcome::Failed(
                        "the bot's API token Secret is missing".into(),
                    ));
                }
            },
        };
        // The first try goes to the pod the cache knows, when it knows one (the read
        // saved is one of few on a stop's path; a stale address fails within the bot
        // client's connect timeout and the retry reads the pod). A retry, "missing" and
        // "no address" are always read fresh (the cache may lag behind a new pod).
        let cached = first_try.then(|| cached_pod(ctx, target, &tok)).flatten();
        first_try = false;
        let found = match cached {
            Some(found) => found,
            None => endpoint::lookup(&ctx.client, target, &tok).await?,
        };
        let last_error = match found {
            PodLookup::Missing => return Ok(not_running()),
            PodLookup::NoAddress => "the bot pod has no address yet".to_string(),
            PodLookup::Found(pod) => {
                let left = until.saturating_duration_since(Instant::now());
                match ctx
                    .bots
                    .close_all_confirmed(&pod.endpoint, left.max(Duration::from_millis(500)))
                    .await
                {
                    Ok(closed) => return Ok(StopOutcome::Flat { closed }),
                    Err(
                        e @ BotApiError::Status {
                            status: 401 | 403, ..
                        },
                    ) => {
                        // A stale cached token: the Secret's newest token, or another
                        // one the bot still accepts (mid-rotation), for the next try.
                        super::keys::unauthorized(ctx, target, &pod.endpoint).await;
                        format!("close-all failed: {e}")
                    }
                    Err(e) => format!("close-all failed: {e}"),
                }
            }
        };
        if Instant::now() + RETRY_EVERY >= until {
            return Ok(StopOutcome::Failed(last_error));
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// The bot's pod as the cache has it, when the cache has one with an address.
fn cached_pod(ctx: &Context, target: &BotRef, token: &str) -> Option<PodLookup> {
    let stores = ctx.cache.stores()?;
    let pod = crate::shared::cache::lookup(&stores.pods, &target.namespace, &target.pod_name())?;
    match crate::shared::cached_pod::from_cached(Some(&pod), token) {
        found @ PodLookup::Found(_) => Some(found),
        PodLookup::Missing | PodLookup::NoAddress => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    #[tokio::test]
    async fn events_wait_until_no_stop_runs() {
        let stops = StopsRunning::default();
        // none running: at once
        stops.quiet(Duration::from_secs(60)).await;
        let (a, b) = (stops.enter(), stops.enter());
        assert_eq!(stops.count(), 2);
        let quiet = stops.quiet(Duration::from_secs(60));
        tokio::pin!(quiet);
        assert!(futures::poll!(quiet.as_mut()).is_pending());
        drop(a);
        assert!(
            futures::poll!(quiet.as_mut()).is_pending(),
            "one stop still runs"
        );
        drop(b);
        assert!(futures::poll!(quiet.as_mut()).is_ready());
        assert_eq!(stops.count(), 0);
        // a stop that never ends holds them at most `max`
        let _stuck = stops.enter();
        let held = Instant::now();
        stops.quiet(Duration::from_millis(50)).await;
        assert!(held.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_completed_stop_is_never_restarted() {
        let mut st = TradingBotStatus::default();
        assert_eq!(stop_state(&st), StopState::NotStarted);
        record_started(&mut st, t(), Some(1));
        assert!(matches!(stop_state(&st), StopState::InProgress { .. }));
        record_outcome(&mut st, &StopOutcome::Flat { closed: 2 }, t(), Some(1));
        assert_eq!(stop_state(&st), StopState::Completed);
        let e = st
            .emergency_stop
            .as_ref()
            .unwrap_or_else(|| panic!("record"));
        assert_eq!(e.positions_closed, Some(2));
        assert!(!e.positions_may_remain);
        assert_eq!(st.open_positions, Some(0));
        // Cleared (flag set back to false): a new stop starts a new record.
        if let Some(e) = st.emergency_stop.as_mut() {
            e.cleared_at = Some(t());
        }
        assert_eq!(stop_state(&st), StopState::NotStarted);
    }

    #[test]
    fn the_conditions_say_who_asked() {
        let mut st = TradingBotStatus::default();
        record_started(&mut st, t(), Some(1));
        attribute(&mut st, StopTrigger::Namespace, "trading", Some(1));
        let ready = status::find_condition(&st, condition::READY).unwrap_or_else(|| panic!());
        assert_eq!(ready.reason, "FleetEmergencyStop");
        let es =
            status::find_condition(&st, condition::EMERGENCY_STOPPED).unwrap_or_else(|| panic!());
        assert_eq!(es.reason, "InProgress");
        assert!(es.message.starts_with(
            "fleet emergency stop: namespace trading is labelled trading.iq720.io/emergency-stop=true; closing"
        ));
        record_outcome(&mut st, &StopOutcome::Flat { closed: 1 }, t(), Some(1));
        attribute(&mut st, StopTrigger::Namespace, "trading", Some(1));
        // Idempotent, and a new trigger replaces the old one.
        attribute(&mut st, StopTrigger::Namespace, "trading", Some(1));
        let once = st.clone();
        attribute(&mut st, StopTrigger::Namespace, "trading", Some(1));
        assert_eq!(st, once);
        attribute(&mut st, StopTrigger::Spec, "trading", Some(1));
        let es =
            status::find_condition(&st, condition::EMERGENCY_STOPPED).unwrap_or_else(|| panic!());
        assert_eq!(es.reason, "Completed");
        assert_eq!(
            es.message,
            "spec.emergencyStop is true; 1 position(s) closed, trading halted, scaled to zero"
        );
        let ready = status::find_condition(&st, condition::READY).unwrap_or_else(|| panic!());
        assert_eq!(ready.reason, "EmergencyStopped");
    }

    #[test]
    fn invalid_phase_does_not_hide_the_stop() {
        let mut st = TradingBotStatus {
            phase: Some(TradingBotPhase::Invalid),
            ..TradingBotStatus::default()
        };
        record_started(&mut st, t(), Some(1));
        record_outcome(&mut st, &StopOutcome::Flat { closed: 0 }, t(), Some(1));
        assert_eq!(st.phase, Some(TradingBotPhase::EmergencyStopped));
        assert_eq!(stop_state(&st), StopState::Completed);
    }

    #[test]
    fn a_bot_that_never_ran_is_not_a_false_alarm() {
        let never = StopOutcome::NotRunning {
            last_known_open: None,
            ever_ran: false,
        };
        assert!(!never.may_remain());
        let flat = StopOutcome::NotRunning {
            last_known_open: Some(0),
            ever_ran: true,
        };
        assert!(!flat.may_remain());
        let open = StopOutcome::NotRunning {
            last_known_open: Some(3),
            ever_ran: true,
        };
        assert!(open.may_remain());
        let mut st = TradingBotStatus::default();
        record_started(&mut st, t(), Some(1));
        record_outcome(&mut st, &open, t(), Some(1));
        let c = status::find_condition(&st, condition::EMERGENCY_STOPPED);
        assert_eq!(c.map(|c| c.reason.as_str()), Some("PositionsMayRemainOpen"));
        assert!(StopOutcome::Failed("x".into()).may_remain());
    }
}
