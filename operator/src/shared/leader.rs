//! Leader election with a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! Only the holder of the Lease runs the controllers. The rules, and why each holds:
//!
//! - **Expiry is judged on this replica's clock, by observation.** A candidate remembers
//!   the Lease record it last saw (resourceVersion, holder, renewTime, ...) and the
//!   monotonic time at which it first saw that record. The Lease is expired only when
//!   the record has not changed for `leaseDurationSeconds` *as observed here*. The
//!   holder's `renewTime` is informative only: a holder whose clock runs hours ahead
//!   cannot block the election forever, and one whose clock runs behind cannot be
//!   deposed while it keeps renewing.
//! - **Every renew is bounded.** The holder counts its renew deadline from the start of
//!   its last successful write (`renewDeadline` < `leaseDuration`, like client-go), and
//!   every call to the apiserver is cut off at that deadline; a hung connection cannot
//!   keep a stale leader alive.
//! - **A leader that cannot renew stops acting before anyone may take over.** A
//!   standby can take over no earlier than `leaseDuration` after it saw the last write,
//!   and that write started after the holder's deadline clock did; the holder gives up
//!   at `renewDeadline` (the manager then drops the controllers and exits), so the two
//!   never act at once. The margin `leaseDuration - renewDeadline` absorbs clock-rate
//!   differences and the time to stop. A [`Fence`] thread exits the process shortly
//!   after the deadline even if the async runtime is stuck.
//! - **Writes are compare-and-swap.** Every update carries the resourceVersion read
//!   just before, so two candidates can never both succeed.
//! - **A clean shutdown releases the Lease** (empty holder), so a rolling update hands
//!   over within one retry period instead of one lease duration.
//!
//! Why hand-written, not a crate: `kube-lease-manager` (0.13, the one built on kube 5)
//! decides expiry from the holder's `renewTime` against the local wall clock, which is
//! exactly the clock-skew hazard above; `kube-coordinate` follows client-go's
//! observation rule but is built on kube 2 (a second kube/k8s-openapi stack beside our
//! kube 5) and reports leadership on a channel without a renew deadline that stops the
//! holder. The protocol fits in this module, and its decision is a pure function with
//! unit tests ([`Observation`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{debug, info, warn};

/// Failure of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read or written.
    #[error("lease API: {0}")]
    Kube(#[from] kube::Error),
    /// A call to the apiserver did not finish before the renew deadline.
    #[error("lease API call did not finish before the renew deadline")]
    Timeout,
    /// Another candidate holds the Lease now.
    #[error("lost the lease to {}", holder.as_deref().unwrap_or("another candidate"))]
    Lost {
        /// The new holder, as seen in the Lease.
        holder: Option<String>,
    },
    /// No renewal succeeded within the renew deadline.
    #[error("could not renew the lease within {deadline:?} (last error: {last_error})")]
    RenewDeadline {
        /// The renew deadline.
        deadline: Duration,
        /// The last failure seen while renewing.
        last_error: String,
    },
    /// The timing flags cannot give the guarantees above.
    #[error("invalid leader-election timing: {0}")]
    InvalidTiming(String),
}

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct LeaderSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This candidate's identity (pod name).
    pub identity: String,
    /// How long a standby waits, after it saw the record change last, before it takes
    /// the Lease over (written to `leaseDurationSeconds`, rounded up to a second).
    pub lease_duration: Duration,
    /// How long the holder keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the holder renews and a standby retries.
    pub retry_period: Duration,
}

impl LeaderSettings {
    /// client-go's ratio: a renew deadline of two thirds of the lease duration.
    pub fn default_renew_deadline(lease_duration: Duration) -> Duration {
        lease_duration * 2 / 3
    }

