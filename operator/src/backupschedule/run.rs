//! Taking one bot's backup: the bot's consistent snapshot (`POST /api/v1/backup`,
//! SQLite online backup plus manifest, as `tar.gz`) streamed straight into an S3
//! multipart upload ([`crate::shared::s3::store_with_sha256`]).
//!
//! Why streamed: a trade database can be large, and the operator runs with little
//! memory and a read-only root file system. Only one part (a few MiB) is held at a
//! time; the sha256 is computed on the fly. An interrupted upload is aborted (or stays
//! an incomplete multipart upload after a restart), so a partial archive is never
//! listed, let alone counted as a backup. The sha256 goes into the object's metadata
//! right after the upload completes.

use std::collections::HashMap;

use http::Method;
use iq720_crds::backup_schedule::BackupRecord;
use iq720_crds::{BackupSchedule, TradingBot};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tokio::time::Instant;
use tracing::info;

use super::BackupSettings;
use super::error::BackupError;
use crate::botlink::BotRef;
use crate::botlink::endpoint::{self, PodLookup};
use crate::botlink::token;
use crate::shared::context::Context;

use crate::shared::s3::store_with_sha256;
pub use crate::shared::s3::{
    MANAGED_BY, META_BOT, META_MANAGED_BY, META_NAMESPACE, META_SCHEDULE, META_SHA256, S3Target,
    connect,
};
use iq720_contract::maintenance::HEADER_ARCHIVE_SHA256;

/// Content type of a backup archive.
const CONTENT_TYPE: &str = "application/gzip";

/// `<prefix>/<namespace>/<bot>/`: where a bot's backups live.
pub fn bot_prefix(prefix: &str, namespace: &str, bot: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{namespace}/{bot}/")
    } else {
        format!("{prefix}/{namespace}/{bot}/")
    }
}

