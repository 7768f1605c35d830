//! Taking one bot's backup: the bot's consistent snapshot (`POST /api/v1/backup`,
//! SQLite online backup plus manifest, as `tar.gz`) streamed straight into an S3
//! multipart upload.
//!
//! Why streamed: a trade database can be large, and the operator runs with little
//! memory and a read-only root file system. Only one part (a few MiB) is held at a
//! time; the sha256 is computed on the fly. Why multipart: an upload that fails or
//! runs past its deadline is aborted, and one interrupted by an operator restart stays
//! an incomplete upload, which S3 never lists as an object, so a partial archive can
//! never be mistaken for a backup. The sha256 is only known at the end, so it is
//! written into the object's metadata by a server-side copy onto itself right after
//! the upload completes (S3 cannot change metadata in place).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::BytesMut;
use http::Method;
use http_body_util::BodyExt;
use iq720_crds::backup_schedule::BackupRecord;
use iq720_crds::{BackupSchedule, TradingBot};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use tokio::time::{Instant, timeout_at};
use tracing::{info, warn};

use super::BackupSettings;
use super::error::BackupError;
use crate::botlink::BotRef;
use crate::botlink::endpoint::{self, PodLookup};
use crate::botlink::token;
use crate::shared::context::Context;

pub use super::s3::{
    MANAGED_BY, META_BOT, META_MANAGED_BY, META_NAMESPACE, META_SCHEDULE, META_SHA256, S3Target,
    connect,
};

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

/// An archive stored in S3.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Size in bytes.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `body` into `key` with a multipart upload, finishing by `deadline`.
/// Any failure (or the deadline) aborts the upload, so no object is left.
pub async fn stream_to_s3(
    s3: &S3Target,
    key: &str,
    metadata: &HashMap<String, String>,
    body: hyper::body::Incoming,
    part_size: usize,
    deadline: Instant,
) -> Result<Uploaded, BackupError> {
    let create = timeout_at(
        deadline,
        s3.client
            .create_multipart_upload()
            .bucket(&s3.bucket)
            .key(key)
            .content_type("application/gzip")
            .set_metadata(Some(metadata.clone()))
            .send(),
    )
    .await
    .map_err(|_| BackupError::Deadline(Duration::ZERO))?
    .map_err(|e| BackupError::s3("CreateMultipartUpload", &e))?;
    let upload_id = create.upload_id().unwrap_or_default().to_string();
    let result =
        match timeout_at(deadline, upload_parts(s3, key, &upload_id, body, part_size)).await {
            Ok(r) => r,
            Err(_) => Err(BackupError::Deadline(Duration::ZERO)),
        };
    match result {
        Ok((parts, uploaded)) => {
            let done = timeout_at(
                deadline,
                s3.client
                    .complete_multipart_upload()
                    .bucket(&s3.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send(),
            )
            .await;
            match done {
                Ok(Ok(_)) => Ok(uploaded),
                Ok(Err(e)) => {
                    let err = BackupError::s3("CompleteMultipartUpload", &e);
                    abort(s3, key, &upload_id).await;
                    Err(err)
                }
                Err(_) => {
                    abort(s3, key, &upload_id).await;
                    Err(BackupError::Deadline(Duration::ZERO))
                }
            }
        }
        Err(e) => {
            abort(s3, key, &upload_id).await;
            Err(e)
        }
    }
}

/// Aborts a multipart upload; a failure is logged (S3 lifecycle rules for incomplete
/// uploads clean up what an abort cannot reach).
async fn abort(s3: &S3Target, key: &str, upload_id: &str) {
    let call = s3
        .client
        .abort_multipart_upload()
        .bucket(&s3.bucket)
        .key(key)
        .upload_id(upload_id)
        .send();
    match tokio::time::timeout(Duration::from_secs(30), call).await {
        Ok(Ok(_)) => info!(key, "aborted the multipart upload"),
        Ok(Err(e)) => {
            warn!(key, error = %BackupError::s3("AbortMultipartUpload", &e), "cannot abort the multipart upload")
        }
        Err(_) => warn!(key, "aborting the multipart upload timed out"),
    }
}

async fn upload_parts(
    s3: &S3Target,
    key: &str,
    upload_id: &str,
    mut body: hyper::body::Incoming,
    part_size: usize,
) -> Result<(Vec<CompletedPart>, Uploaded), BackupError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = BytesMut::with_capacity(part_size);
    let mut parts = Vec::new();
    let mut finished = false;
    while !finished {
        match body.frame().await {
            None => finished = true,
            Some(Err(e)) => {
                return Err(BackupError::Bot(
                    crate::botlink::client::BotApiError::Unreachable(format!(
                        "backup stream broke after {size} bytes: {e}"
                    )),
                ));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    hasher.update(&data);
                    size += data.len() as u64;
                    buf.extend_from_slice(&data);
                }
            }
        }
        // The last part may be smaller than the minimum; every other is `part_size`.
        while buf.len() >= part_size || (finished && !buf.is_empty()) {
            let take = buf.len().min(part_size);
            let chunk = buf.split_to(take).freeze();
            let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
            let out = s3
                .client
                .upload_part()
                .bucket(&s3.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| BackupError::s3("UploadPart", &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
        }
    }
    if size == 0 {
        return Err(BackupError::Bot(
            crate::botlink::client::BotApiError::Unreachable("the bot sent an empty backup".into()),
        ));
    }
    Ok((
        parts,
        Uploaded {
            size,
            sha256: hex(&hasher.finalize()),
        },
    ))
}

/// Writes the object's metadata again with its sha256 (server-side copy onto itself).
async fn set_metadata(
    s3: &S3Target,
    key: &str,
    metadata: HashMap<String, String>,
    deadline: Instant,
) -> Result<(), BackupError> {
    timeout_at(
        deadline,
        s3.client
            .copy_object()
            .bucket(&s3.bucket)
            .key(key)
            .copy_source(format!("{}/{}", s3.bucket, key))
            .metadata_directive(MetadataDirective::Replace)
            .content_type("application/gzip")
            .set_metadata(Some(metadata))
            .send(),
    )
    .await
    .map_err(|_| BackupError::Deadline(Duration::ZERO))?
    .map_err(|e| BackupError::s3("CopyObject", &e))?;
    Ok(())
}

/// Why a bot is not backed up at all (by design, not a failure), if it is not.
pub fn stopped(bot: &TradingBot) -> Option<String> {
    bot.spec.emergency_stop.then(|| {
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
    let body = ctx
        .bots
        .call_stream(
            &pod.endpoint,
            Method::POST,
            "/api/v1/backup",
            Some(head_wait),
        )
        .await?;
    let key = object_key(&s3.prefix, &ns, &name, Timestamp::now());
    let mut metadata = HashMap::from([
        (META_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (META_NAMESPACE.to_string(), ns.clone()),
        (META_BOT.to_string(), name.clone()),
        (META_SCHEDULE.to_string(), schedule.name_any()),
    ]);
    let uploaded = stream_to_s3(s3, &key, &metadata, body, settings.part_size, deadline).await?;
    metadata.insert(META_SHA256.to_string(), uploaded.sha256.clone());
    if let Err(e) = set_metadata(s3, &key, metadata, deadline).await {
        // Without its checksum the object is not a backup: remove it.
        let _ = s3
            .client
            .delete_object()
            .bucket(&s3.bucket)
            .key(&key)
            .send()
            .await;
        return Err(e);
    }
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
