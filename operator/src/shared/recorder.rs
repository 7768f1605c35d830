//! Publishes Kubernetes Events (`events.k8s.io/v1`), repeated ones as a series.
//!
//! Why not kube-runtime's `Recorder`: to count a repeated Event as a series it keeps
//! a full copy of every Event it published in the last six minutes, key and object
//! together about 4 KiB, and forgets them only when it publishes the next one. At
//! 1,000 bots one Event each (all paused, all started) is several MiB of the
//! operator's memory for as long as nothing else happens (`make bench-scale`). This
//! recorder publishes the same Events with the same series semantics and remembers of
//! each only what the next repetition needs: the Event's name, its count and when it
//! was last seen, under a hash of what makes two Events the same.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use serde_json::json;

/// How long a published Event can still be counted as repeated (kube-runtime's value).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What the recorder remembers of a published Event.
#[derive(Debug, Clone)]
struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events for one reporter.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    reporter: Reporter,
    published: Arc<Mutex<HashMap<u64, Published>>>,
}

impl EventRecorder {
    /// A recorder publishing as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            published: Arc::default(),
        }
    }

    /// Publishes `ev` about `regarding`: a new Event, or, when the same Event (type,
    /// action, reason, object, related object) was published within six minutes, the
    /// next count of its series.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = same_event_key(ev, regarding);
        let repeated = self.repeated(key, now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let published = match repeated {
            Some(mut p) => {
                p.count += 1;
                p.last = now;
                let series = EventSeries {
                    count: p.count,
                    last_observed_time: MicroTime(now),
                };
                let patch = json!({ "series": series });
                match events
                    .patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => p,
                    // The Event is gone (expired or deleted): start over.
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        self.create(&events, ev, regarding, now).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => self.create(&events, ev, regarding, now).await?,
        };
        if let Ok(mut map) = self.published.lock() {
            map.insert(key, published);
        }
        Ok(())
    }

    /// The remembered Event under `key` if it is recent enough to repeat; forgets
    /// every Event too old to.
    fn repeated(&self, key: u64, now: Timestamp) -> Option<Published> {
        let mut map = self.published.lock().ok()?;
        map.retain(|_, p| p.last + SERIES_WINDOW > now);
        map.get(&key).cloned()
    }

    async fn create(
        &self,
        events: &Api<K8sEvent>,
        ev: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<Published, kube::Error> {
        let event = new_event(&self.reporter, ev, regarding, now);
        let created = events.create(&PostParams::default(), &event).await?;
        Ok(Published {
            name: created.metadata.name.unwrap_or_default(),
            count: 1,
            last: now,
        })
    }
}

/// What makes two Events the same Event repeated (kube-runtime's rule: the note may
/// differ).
fn same_event_key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    matches!(ev.type_, EventType::Warning).hash(&mut h);
    ev.action.hash(&mut h);
    ev.reason.hash(&mut h);
    hash_reference(regarding, &mut h);
    if let Some(related) = &ev.secondary {
        hash_reference(related, &mut h);
    }
    h.finish()
}

fn hash_reference(r: &ObjectReference, h: &mut DefaultHasher) {
    (
        &r.api_version,
        &r.kind,
        &r.namespace,
        &r.name,
        &r.uid,
        &r.resource_version,
        &r.field_path,
    )
        .hash(h);
}

/// A new Event object (the fields kube-runtime's recorder sets).
fn new_event(
    reporter: &Reporter,
    ev: &Event,
    regarding: &ObjectReference,
    now: Timestamp,
) -> K8sEvent {
    K8sEvent {
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_ref().unwrap_or(&reporter.controller),
                now.as_nanosecond()
            )),
            ..Default::default()
        },
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        note: ev.note.clone(),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        related: ev.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(
            match ev.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot(rv: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("trading.iq720.io/v1alpha1".into()),
            kind: Some("TradingBot".into()),
            namespace: Some("trading".into()),
            name: Some("alpha".into()),
            uid: Some("1234".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    fn ev(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    #[test]
    fn the_same_event_is_one_key_whatever_its_note() {
        assert_eq!(
            same_event_key(&ev("Paused", "a"), &bot("1")),
            same_event_key(&ev("Paused", "b"), &bot("1"))
        );
        assert_ne!(
            same_event_key(&ev("Paused", "a"), &bot("1")),
            same_event_key(&ev("Resumed", "a"), &bot("1"))
        );
        assert_ne!(
            same_event_key(&ev("Paused", "a"), &bot("1")),
            same_event_key(&ev("Paused", "a"), &bot("2"))
        );
    }

    #[test]
    fn a_new_event_carries_what_kubectl_shows() {
        let reporter = Reporter {
            controller: "iq720-operator".into(),
            instance: Some("pod-1".into()),
        };
        let e = new_event(
            &reporter,
            &ev("Paused", "paused by spec"),
            &bot("1"),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("trading"));
        assert_eq!(e.metadata.name.as_deref(), Some("alpha.0"));
        assert_eq!(e.reason.as_deref(), Some("Paused"));
        assert_eq!(e.note.as_deref(), Some("paused by spec"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.reporting_controller.as_deref(), Some("iq720-operator"));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-1"));
        assert!(e.series.is_none());
    }
}
