//! State shared by every reconcile of every controller: client, event recorder,
//! metrics, the bot API client and tunables. One `Context` per operator process.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Reporter};
use tracing::warn;

use super::cache::{
    AppliedMemory, BotStore, ConfirmedMemory, ObjectCache, TokenCache, WindowStore,
};
use super::metrics::Metrics;
use super::notify::{self, Notification, Notifier};
use super::recorder::EventRecorder;
use crate::botlink::client::BotApi;

/// Who may open connections to a bot's API port, as rendered into each bot's
/// NetworkPolicy. It comes from the operator's flags, which the Helm chart sets, so the
/// chart (not a resource name that `nameOverride` can change) decides who is admitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BotIngress {
    /// Namespace the operator's pods run in; the operator is admitted only from there.
    /// `None` (the operator runs outside a pod) admits the operator's pod label from
    /// any namespace.
    pub operator_namespace: Option<String>,
    /// Namespaces whose pods labelled `trading.iq720.io/metrics-scraper: "true"` may
    /// scrape bot metrics. Empty: no scraper is admitted.
    pub metrics_scraper_namespaces: Vec<String>,
}

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a running bot is polled for status.
    pub bot_poll_interval: Duration,
    /// Deadline for an emergency close-all before the bot is scaled to zero anyway.
    pub close_all_deadline: Duration,
    /// Timeout of an ordinary bot API call.
    pub bot_api_timeout: Duration,
    /// Who the bots' NetworkPolicies admit.
    pub bot_ingress: BotIngress,
    /// How often a running bot's live figures (PnL, win rate) may be written to its
    /// status when nothing else changed; phase, conditions and open positions are
    /// written at once. Prometheus metrics carry the high-frequency figures.
    pub status_figures_interval: Duration,
    /// Most reconciles running at once per controller.
    pub max_concurrent_reconciles: u16,
    /// Where webhook notifications go (`None`: not sent).
    pub notify: Option<super::notify::Target>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bot_poll_interval: Duration::from_secs(10),
            close_all_deadline: Duration::from_secs(10),
            bot_api_timeout: Duration::from_secs(3),
            bot_ingress: BotIngress::default(),
            status_figures_interval: Duration::from_secs(60),
            max_concurrent_reconciles: 32,
            notify: None,
        }
    }
}

/// Shared state of the controllers.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder.
    pub recorder: EventRecorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Bot control API client.
    pub bots: BotApi,
    /// Tunables.
    pub settings: Settings,
    /// Whether this replica runs the controllers (holds the leader Lease, or leader
    /// election is off). Drives `/leader` and the `iq720_operator_leader` gauge, never
    /// `/readyz`: a standby must be ready, or a one-replica rolling update never ends.
    leading: Arc<AtomicBool>,
    /// Last known phase of every bot, for the bots-by-phase gauge.
    phases: Arc<Mutex<BTreeMap<(String, String), String>>>,
    /// Reflector stores of owned objects and pods (reads go here, not the apiserver).
    pub cache: ObjectCache,
    /// What this process applied last, to skip applies that would change nothing.
    pub applied: AppliedMemory,
    /// Bots' API tokens, read once from their Secrets.
    pub tokens: TokenCache,
    /// Hot configuration last confirmed in each running bot (its drift check runs at
    /// most every `status_figures_interval` while nothing changes).
    pub hot_confirmed: ConfirmedMemory,
    /// MaintenanceWindows, for the gate of disruptive operations.
    pub windows: WindowStore,
    /// TradingBots, for the controllers that read bots they do not reconcile.
    pub tradingbots: BotStore,
    /// Bot changes that MaintenanceWindows read, from the TradingBot watch.
    pub window_nudges: super::window_nudges::WindowNudges,
    /// When each object's status was last written (to bound figure-only writes) and
    /// when its figures were last read from the bot.
    figures: Arc<Mutex<HashMap<String, FigureTimes>>>,
    /// Webhook notifications of incident Events.
    pub notifier: Notifier,
}

/// When an object's status was last written and its figures last read.
#[derive(Debug, Clone, Copy, Default)]
struct FigureTimes {
    written: Option<Instant>,
    read: Option<Instant>,
}

