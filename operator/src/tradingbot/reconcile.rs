//! The TradingBot reconcile pipeline:
//! validate → ensure token → build → apply owned objects → talk to the bot → status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iq720_crds::trading_bot::{EmergencyStopStatus, TradingBotPhase};
use iq720_crds::{TradingBot, TradingBotStatus};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use super::bot_client::{BotApiError, BotEndpoint};
use super::build::{self, DesiredObjects, Owner, labels, token_secret};
use super::status::{self, BotReport, condition, set_condition};
use super::validate;
use crate::FIELD_MANAGER;
use crate::context::Context;
use crate::error::{Error, Result};

/// Applies one owned object with server-side apply (forced: the operator owns these
/// fields).
async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(obj)?;
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(&value)).await?)
}

/// Creates the API token Secret once and returns the token. An existing token is kept.
async fn ensure_token(ctx: &Context, owner: &Owner) -> Result<String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = labels::token_secret_name(&owner.name);
    if let Some(existing) = api.get_opt(&name).await?
        && let Some(token) = token_secret::token_of(&existing)
    {
        return Ok(token);
    }
    let token = token_secret::generate_token().map_err(Error::Token)?;
    let secret = token_secret::build(owner, &token);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(token),
        // Created concurrently, or present without a token: apply ours.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            apply(ctx, &owner.namespace, &secret).await?;
            Ok(token)
        }
        Err(e) => Err(e.into()),
    }
}

/// The bot's endpoint when its pod is running with an IP.
async fn endpoint(
    ctx: &Context,
    owner: &Owner,
    token: &str,
) -> Result<Option<(BotEndpoint, bool)>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let Some(pod) = pods.get_opt(&labels::pod_name(&owner.name)).await? else {
        return Ok(None);
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let status = pod.status.unwrap_or_default();
    let Some(ip) = status.pod_ip.filter(|ip| !ip.is_empty()) else {
        return Ok(None);
    };
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let base = if ip.contains(':') {
        format!("http://[{ip}]:{}", labels::API_PORT)
    } else {
        format!("http://{ip}:{}", labels::API_PORT)
    };
    Ok(Some((
        BotEndpoint {
            base,
            token: token.to_string(),
        },
        ready,
    )))
}

/// Writes the status when it differs from the stored one. Returns whether it wrote.
async fn write_status(ctx: &Context, bot: &TradingBot, new: TradingBotStatus) -> Result<bool> {
    if bot.status.as_ref() == Some(&new) {
        return Ok(false);
    }
    let api: Api<TradingBot> =
        Api::namespaced(ctx.client.clone(), &bot.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": TradingBot::api_version(&()),
        "kind": TradingBot::kind(&()),
        "status": new,
    });
    api.patch_status(
        &bot.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .status_writes
        .with_label_values(&["tradingbot"])
        .inc();
    let phase = new.phase.map(|p| format!("{p:?}")).unwrap_or_default();
    ctx.record_phase(
        &bot.namespace().unwrap_or_default(),
        &bot.name_any(),
        Some(phase),
    );
    Ok(true)
}

/// The endpoint of a bot whose pod has an IP (ready or not).
pub(super) async fn bot_endpoint(
    ctx: &Context,
    owner: &Owner,
    token: &str,
) -> Result<Option<BotEndpoint>> {
    Ok(endpoint(ctx, owner, token).await?.map(|(ep, _)| ep))
}

/// Applies every owned object.
pub(super) async fn apply_objects(ctx: &Context, ns: &str, d: &DesiredObjects) -> Result<()> {
    apply::<ConfigMap>(ctx, ns, &d.config_map).await?;
    apply::<Service>(ctx, ns, &d.service).await?;
    apply::<NetworkPolicy>(ctx, ns, &d.network_policy).await?;
    apply::<StatefulSet>(ctx, ns, &d.stateful_set).await?;
    Ok(())
}

