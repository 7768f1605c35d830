//! The S3 side of a destination: the client built from the credentials Secret and
//! the metadata keys the operator writes on every backup object. Its own module
//! because taking a backup, verifying it and pruning old ones all use it.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use iq720_crds::common::S3Location;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::error::BackupError;
use crate::shared::context::Context;

/// Object metadata key naming the writer; retention deletes only objects carrying it.
pub const META_MANAGED_BY: &str = "iq720-managed-by";
/// Value of [`META_MANAGED_BY`].
pub const MANAGED_BY: &str = "iq720-operator";
/// Object metadata key of the archive's sha256 (hex).
pub const META_SHA256: &str = "iq720-sha256";
/// Object metadata key of the bot's namespace.
pub const META_NAMESPACE: &str = "iq720-namespace";
/// Object metadata key of the bot's name.
pub const META_BOT: &str = "iq720-bot";
/// Object metadata key of the BackupSchedule that wrote it.
pub const META_SCHEDULE: &str = "iq720-backupschedule";

/// An S3 client bound to one destination.
#[derive(Debug, Clone)]
pub struct S3Target {
    /// The client (credentials inside; never printed).
    pub client: aws_sdk_s3::Client,
    /// Bucket.
    pub bucket: String,
    /// Key prefix without leading or trailing slashes (may be empty).
    pub prefix: String,
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let text = String::from_utf8(bytes.0.clone()).ok()?;
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Builds the S3 client of a destination from its credentials Secret.
pub async fn connect(
    ctx: &Context,
    namespace: &str,
    loc: &S3Location,
) -> Result<S3Target, BackupError> {
    let refs = &loc.credentials_secret_ref;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(&refs.name)
        .await
        .map_err(|e| BackupError::Credentials(format!("cannot read Secret {}: {e}", refs.name)))?
        .ok_or_else(|| BackupError::Credentials(format!("Secret {} not found", refs.name)))?;
    let missing = |key: &str| {
        BackupError::Credentials(format!("Secret {} has no non-empty key {key}", refs.name))
    };
    let access = secret_value(&secret, &refs.access_key_id_key)
        .ok_or_else(|| missing(&refs.access_key_id_key))?;
    let secret_key = secret_value(&secret, &refs.secret_access_key_key)
        .ok_or_else(|| missing(&refs.secret_access_key_key))?;
    let creds = Credentials::new(access, secret_key, None, None, "iq720-backupschedule");
    let mut conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(loc.region.clone()))
        .credentials_provider(creds)
        .force_path_style(loc.force_path_style)
        // Part checksums would have to be repeated in CompleteMultipartUpload; the
        // archive carries its own sha256, checked by verification.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    if let Some(endpoint) = &loc.endpoint {
        conf = conf.endpoint_url(endpoint);
    }
    Ok(S3Target {
        client: aws_sdk_s3::Client::from_conf(conf.build()),
        bucket: loc.bucket.clone(),
        prefix: loc
            .prefix
            .as_deref()
            .unwrap_or_default()
            .trim_matches('/')
            .to_string(),
    })
}