    /// Checks `0 < retry_period < renew_deadline < lease_duration` and a lease of at
    /// least one second.
    pub fn validate(&self) -> Result<(), LeaderError> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(LeaderError::InvalidTiming(format!(
                "lease duration {:?} is below one second",
                self.lease_duration
            )));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(LeaderError::InvalidTiming(format!(
                "renew deadline {:?} must be shorter than the lease duration {:?}",
                self.renew_deadline, self.lease_duration
            )));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(LeaderError::InvalidTiming(format!(
                "retry period {:?} must be above zero and shorter than the renew deadline {:?}",
                self.retry_period, self.renew_deadline
            )));
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// The part of a Lease whose change proves its holder alive.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    resource_version: Option<String>,
    spec: Option<LeaseSpec>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        Self {
            resource_version: lease.metadata.resource_version.clone(),
            spec: lease.spec.clone(),
        }
    }
}

/// What this replica concluded about the Lease it last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing observed yet.
    Unknown,
    /// This candidate is the holder.
    Mine,
    /// No holder (released or never held), or the holder stopped renewing long enough
    /// ago, as observed here.
    Free,
    /// Someone else holds a valid Lease.
    HeldByOther {
        /// The holder.
        holder: String,
        /// How long, on this replica's clock, until it expires without a change.
        expires_in: Duration,
    },
}

/// The Lease record this replica last saw and the local monotonic time at which it
/// first saw it. Time moves on only when the record changes, never from the holder's
/// timestamps.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    seen: Option<(Record, Instant)>,
}

impl Observation {
    /// Records `lease` as read at `now`; the observation time is reset only when the
    /// record differs from the previous one.
    pub fn observe(&mut self, lease: &Lease, now: Instant) {
        let record = Record::of(lease);
        match &self.seen {
            Some((last, _)) if *last == record => {}
            _ => self.seen = Some((record, now)),
        }
    }

    /// When the current record was first seen.
    pub fn observed_at(&self) -> Option<Instant> {
        self.seen.as_ref().map(|(_, at)| *at)
    }

    /// Judges the last observed record at `now` for candidate `identity`. The lease
    /// duration is the record's own (the holder's promise), else `default_duration`.
    pub fn judge(&self, identity: &str, now: Instant, default_duration: Duration) -> Verdict {
        let Some((record, at)) = &self.seen else {
            return Verdict::Unknown;
        };
        let spec = record.spec.clone().unwrap_or_default();
        let holder = match spec.holder_identity.as_deref() {
            None | Some("") => return Verdict::Free,
            Some(h) if h == identity => return Verdict::Mine,
            Some(h) => h.to_string(),
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(default_duration, Duration::from_secs);
        let expires = *at + duration;
        if now >= expires {
            Verdict::Free
        } else {
            Verdict::HeldByOther {
                holder,
                expires_in: expires - now,
            }
        }
    }
}

/// Outcome of one attempt to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease; the write that proved it started at `started`.
    Held {
        /// Start of the successful attempt (the renew deadline counts from here).
        started: Instant,
    },
    /// Someone else holds a valid Lease.
    HeldBy(String),
    /// A concurrent write won (resourceVersion conflict); try again.
    Conflict,
}

/// The Lease as the election reads and writes it (an apiserver in production, a fake
/// in unit tests).
pub trait LeaseStore: Send + Sync {
    /// Reads the Lease (`None` when it does not exist).
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send;
    /// Creates the Lease.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
    /// Replaces the Lease; the resourceVersion in `lease` makes it compare-and-swap.
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
}

/// [`LeaseStore`] on the apiserver.
#[derive(Clone)]
pub struct KubeLeases {
    api: Api<Lease>,
    name: String,
}

impl KubeLeases {
    /// The Lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }
}