/// `<prefix>/<namespace>/<bot>/<UTC timestamp>.tar.gz`, the timestamp with
/// milliseconds so two backups in one second do not collide, and sortable as text.
pub fn object_key(prefix: &str, namespace: &str, bot: &str, at: Timestamp) -> String {
    format!(
        "{}{}.tar.gz",
        bot_prefix(prefix, namespace, bot),
        at.strftime("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// What a backup attempt of one bot came to.
#[derive(Debug)]
pub enum Outcome {
    /// Uploaded (and verified when asked: `record.verified`).
    Done(BackupRecord),
    /// Not attempted, by design (reason is the Event reason).
    Skipped {
        /// Event reason, e.g. `BotStopped`.
        reason: &'static str,
        /// Why.
        message: String,
    },
    /// Failed; the record is there when the object was written but failed
    /// verification (it stays listed, unverified, so the evidence is kept).
    Failed(BackupError, Option<BackupRecord>),
}

/// Why a bot is not backed up at all (by design, not a failure), if it is not.
///
/// Both kinds of emergency stop count: `spec.emergencyStop`, and the namespace's fleet
/// kill switch, which shows as a stop recorded in the bot's status and not yet cleared.
pub fn stopped(bot: &TradingBot) -> Option<String> {
    let recorded = bot
        .status
        .as_ref()
        .and_then(|s| s.emergency_stop.as_ref())
        .is_some_and(|e| e.requested_at.is_some() && e.cleared_at.is_none());
    (bot.spec.emergency_stop || recorded).then(|| {
        "the bot is stopped by an emergency stop (scaled to zero); it is skipped until it runs again".to_string()
    })
}

/// Backs up one bot: snapshot → S3 → metadata → verification when `verify`.
pub async fn backup_bot(
    ctx: &Context,
    settings: &BackupSettings,
    s3: &S3Target,
    schedule: &BackupSchedule,
    bot: &TradingBot,
    verify: bool,
) -> Outcome {
    if let Some(message) = stopped(bot) {
        return Outcome::Skipped {
            reason: "BotStopped",
            message,
        };
    }
    // Start, stream and verified lines give each attempt's phases in the log
    // (`make bench-backup` reads them for per-bot durations and concurrency).
    info!(bot = %bot.name_any(), namespace = ?bot.namespace(), "backup started");
    let deadline = Instant::now() + settings.attempt_deadline;
    match attempt(ctx, settings, s3, schedule, bot, deadline).await {
        Err(BackupError::Deadline(_)) => {
            Outcome::Failed(BackupError::Deadline(settings.attempt_deadline), None)
        }
        Err(e) => Outcome::Failed(e, None),
        Ok(mut record) => {
            if !verify {
                return Outcome::Done(record);
            }
            let checked = super::verify::verify_object(
                s3,
                &record.key,
                &record.sha256,
                &settings.work_dir,
                deadline,
            )
            .await;
            match checked {
                Ok(()) => {
                    info!(bot = %record.bot, key = %record.key, "backup verified");
                    record.verified = true;
                    Outcome::Done(record)
                }
                Err(BackupError::Deadline(_)) => {
                    let e = BackupError::Deadline(settings.attempt_deadline);
                    record.verification_error = Some(e.to_string());
                    Outcome::Failed(e, Some(record))
                }
                Err(e) => {
                    record.verification_error = Some(e.to_string());
                    Outcome::Failed(e, Some(record))
                }
            }
        }
    }
}

async fn attempt(
    ctx: &Context,
    settings: &BackupSettings,
    s3: &S3Target,
    schedule: &BackupSchedule,
    bot: &TradingBot,
    deadline: Instant,
) -> Result<BackupRecord, BackupError> {
    let ns = bot.namespace().unwrap_or_default();
    let name = bot.name_any();
    let bref = BotRef::new(&ns, &name);
    let token = token::read(&ctx.client, &bref)
        .await?
        .ok_or_else(|| BackupError::BotUnavailable("the bot has no API token yet".into()))?;
    let pod = match endpoint::lookup(&ctx.client, &bref, &token)
        .await
        .map_err(|e| BackupError::BotUnavailable(format!("cannot read the bot pod: {e}")))?
    {
        PodLookup::Found(p) if p.ready && !p.terminating => p,
        PodLookup::Found(_) => {
            return Err(BackupError::BotUnavailable(
                "the bot pod is not Ready".into(),
            ));
        }
        PodLookup::Missing | PodLookup::NoAddress => {
            return Err(BackupError::BotUnavailable(
                "the bot pod is not running".into(),
            ));
        }
    };
    let head_wait = deadline.saturating_duration_since(Instant::now());
    let (headers, body) = ctx
        .bots
        .call_stream(
            &pod.endpoint,
            Method::POST,
            "/api/v1/backup",
            Some(head_wait),
        )
        .await?;
    let key = object_key(&s3.prefix, &ns, &name, Timestamp::now());
    info!(bot = %name, namespace = %ns, key = %key, "snapshot received; streaming it to S3");
    let metadata = HashMap::from([
        (META_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (META_NAMESPACE.to_string(), ns.clone()),
        (META_BOT.to_string(), name.clone()),
        (META_SCHEDULE.to_string(), schedule.name_any()),
    ]);
    // The bot hashes the archive as it writes it; an older bot announces nothing and
    // the checksum is then written after the upload.
    let announced = headers
        .get(HEADER_ARCHIVE_SHA256)
        .and_then(|v| v.to_str().ok());
    let uploaded = store_with_sha256(
        s3,
        &key,
        CONTENT_TYPE,
        metadata,
        body,
        settings.part_size,
        announced,
        deadline,
    )
    .await?;
    info!(bot = %name, namespace = %ns, key = %key, size = uploaded.size, "backup uploaded");
    Ok(BackupRecord {
        bot: name,
        key,
        size_bytes: i64::try_from(uploaded.size).unwrap_or(i64::MAX),
        sha256: uploaded.sha256,
        verified: false,
        verification_error: None,
        completed_at: Time(k8s_openapi::jiff::Timestamp::now()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bot(emergency_stop: bool, status: serde_json::Value) -> TradingBot {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "trading.iq720.io/v1alpha1", "kind": "TradingBot",
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"version": "0.1.0", "pairs": ["BTC/USDT"], "emergencyStop": emergency_stop},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn stopped_bots_are_skipped_whichever_stop_halted_them() {
        assert!(stopped(&bot(false, serde_json::json!({}))).is_none());
        assert!(stopped(&bot(true, serde_json::json!({}))).is_some());
        // the namespace's fleet kill switch: the stop is recorded, the spec untouched
        let fleet = serde_json::json!({"emergencyStop": {"requestedAt": "2026-11-25T12:00:00Z"}});
        assert!(stopped(&bot(false, fleet)).is_some());
        let cleared = serde_json::json!({"emergencyStop": {
            "requestedAt": "2026-11-25T12:00:00Z", "clearedAt": "2026-11-25T12:05:00Z"}});
        assert!(stopped(&bot(false, cleared)).is_none());
    }

    #[test]
    fn keys_follow_the_layout_and_sort_by_time() {
        let t: Timestamp = "2026-03-29T01:02:03.456Z".parse().unwrap();
        assert_eq!(
            object_key("/prod/bots/", "trading", "btc", t),
            "prod/bots/trading/btc/20260329T010203.456Z.tar.gz"
        );
        assert_eq!(
            object_key("", "trading", "btc", t),
            "trading/btc/20260329T010203.456Z.tar.gz"
        );
        let later: Timestamp = "2026-03-29T01:02:03.457Z".parse().unwrap();
        assert!(object_key("p", "n", "b", later) > object_key("p", "n", "b", t));
    }
}