impl Context {
    /// Builds the context.
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: "iq720-operator".to_string(),
            instance,
        };
        let notifier = match settings.notify.clone() {
            None => Notifier::disabled(),
            Some(target) => Notifier::start(client.clone(), metrics.clone(), target)
                .unwrap_or_else(|e| {
                    warn!(error = %e, "cannot set up TLS for webhook notifications; none are sent");
                    Notifier::disabled()
                }),
        };
        Self {
            notifier,
            recorder: EventRecorder::new(client.clone(), reporter),
            bots: BotApi::new(settings.bot_api_timeout),
            client,
            metrics,
            settings,
            leading: Arc::new(AtomicBool::new(false)),
            phases: Arc::new(Mutex::new(BTreeMap::new())),
            cache: ObjectCache::default(),
            applied: AppliedMemory::default(),
            tokens: TokenCache::default(),
            hot_confirmed: ConfirmedMemory::default(),
            windows: WindowStore::default(),
            tradingbots: BotStore::default(),
            window_nudges: Default::default(),
            figures: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether a status write that changes only live figures is due for `key`
    /// (never written, or written longer than `status_figures_interval` ago).
    pub fn figures_due(&self, key: &str) -> bool {
        self.interval_passed(self.figure_times(key).written)
    }

    /// Whether the figures that only the status shows (the win rate, from the bot's
    /// `/performance`) should be read from the bot in this poll: a figure write is due
    /// and they were not read within `status_figures_interval`. An idle bot, whose
    /// status is never rewritten, is asked once per interval instead of at every poll.
    pub fn figures_read_due(&self, key: &str) -> bool {
        let times = self.figure_times(key);
        self.interval_passed(times.written) && self.interval_passed(times.read)
    }

    /// Never, or longer than `status_figures_interval` ago.
    fn interval_passed(&self, at: Option<Instant>) -> bool {
        at.is_none_or(|at| at.elapsed() >= self.settings.status_figures_interval)
    }

    /// `key`'s times (none recorded: both `None`, so everything is due; the same when
    /// the lock is poisoned).
    fn figure_times(&self, key: &str) -> FigureTimes {
        self.figures
            .lock()
            .ok()
            .and_then(|map| map.get(key).copied())
            .unwrap_or_default()
    }

    /// Records that `key`'s figures were read from the bot now.
    pub fn figures_read(&self, key: &str) {
        if let Ok(mut map) = self.figures.lock() {
            map.entry(key.to_string()).or_default().read = Some(Instant::now());
        }
    }

    /// Records that `key`'s status was written now (`false`: forget the object).
    pub fn status_written(&self, key: &str, written: bool) {
        if let Ok(mut map) = self.figures.lock() {
            if written {
                map.entry(key.to_string()).or_default().written = Some(Instant::now());
            } else {
                map.remove(key);
            }
        }
    }

    /// Records a bot's phase (None: the bot is gone) and refreshes the phase gauge.
    pub fn record_phase(&self, namespace: &str, name: &str, phase: Option<String>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        let key = (namespace.to_string(), name.to_string());
        match phase {
            Some(p) => {
                phases.insert(key, p);
            }
            None => {
                phases.remove(&key);
            }
        }
        self.metrics.bots_by_phase.reset();
        for p in phases.values() {
            self.metrics
                .bots_by_phase
                .with_label_values(&[p.as_str()])
                .inc();
        }
    }

    /// Whether this replica runs the controllers.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Records whether this replica runs the controllers (flag and gauge together).
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        self.metrics.leader.set(i64::from(leading));
    }

    /// Publishes an Event on `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
        if notify::wanted(reason) {
            self.notifier.send(Notification {
                severity: match ev.type_ {
                    EventType::Warning => "Warning",
                    EventType::Normal => "Normal",
                },
                reason: ev.reason,
                kind: K::kind(&()).to_string(),
                namespace: obj.meta().namespace.clone().unwrap_or_default(),
                name: obj.meta().name.clone().unwrap_or_default(),
                message: ev.note.unwrap_or_default(),
            });
        }
    }
}
