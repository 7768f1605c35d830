//! The MaintenanceWindow controller: recurring windows (5-field cron start + duration
//! in an IANA zone) in which disruptive operations on the selected TradingBots may run.
//!
//! Why it is shaped like this: the window arithmetic ([`crate::shared::window`]) and the
//! decision whether an operation may run ([`crate::shared::gate`], shared because the
//! TradingBot controller asks it) are pure, so midnight crossings, DST gaps and
//! repeats, and overlapping windows are unit-tested at exact instants. This controller
//! only reports a window's state ([`status`]: active, current and next window, selected
//! bots, deferred operations, Ready/InvalidSpec), publishes Events when a window opens
//! or closes, and keeps a reflector store of all windows that the TradingBot controller
//! reads through [`gate::windows_in`]. It never polls: each reconcile requeues exactly
//! at the window's next opening or closing. It does not enqueue the TradingBot
//! controller (kube-runtime controllers cannot enqueue each other); the TradingBot
//! reconcile asks the gate itself and requeues at min(its poll interval, the next
//! boundary of its windows), so a deferred change rolls at the opening. While a window
//! is open, its database tasks ([`tasks`]) run once per window and bot.

pub mod archive;
pub mod error;
pub mod status;
pub mod tasks;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use iq720_crds::{MaintenanceWindow, TradingBot};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, controller};
use tracing::{debug, info, warn};

use crate::shared::context::Context;
use crate::shared::gate;
pub use crate::shared::window::until;
use crate::shared::window_nudges;
use error::{Error, Result};

/// Name of this controller in metrics.
pub const CONTROLLER: &str = "maintenancewindow";
/// Field manager of this controller's status writes.
pub const STATUS_MANAGER: &str = "iq720-operator-maintenancewindow";
/// Retry of tasks on bots that were not ready, while the window is open.
const TASK_RETRY: Duration = Duration::from_secs(10);

/// What the reconciles of this controller share.
pub struct State {
    /// The operator's context (its `tradingbots` store serves the selected bots and
    /// their deferred operations).
    pub ctx: Arc<Context>,
}

/// The bots of a namespace, unpacked from the TradingBot controller's store (a
/// window's reconcile reads their labels, status and deferred operations).
async fn bots_in(state: &State, namespace: &str) -> Result<Vec<TradingBot>> {
    let ctx = &state.ctx;
    let cached =
        crate::shared::cache::in_namespace(ctx.tradingbots.store(), &ctx.client, namespace).await?;
    Ok(cached.iter().filter_map(|b| b.unpack()).collect())
}