impl LeaseStore for KubeLeases {
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send {
        self.api.get_opt(&self.name)
    }
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send {
        let api = self.api.clone();
        let lease = lease.clone();
        async move { api.create(&PostParams::default(), &lease).await }
    }
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send {
        let api = self.api.clone();
        let name = self.name.clone();
        let lease = lease.clone();
        async move { api.replace(&name, &PostParams::default(), &lease).await }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn wall_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// A candidate in the election.
pub struct Elector<S> {
    store: S,
    settings: LeaderSettings,
    observation: Observation,
    fence: Option<Fence>,
}

impl<S: LeaseStore> Elector<S> {
    /// A candidate with validated settings.
    pub fn new(store: S, settings: LeaderSettings) -> Result<Self, LeaderError> {
        settings.validate()?;
        Ok(Self {
            store,
            settings,
            observation: Observation::default(),
            fence: None,
        })
    }

    /// Arms `fence` at every renewal (see [`Fence`]).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The settings.
    pub fn settings(&self) -> &LeaderSettings {
        &self.settings
    }

    /// One attempt to acquire or renew; every call to the store ends by `deadline`.
    pub async fn try_acquire_or_renew(
        &mut self,
        deadline: Instant,
    ) -> Result<Attempt, LeaderError> {
        let started = Instant::now();
        let s = &self.settings;
        let existing = timeout_at(deadline, self.store.get())
            .await
            .map_err(|_| LeaderError::Timeout)??;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(s.lease_duration_seconds()),
                    acquire_time: Some(wall_now()),
                    renew_time: Some(wall_now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match timeout_at(deadline, self.store.create(&lease)).await {
                Err(_) => Err(LeaderError::Timeout),
                Ok(Ok(created)) => {
                    self.observation.observe(&created, Instant::now());
                    Ok(Attempt::Held { started })
                }
                // 409: AlreadyExists, another candidate created it first
                Ok(Err(e)) if is_conflict(&e) => Ok(Attempt::Conflict),
                Ok(Err(e)) => Err(e.into()),
            };
        };
        self.observation.observe(&lease, Instant::now());
        let old = lease.spec.clone().unwrap_or_default();
        let mine = match self
            .observation
            .judge(&s.identity, Instant::now(), s.lease_duration)
        {
            Verdict::HeldByOther { holder, .. } => return Ok(Attempt::HeldBy(holder)),
            Verdict::Mine => true,
            Verdict::Free | Verdict::Unknown => false,
        };
        let had_holder = old
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            lease_duration_seconds: Some(s.lease_duration_seconds()),
            acquire_time: if mine {
                old.acquire_time.clone()
            } else {
                Some(wall_now())
            },
            renew_time: Some(wall_now()),
            lease_transitions: Some(
                old.lease_transitions.unwrap_or(0) + i32::from(!mine && had_holder),
            ),
            ..old
        });
        // `replace` sends the resourceVersion just read: a concurrent writer makes it fail.
        match timeout_at(deadline, self.store.replace(&lease)).await {
            Err(_) => Err(LeaderError::Timeout),
            Ok(Ok(stored)) => {
                self.observation.observe(&stored, Instant::now());
                if !mine {
                    info!(lease = %s.name, previous = ?old.holder_identity, "took over the lease");
                }
                Ok(Attempt::Held { started })
            }
            Ok(Err(e)) if is_conflict(&e) => Ok(Attempt::Conflict),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Waits until this candidate holds the Lease; returns the start of the winning
    /// attempt (the renew deadline counts from there).
    pub async fn acquire(&mut self) -> Instant {
        info!(lease = %self.settings.name, identity = %self.settings.identity, "waiting for leadership");
        loop {
            let next = Instant::now() + self.settings.retry_period;
            let deadline = Instant::now() + self.settings.renew_deadline;
            match self.try_acquire_or_renew(deadline).await {
                Ok(Attempt::Held { started }) => {
                    self.arm_fence(started);
                    info!(lease = %self.settings.name, "became leader");
                    return started;
                }
                Ok(Attempt::HeldBy(holder)) => debug!(%holder, "lease held by another candidate"),
                Ok(Attempt::Conflict) => debug!("lease changed concurrently"),
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            sleep_until(next).await;
        }
    }

    /// Renews the Lease every retry period. Returns `Ok(())` when `stop` fires (or its
    /// sender is dropped), and an error as soon as leadership is lost: another holder,
    /// or no successful renewal within the renew deadline counted from `last`, the start
    /// of the last successful attempt. The caller must stop acting on an error.
    pub async fn hold(
        &mut self,
        mut last: Instant,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), LeaderError> {
        let renew_deadline = self.settings.renew_deadline;
        loop {
            let deadline = last + renew_deadline;
            let mut next = (Instant::now() + self.settings.retry_period).min(deadline);
            let mut last_error = String::from("none");
            loop {
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    () = sleep_until(next) => {}
                }
                if Instant::now() >= deadline {
                    return Err(LeaderError::RenewDeadline {
                        deadline: renew_deadline,
                        last_error,
                    });
                }
                next = (Instant::now() + self.settings.retry_period).min(deadline);
                let attempt = tokio::select! {
                    _ = &mut stop => return Ok(()),
                    a = self.try_acquire_or_renew(deadline) => a,
                };
                match attempt {
                    Ok(Attempt::Held { started }) => {
                        last = started;
                        self.arm_fence(started);
                        break;
                    }
                    Ok(Attempt::HeldBy(holder)) => {
                        return Err(LeaderError::Lost {
                            holder: Some(holder),
                        });
                    }
                    // Possibly our own write that timed out here but reached the
                    // apiserver: the next read tells.
                    Ok(Attempt::Conflict) => last_error = "resourceVersion conflict".into(),
                    Err(e) => {
                        warn!(error = %e, "cannot renew the lease");
                        last_error = e.to_string();
                    }
                }
            }
        }
    }

    /// Gives the Lease up (empty holder) if this candidate still holds it, so that a
    /// standby takes over at its next retry. Call only after the controllers stopped.
    /// Returns whether the Lease was released.
    pub async fn release(&mut self) -> Result<bool, LeaderError> {
        let deadline = Instant::now() + self.settings.renew_deadline;
        let result = async {
            let Some(mut lease) = timeout_at(deadline, self.store.get())
                .await
                .map_err(|_| LeaderError::Timeout)??
            else {
                return Ok(false);
            };
            let old = lease.spec.clone().unwrap_or_default();
            if old.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return Ok(false);
            }
            lease.spec = Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                renew_time: Some(wall_now()),
                ..old
            });
            match timeout_at(deadline, self.store.replace(&lease)).await {
                Err(_) => Err(LeaderError::Timeout),
                Ok(Ok(_)) => Ok(true),
                Ok(Err(e)) if is_conflict(&e) => Ok(false),
                Ok(Err(e)) => Err(e.into()),
            }
        }
        .await;
        if let Some(f) = &self.fence {
            f.disarm();
        }
        result
    }

    fn arm_fence(&self, started: Instant) {
        if let Some(f) = &self.fence {
            // Halfway between our deadline and the earliest takeover.
            let s = &self.settings;
            let slack = (s.lease_duration - s.renew_deadline) / 2;
            f.arm_until(started + s.renew_deadline + slack);
        }
    }
}