/// Reconciles a TradingBot that is not being deleted.
pub async fn apply_bot(bot: Arc<TradingBot>, ctx: &Context) -> Result<Action> {
    let generation = bot.metadata.generation;
    let mut st = bot.status.clone().unwrap_or_default();
    st.observed_generation = generation;

    // 1. validate what CEL cannot
    let problems = validate::problems(&bot);
    if !problems.is_empty() {
        let message = problems.join("; ");
        let was_invalid = status::is_true(&st.conditions, condition::INVALID_SPEC);
        set_condition(
            &mut st.conditions,
            condition::INVALID_SPEC,
            true,
            "InvalidSpec",
            &message,
            generation,
        );
        st.phase = Some(TradingBotPhase::Invalid);
        if !was_invalid || bot.status.as_ref().and_then(|s| s.observed_generation) != generation {
            ctx.event(
                bot.as_ref(),
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                message.clone(),
            )
            .await;
        }
        write_status(ctx, &bot, st).await?;
        // Nothing changes until the spec does: no requeue, no hot loop.
        return Ok(Action::await_change());
    }
    set_condition(
        &mut st.conditions,
        condition::INVALID_SPEC,
        false,
        "Valid",
        "the spec is valid",
        generation,
    );

    // 2. token, 3. build, 4. apply
    let owner = Owner::of(&bot)?;
    let token = ensure_token(ctx, &owner).await?;
    if bot.spec.emergency_stop {
        return super::emergency::reconcile(bot, ctx, &owner, &token, st).await;
    }
    let desired = build::desired(&bot, 1)?;
    apply_objects(ctx, &owner.namespace, &desired).await?;
    let recovering = st
        .emergency_stop
        .as_ref()
        .is_some_and(|e| e.completed_at.is_some());
    if recovering {
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            true,
            "Recovering",
            "emergency stop cleared; the bot restarts halted and is resumed once ready",
            generation,
        );
    } else {
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            false,
            "NotStopped",
            "no emergency stop",
            generation,
        );
    }

    // 5. talk to the bot
    let Some((ep, ready)) = endpoint(ctx, &owner, &token).await? else {
        starting(&mut st, "the bot pod is not running yet", generation);
        write_status(ctx, &bot, st).await?;
        return Ok(Action::requeue(ctx.settings.bot_poll_interval));
    };
    if !ready {
        starting(&mut st, "the bot pod is not ready yet", generation);
        write_status(ctx, &bot, st).await?;
        return Ok(Action::requeue(ctx.settings.bot_poll_interval));
    }
    let report = match talk_to_bot(ctx, &bot, &ep, &desired, &mut st, recovering).await {
        Ok(r) => r,
        Err(Error::Bot(e)) => {
            set_condition(
                &mut st.conditions,
                condition::READY,
                false,
                "BotUnreachable",
                &e.to_string(),
                generation,
            );
            st.phase = Some(TradingBotPhase::Starting);
            write_status(ctx, &bot, st).await?;
            return Ok(Action::requeue(ctx.settings.bot_poll_interval));
        }
        Err(e) => return Err(e),
    };
    status::apply_report(&mut st, &report, generation);
    write_status(ctx, &bot, st).await?;
    Ok(Action::requeue(ctx.settings.bot_poll_interval))
}

fn starting(st: &mut TradingBotStatus, why: &str, generation: Option<i64>) {
    st.phase = Some(TradingBotPhase::Starting);
    set_condition(
        &mut st.conditions,
        condition::READY,
        false,
        "Starting",
        why,
        generation,
    );
}

/// Brings the running bot in line with the spec (hot config, pause, resume after an
/// emergency stop) and reads its figures.
async fn talk_to_bot(
    ctx: &Context,
    bot: &TradingBot,
    ep: &BotEndpoint,
    desired: &DesiredObjects,
    st: &mut TradingBotStatus,
    recovering: bool,
) -> Result<BotReport> {
    let mut status_json = ctx.bots.status(ep).await?;
    if recovering {
        // The bot keeps its emergency halt across restarts; clearing the flag means
        // "trade again", so resume it once it is back.
        ctx.bots.resume(ep).await?;
        st.emergency_stop = None;
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            false,
            "Recovered",
            "emergency stop cleared; the bot was resumed",
            bot.metadata.generation,
        );
        ctx.event(
            bot,
            EventType::Normal,
            "Resumed",
            "Resume",
            "emergency stop cleared: the bot is back and resumed".to_string(),
        )
        .await;
        info!(bot = %bot.name_any(), "resumed after emergency stop");
        status_json = ctx.bots.status(ep).await?;
    }
    // Hot-reloadable configuration (pause is compared with the engine's live state).
    let mut hot = desired.config.hot.clone();
    let paused_wanted = bot.spec.paused;
    if let Some(obj) = hot.as_object_mut() {
        obj.remove("paused");
    }
    let reported = ctx.bots.config(ep).await?;
    if let Some(patch) = build::bot_config::hot_diff(&hot, &reported) {
        match ctx.bots.patch_config(ep, &patch).await {
            Ok(_) => {
                ctx.metrics
                    .hot_reloads
                    .with_label_values(&["applied"])
                    .inc();
                let fields: Vec<&String> = patch
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                ctx.event(
                    bot,
                    EventType::Normal,
                    "ConfigReloaded",
                    "HotReload",
                    format!("applied {fields:?} to the running bot without a restart"),
                )
                .await;
            }
            Err(e) => {
                ctx.metrics.hot_reloads.with_label_values(&["failed"]).inc();
                ctx.event(
                    bot,
                    EventType::Warning,
                    "ConfigReloadFailed",
                    "HotReload",
                    e.to_string(),
                )
                .await;
                return Err(e.into());
            }
        }
    }
    let paused_now = status_json
        .get("paused")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if paused_now != paused_wanted {
        ctx.bots
            .patch_config(ep, &json!({ "paused": paused_wanted }))
            .await?;
        let (reason, note) = if paused_wanted {
            (
                "Paused",
                "new entries paused; open positions keep being managed",
            )
        } else {
            ("Unpaused", "new entries allowed again")
        };
        ctx.event(bot, EventType::Normal, reason, "Pause", note.to_string())
            .await;
        status_json = ctx.bots.status(ep).await?;
    }
    let performance = ctx.bots.performance(ep).await?;
    Ok(BotReport::from_json(&status_json, &performance))
}