async fn reconcile(mw: Arc<MaintenanceWindow>, state: Arc<State>) -> Result<Action> {
    let ctx = &state.ctx;
    let _measure = ctx.metrics.count_and_measure(CONTROLLER);
    let ns = mw.namespace().unwrap_or_default();
    let name = mw.name_any();
    let gauge = ctx
        .metrics
        .maintenance_windows_open
        .with_label_values(&[ns.as_str(), name.as_str()]);
    if mw.metadata.deletion_timestamp.is_some() {
        gauge.set(0);
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let generation = mw.metadata.generation;
    let was_active = mw.status.as_ref().is_some_and(|s| s.active);
    let mut st = mw.status.clone().unwrap_or_default();
    st.observed_generation = generation;
    let bots = bots_in(&state, &ns).await?;
    let refs: Vec<&TradingBot> = bots.iter().collect();
    let all_windows = gate::windows_in(ctx, &ns).await?;
    status::bots(&mut st, &mw, &refs, &all_windows, now);
    // A scheduled key rotation falling due later: reconcile then to list it.
    let rotation_due = status::next_rotation_due(&refs, now);

    let window = match validate::validate(&mw.spec, now) {
        Ok(w) => w,
        Err(problems) => {
            if status::invalid(&mut st, &problems, generation) {
                warn!(window = %name, namespace = %ns, problems = ?problems, "invalid MaintenanceWindow");
                ctx.event(
                    mw.as_ref(),
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    problems.join("; "),
                )
                .await;
            }
            gauge.set(0);
            status::write(ctx, &mw, &st).await?;
            // Nothing changes until the spec does: no requeue, no hot loop.
            return Ok(Action::await_change());
        }
    };
    let open = window.open_at(now);
    let next = match open {
        Some(p) => window.next_start(p.end),
        None => window.next_start(now),
    };
    status::valid(&mut st, open, next, generation);
    gauge.set(i64::from(open.is_some()));
    match (was_active, open) {
        (false, Some(p)) => {
            info!(window = %name, namespace = %ns, until = %p.end, "maintenance window opened");
            ctx.event(
                mw.as_ref(),
                EventType::Normal,
                "WindowOpened",
                "Open",
                format!(
                    "window open until {} for {} selected bot(s); deferred operations may run",
                    p.end,
                    st.selected_bots.len()
                ),
            )
            .await;
        }
        (true, None) => {
            info!(window = %name, namespace = %ns, "maintenance window closed");
            let note = match next {
                Some(n) => format!("window closed; next opening {n}"),
                None => "window closed; the schedule never matches again".to_string(),
            };
            ctx.event(
                mw.as_ref(),
                EventType::Normal,
                "WindowClosed",
                "Close",
                note,
            )
            .await;
        }
        _ => {}
    }
    let mut retry_tasks = false;
    if let Some(p) = open {
        let selected: Vec<&TradingBot> = refs
            .iter()
            .copied()
            .filter(|b| st.selected_bots.contains(&b.name_any()))
            .collect();
        retry_tasks = tasks::run(ctx, &mw, p, &selected, &mut st.task_runs)
            .await
            .retry;
    }
    status::write(ctx, &mw, &st).await?;
    let boundary = [window.next_boundary(now), rotation_due]
        .into_iter()
        .flatten()
        .min()
        .map(|at| until(now, at));
    Ok(match (boundary, retry_tasks) {
        (Some(d), true) => Action::requeue(d.min(TASK_RETRY)),
        (None, true) => Action::requeue(TASK_RETRY),
        (Some(d), false) => Action::requeue(d),
        (None, false) => Action::await_change(),
    })
}

fn error_policy(mw: Arc<MaintenanceWindow>, error: &Error, state: Arc<State>) -> Action {
    warn!(window = %mw.name_any(), namespace = ?mw.namespace(), error = %error, "reconcile failed");
    state
        .ctx
        .metrics
        .reconcile_failure(CONTROLLER, error.metric_label());
    Action::requeue(Duration::from_secs(5))
}

/// Runs the MaintenanceWindow controller until the stream ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let windows: Api<MaintenanceWindow> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Bots are read from the TradingBot controller's store (one full copy of the bots
    // in the operator); that controller's watch nudges the windows of a namespace when
    // a bot changes in a way a window reads ([`crate::shared::window_nudges`]).
    let nudges = window_nudges::stream(ctx.window_nudges.subscribe());
    let config = controller::Config::default().concurrency(ctx.settings.max_concurrent_reconciles);
    // The store serves the gate's reads once it holds a full list.
    let (window_store, writer) = reflector::store();
    let window_events = reflector(
        writer,
        watcher::watcher(windows, watcher::Config::default()).default_backoff(),
    );
    let window_stream = ctx
        .windows
        .install_on_first_list(window_events, window_store.clone())
        .applied_objects();
    let controller =
        Controller::for_stream(window_stream, window_store.clone()).with_config(config);
    let state = Arc::new(State { ctx: ctx.clone() });
    let mapper_store = window_store.clone();
    controller
        // A bot's labels, MaintenancePending condition, key rotation (...) changed or
        // it is gone: the windows of its namespace refresh selectedBots and
        // deferredOperations (and run tasks on a bot that became ready).
        .reconcile_on(nudges.flat_map(move |nudge| {
            let refs: Vec<ObjectRef<MaintenanceWindow>> = mapper_store
                .state()
                .into_iter()
                .filter(|w| match &nudge {
                    window_nudges::Nudge::All => true,
                    window_nudges::Nudge::Namespace(ns) => w.namespace().as_ref() == Some(ns),
                })
                .map(|w| ObjectRef::from_obj(w.as_ref()))
                .collect();
            futures::stream::iter(refs)
        }))
        .shutdown_on_signal()
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(window = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