/// A watchdog thread that calls its action (the manager: exit the process) when the
/// armed deadline passes. It backs up [`Elector::hold`], which gives up at the renew
/// deadline, for the case where the async runtime is too stuck to notice: an OS thread
/// still runs then. Disarmed when leadership ends cleanly.
#[derive(Clone)]
pub struct Fence {
    inner: Arc<FenceInner>,
}

struct FenceInner {
    base: Instant,
    /// Milliseconds after `base`; 0 = disarmed.
    deadline_ms: AtomicU64,
}

impl Fence {
    /// Starts the watchdog thread; `on_expiry` runs once when an armed deadline passes.
    /// The thread ends when every handle is dropped.
    pub fn start(on_expiry: impl FnOnce() + Send + 'static) -> std::io::Result<Self> {
        let inner = Arc::new(FenceInner {
            base: Instant::now(),
            deadline_ms: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("leader-fence".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(Duration::from_millis(50));
                    let Some(inner) = weak.upgrade() else { return };
                    let deadline = inner.deadline_ms.load(Ordering::SeqCst);
                    if deadline != 0 && inner.elapsed_ms() > deadline {
                        on_expiry();
                        return;
                    }
                }
            })?;
        Ok(Self { inner })
    }

    /// Arms (or moves) the deadline.
    pub fn arm_until(&self, deadline: Instant) {
        let ms = deadline
            .saturating_duration_since(self.inner.base)
            .as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX).max(1);
        self.inner.deadline_ms.store(ms, Ordering::SeqCst);
    }

    /// Disarms the deadline.
    pub fn disarm(&self) {
        self.inner.deadline_ms.store(0, Ordering::SeqCst);
    }
}