/// Deletion: halt the bot and close its positions before its pod goes away. On
/// failure the deletion proceeds after the deadline, with a Warning Event.
pub async fn cleanup_bot(bot: Arc<TradingBot>, ctx: &Context) -> Result<Action> {
    let owner = Owner::of(&bot)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let token = secrets
        .get_opt(&labels::token_secret_name(&owner.name))
        .await?
        .and_then(|s| token_secret::token_of(&s));
    let outcome = match token {
        None => Err("no API token Secret".to_string()),
        Some(token) => match endpoint(ctx, &owner, &token).await? {
            None => Err("the bot pod is not running".to_string()),
            Some((ep, _)) => close_all(ctx, &ep).await.map_err(|e| e.to_string()),
        },
    };
    match outcome {
        Ok(closed) => {
            ctx.event(
                bot.as_ref(),
                EventType::Normal,
                "PositionsClosed",
                "Delete",
                format!("bot halted and {closed} position(s) closed before deletion"),
            )
            .await;
        }
        Err(why)
            if bot
                .status
                .as_ref()
                .and_then(|s| s.open_positions)
                .unwrap_or(0)
                == 0
                && why.contains("not running") =>
        {
            info!(bot = %owner.name, "deleting a bot whose pod is not running and that reported no open positions");
        }
        Err(why) => {
            ctx.event(
                bot.as_ref(),
                EventType::Warning,
                "PositionsMayRemainOpen",
                "Delete",
                format!(
                    "could not close positions before deletion ({why}); check the exchange account"
                ),
            )
            .await;
        }
    }
    ctx.record_phase(&owner.namespace, &owner.name, None);
    Ok(Action::await_change())
}

/// Calls close-all and confirms the bot is flat and halted. Returns the number of
/// positions it closed.
pub async fn close_all(ctx: &Context, ep: &BotEndpoint) -> Result<i32, BotApiError> {
    let report = ctx
        .bots
        .close_all(ep, ctx.settings.close_all_deadline)
        .await?;
    let closed = report
        .get("positions")
        .and_then(serde_json::Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let status = ctx.bots.status(ep).await?;
    let open = status
        .get("openPositions")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(-1);
    let halted = status
        .get("halted")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if open != 0 || !halted {
        return Err(BotApiError::Decode {
            path: "/api/v1/status".to_string(),
            message: format!(
                "after close-all the bot reports {open} open position(s), halted={halted}"
            ),
        });
    }
    Ok(i32::try_from(closed).unwrap_or(i32::MAX))
}

/// Emergency-stop bookkeeping shared with [`super::emergency`].
pub(super) struct StopOutcome {
    pub closed: Option<i32>,
    pub error: Option<String>,
}

/// Scales to zero and records the outcome of an emergency stop in the status.
pub(super) async fn finish_stop(
    ctx: &Context,
    bot: &TradingBot,
    owner: &Owner,
    mut st: TradingBotStatus,
    requested_at: Time,
    started: Instant,
    outcome: StopOutcome,
) -> Result<Action> {
    let desired = build::desired(bot, 0)?;
    apply_objects(ctx, &owner.namespace, &desired).await?;
    let generation = bot.metadata.generation;
    let elapsed = started.elapsed();
    let may_remain = outcome.error.is_some();
    let result = if may_remain {
        "positions_may_remain"
    } else {
        "flat"
    };
    ctx.metrics
        .emergency_stops
        .with_label_values(&[result])
        .inc();
    ctx.metrics
        .emergency_stop_duration
        .with_label_values(&[result])
        .observe(elapsed.as_secs_f64());
    ctx.event(
        bot,
        EventType::Normal,
        "ScaledToZero",
        "EmergencyStop",
        format!(
            "StatefulSet scaled to 0 replicas {:.0} ms after the stop was seen",
            elapsed.as_secs_f64() * 1000.0
        ),
    )
    .await;
    st.emergency_stop = Some(EmergencyStopStatus {
        requested_at: Some(requested_at),
        completed_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        positions_closed: outcome.closed,
        positions_may_remain: may_remain,
    });
    st.phase = Some(TradingBotPhase::EmergencyStopped);
    st.open_positions = if may_remain {
        st.open_positions
    } else {
        Some(0)
    };
    if let Some(why) = &outcome.error {
        warn!(bot = %owner.name, error = %why, "emergency stop could not confirm the bot is flat");
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            true,
            "PositionsMayRemainOpen",
            &format!("scaled to zero, but positions may remain open: {why}"),
            generation,
        );
    } else {
        set_condition(
            &mut st.conditions,
            condition::EMERGENCY_STOPPED,
            true,
            "Completed",
            &format!(
                "{} position(s) closed, trading halted, scaled to zero",
                outcome.closed.unwrap_or(0)
            ),
            generation,
        );
    }
    set_condition(
        &mut st.conditions,
        condition::READY,
        false,
        "EmergencyStopped",
        "the bot is stopped",
        generation,
    );
    write_status(ctx, bot, st).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}
