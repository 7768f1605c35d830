//! Leader election with a `coordination.k8s.io/v1` Lease.
//!
//! Only the holder of the Lease runs the controllers. The holder renews the Lease
//! every `renew_every`; a standby takes over once the Lease has not been renewed for
//! `lease_duration`. Every write carries the Lease's resourceVersion, so two
//! candidates can never both succeed. A holder that fails to renew before the Lease
//! expires stops acting (the process exits), so no action is done twice.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{debug, info, warn};

/// Failure of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be read or written.
    #[error("lease API: {0}")]
    Kube(#[from] kube::Error),
    /// Another candidate holds the Lease now.
    #[error("lost the lease to another candidate")]
    Lost,
    /// Renewal kept failing until the Lease could expire.
    #[error("cannot renew the lease: {0}")]
    RenewFailed(String),
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
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

/// Outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease.
    Held,
    /// Someone else holds a valid Lease.
    Standby,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn expired(spec: &LeaseSpec, at: k8s_openapi::jiff::Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed.0 + k8s_openapi::jiff::SignedDuration::from_secs(secs) < at
}

/// Tries once to acquire or renew the Lease.
pub async fn try_acquire(api: &Api<Lease>, s: &LeaderSettings) -> Result<Attempt, LeaderError> {
    let duration_secs = i32::try_from(s.lease_duration.as_secs()).unwrap_or(15);
    let fresh_spec = |transitions: i32, acquire: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(duration_secs),
        acquire_time: Some(acquire.unwrap_or_else(now)),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let existing = api.get_opt(&s.name).await?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(fresh_spec(0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Standby),
            Err(e) => Err(e.into()),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let mine = spec.holder_identity.as_deref() == Some(s.identity.as_str());
    if !mine && !expired(&spec, k8s_openapi::jiff::Timestamp::now()) {
        debug!(holder = ?spec.holder_identity, "lease held by another candidate");
        return Ok(Attempt::Standby);
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
    let acquire = if mine {
        spec.acquire_time.clone()
    } else {
        None
    };
    lease.spec = Some(fresh_spec(transitions, acquire));
    // `replace` sends the resourceVersion we read: a concurrent writer makes it fail.
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Attempt::Held),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Standby),
        Err(e) => Err(e.into()),
    }
}

/// Waits until this candidate holds the Lease.
pub async fn acquire(client: Client, s: &LeaderSettings) -> Result<(), LeaderError> {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    info!(lease = %s.name, identity = %s.identity, "waiting for leadership");
    loop {
        match try_acquire(&api, s).await {
            Ok(Attempt::Held) => {
                info!(lease = %s.name, "became leader");
                return Ok(());
            }
            Ok(Attempt::Standby) => {}
            Err(e) => warn!(error = %e, "leader election attempt failed"),
        }
        tokio::time::sleep(s.renew_every).await;
    }
}

/// Renews the Lease until renewal fails for longer than the lease duration; returns
/// an error then (the caller must stop acting).
pub async fn keep(client: Client, s: LeaderSettings) -> LeaderError {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(s.renew_every).await;
        match try_acquire(&api, &s).await {
            Ok(Attempt::Held) => last_ok = tokio::time::Instant::now(),
            Ok(Attempt::Standby) => {
                return LeaderError::Lost;
            }
            Err(e) => {
                warn!(error = %e, "cannot renew the lease");
                // Give up before the lease can expire, so that a successor never
                // overlaps with us.
                if last_ok.elapsed() + s.renew_every >= s.lease_duration {
                    return LeaderError::RenewFailed(e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expiry() {
        let t0 = k8s_openapi::jiff::Timestamp::from_second(1_000_000)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(t0)),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!expired(
            &spec,
            t0 + k8s_openapi::jiff::SignedDuration::from_secs(14)
        ));
        assert!(expired(
            &spec,
            t0 + k8s_openapi::jiff::SignedDuration::from_secs(16)
        ));
        assert!(expired(&LeaseSpec::default(), t0));
    }
}