impl FenceInner {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    fn ts(secs: i64) -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn lease(rv: &str, holder: Option<&str>, renew: MicroTime, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(renew),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    const YEAR_2100: i64 = 4_102_444_800;
    const S15: Duration = Duration::from_secs(15);

    fn expired_after(renew: MicroTime) {
        let t0 = Instant::now();
        let mut o = Observation::default();
        o.observe(&lease("1", Some("other"), renew, 15), t0);
        assert!(matches!(
            o.judge("me", t0 + Duration::from_secs(14), S15),
            Verdict::HeldByOther { ref holder, expires_in } if holder == "other" && expires_in == Duration::from_secs(1)
        ));
        assert_eq!(o.judge("me", t0 + S15, S15), Verdict::Free);
    }

    #[test]
    fn a_holder_clock_far_in_the_future_does_not_block_the_election() {
        expired_after(ts(YEAR_2100));
    }

    #[test]
    fn a_holder_clock_far_in_the_past_does_not_expire_a_fresh_record() {
        expired_after(ts(0));
    }

    #[test]
    fn every_change_of_the_record_restarts_the_observed_time() {
        let t0 = Instant::now();
        let mut o = Observation::default();
        o.observe(&lease("1", Some("other"), ts(0), 15), t0);
        // unchanged record re-read later: the time stays
        o.observe(
            &lease("1", Some("other"), ts(0), 15),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(o.observed_at(), Some(t0));
        // a renewal (new resourceVersion, even with the same renewTime) restarts it
        o.observe(
            &lease("2", Some("other"), ts(0), 15),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(o.observed_at(), Some(t0 + Duration::from_secs(10)));
        assert!(matches!(
            o.judge("me", t0 + Duration::from_secs(20), S15),
            Verdict::HeldByOther { .. }
        ));
        assert_eq!(
            o.judge("me", t0 + Duration::from_secs(25), S15),
            Verdict::Free
        );
        // a changed holder with the same resourceVersion also counts as a change
        o.observe(
            &lease("2", Some("third"), ts(0), 15),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(o.observed_at(), Some(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn the_record_lease_duration_wins_over_the_local_default() {
        let t0 = Instant::now();
        let mut o = Observation::default();
        o.observe(&lease("1", Some("other"), ts(0), 30), t0);
        assert!(matches!(
            o.judge("me", t0 + Duration::from_secs(20), S15),
            Verdict::HeldByOther { .. }
        ));
        assert_eq!(
            o.judge("me", t0 + Duration::from_secs(30), S15),
            Verdict::Free
        );
        // no duration in the record: the local one
        let mut no_duration = lease("2", Some("other"), ts(0), 0);
        no_duration.spec.as_mut().unwrap().lease_duration_seconds = None;
        o.observe(&no_duration, t0);
        assert_eq!(o.judge("me", t0 + S15, S15), Verdict::Free);
    }

    #[test]
    fn released_own_and_unseen_leases() {
        let t0 = Instant::now();
        let mut o = Observation::default();
        assert_eq!(o.judge("me", t0, S15), Verdict::Unknown);
        o.observe(&lease("1", None, ts(YEAR_2100), 15), t0);
        assert_eq!(o.judge("me", t0, S15), Verdict::Free);
        o.observe(&lease("2", Some(""), ts(YEAR_2100), 15), t0);
        assert_eq!(o.judge("me", t0, S15), Verdict::Free);
        o.observe(&lease("3", Some("me"), ts(0), 15), t0);
        assert_eq!(o.judge("me", t0, S15), Verdict::Mine);
    }

    fn settings(lease_ms: u64, renew_ms: u64, retry_ms: u64) -> LeaderSettings {
        LeaderSettings {
            name: "l".into(),
            namespace: "n".into(),
            identity: "me".into(),
            lease_duration: Duration::from_millis(lease_ms),
            renew_deadline: Duration::from_millis(renew_ms),
            retry_period: Duration::from_millis(retry_ms),
        }
    }

    #[test]
    fn timing_must_leave_a_margin() {
        assert!(settings(15_000, 10_000, 2_000).validate().is_ok());
        assert!(settings(15_000, 15_000, 2_000).validate().is_err());
        assert!(settings(15_000, 10_000, 10_000).validate().is_err());
        assert!(settings(15_000, 10_000, 0).validate().is_err());
        assert!(settings(500, 300, 100).validate().is_err());
        assert_eq!(
            LeaderSettings::default_renew_deadline(Duration::from_secs(15)),
            Duration::from_secs(10)
        );
        assert_eq!(settings(4_500, 3_000, 1_000).lease_duration_seconds(), 5);
    }

    /// In-memory Lease with resourceVersion checks; writes can be made to hang or fail.
    #[derive(Default)]
    struct FakeStore {
        lease: Mutex<Option<Lease>>,
        rv: AtomicU64,
        hang_writes: AtomicBool,
        fail_writes: AtomicBool,
    }

    impl FakeStore {
        fn put(&self, mut lease: Lease) -> Lease {
            let rv = self.rv.fetch_add(1, Ordering::SeqCst) + 1;
            lease.metadata.resource_version = Some(rv.to_string());
            *self.lease.lock().unwrap() = Some(lease.clone());
            lease
        }
        fn holder(&self) -> Option<String> {
            self.lease
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|l| l.spec.as_ref()?.holder_identity.clone())
        }
        async fn write(&self, lease: &Lease, create: bool) -> Result<Lease, kube::Error> {
            if self.hang_writes.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.fail_writes.load(Ordering::SeqCst) {
                return Err(kube::Error::Api(
                    kube::core::Status::failure("unavailable", "ServiceUnavailable")
                        .with_code(503)
                        .boxed(),
                ));
            }
            let current = self.lease.lock().unwrap().clone();
            let ok = match (&current, create) {
                (None, true) => true,
                (Some(c), false) => c.metadata.resource_version == lease.metadata.resource_version,
                _ => false,
            };
            if !ok {
                return Err(kube::Error::Api(
                    kube::core::Status::failure("conflict", "Conflict")
                        .with_code(409)
                        .boxed(),
                ));
            }
            Ok(self.put(lease.clone()))
        }
    }

    impl LeaseStore for Arc<FakeStore> {
        fn get(&self) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send {
            let l = self.lease.lock().unwrap().clone();
            async move { Ok(l) }
        }
        fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send {
            let (s, l) = (self.clone(), lease.clone());
            async move { s.write(&l, true).await }
        }
        fn replace(
            &self,
            lease: &Lease,
        ) -> impl Future<Output = Result<Lease, kube::Error>> + Send {
            let (s, l) = (self.clone(), lease.clone());
            async move { s.write(&l, false).await }
        }
    }

    fn elector(store: &Arc<FakeStore>, identity: &str) -> Elector<Arc<FakeStore>> {
        let mut s = settings(2_000, 1_000, 100);
        s.identity = identity.into();
        Elector::new(store.clone(), s).unwrap()
    }

    #[tokio::test]
    async fn a_standby_waits_a_full_lease_from_its_own_observation() {
        let store = Arc::new(FakeStore::default());
        // holder "ghost" stamped a renewTime far in the future and then died
        store.put(lease("0", Some("ghost"), ts(YEAR_2100), 2));
        let mut b = elector(&store, "b");
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(5);
        assert_eq!(
            b.try_acquire_or_renew(far).await.unwrap(),
            Attempt::HeldBy("ghost".into())
        );
        let took = tokio::time::timeout(Duration::from_secs(5), b.acquire())
            .await
            .expect("takes over once the record stayed unchanged for the lease duration");
        assert!(
            took - t0 >= Duration::from_secs(2),
            "took over after {:?}",
            took - t0
        );
        assert_eq!(store.holder().as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn only_one_of_two_candidates_wins_and_a_release_hands_over_at_once() {
        let store = Arc::new(FakeStore::default());
        let mut a = elector(&store, "a");
        let mut b = elector(&store, "b");
        let far = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            a.try_acquire_or_renew(far).await.unwrap(),
            Attempt::Held { .. }
        ));
        assert_eq!(
            b.try_acquire_or_renew(far).await.unwrap(),
            Attempt::HeldBy("a".into())
        );
        assert!(a.release().await.unwrap());
        assert!(store.holder().is_none());
        assert!(matches!(
            b.try_acquire_or_renew(far).await.unwrap(),
            Attempt::Held { .. }
        ));
        // a's release of a Lease it no longer holds changes nothing
        assert!(!a.release().await.unwrap());
        assert_eq!(store.holder().as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_hanging_renewal_ends_leadership_at_the_renew_deadline() {
        let store = Arc::new(FakeStore::default());
        let mut a = elector(&store, "a");
        let started = a.acquire().await;
        store.hang_writes.store(true, Ordering::SeqCst);
        let (_stop_tx, stop) = oneshot::channel();
        let err = tokio::time::timeout(Duration::from_secs(5), a.hold(started, stop))
            .await
            .expect("hold must give up by itself")
            .unwrap_err();
        let held = started.elapsed();
        assert!(matches!(err, LeaderError::RenewDeadline { .. }), "{err}");
        assert!(held >= Duration::from_secs(1), "gave up early: {held:?}");
        // strictly before any standby could take over (2 s after the last write)
        assert!(held < Duration::from_secs(2), "gave up too late: {held:?}");
    }

    #[tokio::test]
    async fn failing_renewals_end_leadership_and_a_new_holder_ends_it_at_once() {
        let store = Arc::new(FakeStore::default());
        let mut a = elector(&store, "a");
        let started = a.acquire().await;
        store.fail_writes.store(true, Ordering::SeqCst);
        let (_keep, stop) = oneshot::channel();
        let err = a.hold(started, stop).await.unwrap_err();
        assert!(
            matches!(&err, LeaderError::RenewDeadline { last_error, .. } if last_error.contains("unavailable")),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));

        store.fail_writes.store(false, Ordering::SeqCst);
        let started = a.acquire().await;
        store.put(lease("x", Some("intruder"), ts(0), 2));
        let (_keep, stop) = oneshot::channel();
        let err = a.hold(started, stop).await.unwrap_err();
        assert!(matches!(err, LeaderError::Lost { holder: Some(ref h) } if h == "intruder"));
    }

    #[tokio::test]
    async fn hold_renews_until_stopped() {
        let store = Arc::new(FakeStore::default());
        let mut a = elector(&store, "a");
        let started = a.acquire().await;
        let rv_before = store.rv.load(Ordering::SeqCst);
        let (stop_tx, stop) = oneshot::channel();
        let task = tokio::spawn(async move {
            let r = a.hold(started, stop).await;
            (a, r)
        });
        // renewals keep the resourceVersion moving
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.rv.load(Ordering::SeqCst) < rv_before + 3 {
            assert!(Instant::now() < deadline, "no renewals");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(()).unwrap();
        let (mut a, r) = task.await.unwrap();
        r.unwrap();
        assert!(a.release().await.unwrap());
    }

    #[test]
    fn the_fence_fires_after_its_deadline_unless_disarmed() {
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let fence = Fence::start(move || f.store(true, Ordering::SeqCst)).unwrap();
        let armed_at = std::time::Instant::now();
        fence.arm_until(Instant::now() + Duration::from_millis(200));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !fired.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "fence never fired");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(armed_at.elapsed() >= Duration::from_millis(200));

        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let fence = Fence::start(move || f.store(true, Ordering::SeqCst)).unwrap();
        fence.arm_until(Instant::now() + Duration::from_millis(100));
        fence.disarm();
        std::thread::sleep(Duration::from_millis(400));
        assert!(!fired.load(Ordering::SeqCst), "a disarmed fence fired");
    }
}
