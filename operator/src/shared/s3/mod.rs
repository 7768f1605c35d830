//! The S3 side of a destination: the client built from the credentials Secret, the
//! metadata keys the operator writes on every object it stores, the streamed upload
//! and the checked download.
//!
//! Why shared: backups (BackupSchedule) and trade-history archives written before a
//! prune (MaintenanceWindow) go to S3 the same way, with the same guarantees (never
//! held whole in memory, aborted on failure so no partial object is ever listed,
//! sha256 in the object metadata). Neither controller imports the other; both use this.

mod download;
mod upload;

pub use download::download_to_file;
pub use upload::{PARTS_IN_FLIGHT, Uploaded, store_with_sha256, stream_to_s3, write_metadata};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use iq720_crds::common::S3Location;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::shared::context::Context;

/// Why an S3 operation failed. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The S3 credentials Secret is missing or lacks a key.
    #[error("S3 credentials: {0}")]
    Credentials(String),
    /// An S3 call failed (unreachable, access denied, no such bucket...).
    #[error("S3 {operation}: {message}")]
    Api {
        /// The S3 operation.
        operation: &'static str,
        /// What S3 (or the connection) said.
        message: String,
    },
    /// The operation did not finish by its deadline.
    #[error("the S3 transfer did not finish by its deadline")]
    Deadline,
    /// The stream being uploaded broke or was empty.
    #[error("source stream: {0}")]
    Source(String),
    /// Local file I/O (downloads) failed.
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
}

impl S3Error {
    /// An S3 error from an SDK error, with its code and message but no request
    /// details (the SDK's error display never includes the secret key).
    pub fn api<E>(operation: &'static str, e: &aws_sdk_s3::error::SdkError<E>) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        let message = match (e.code(), e.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_string(),
            _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        };
        S3Error::Api { operation, message }
    }
}

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
/// Object metadata key of the BackupSchedule (or MaintenanceWindow) that wrote it.
pub const META_SCHEDULE: &str = "iq720-backupschedule";
/// Object metadata key of the MaintenanceWindow whose task wrote an archive.
pub const META_WINDOW: &str = "iq720-maintenancewindow";
/// Object metadata key of the number of rows (or files) an archive holds.
pub const META_ROWS: &str = "iq720-rows";
/// Folder under `<prefix>/<namespace>/<bot>/` of the archives written before a
/// maintenance deletion (BackupSchedule retention never lists it: it deletes only the
/// backup keys it recorded).
pub const ARCHIVE_DIR: &str = "archive";

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
) -> Result<S3Target, S3Error> {
    let refs = &loc.credentials_secret_ref;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(&refs.name)
        .await
        .map_err(|e| S3Error::Credentials(format!("cannot read Secret {}: {e}", refs.name)))?
        .ok_or_else(|| S3Error::Credentials(format!("Secret {} not found", refs.name)))?;
    let missing = |key: &str| {
        S3Error::Credentials(format!("Secret {} has no non-empty key {key}", refs.name))
    };
    let access = secret_value(&secret, &refs.access_key_id_key)
        .ok_or_else(|| missing(&refs.access_key_id_key))?;
    let secret_key = secret_value(&secret, &refs.secret_access_key_key)
        .ok_or_else(|| missing(&refs.secret_access_key_key))?;
    let creds = Credentials::new(access, secret_key, None, None, "iq720-operator");
    let mut conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(iq720_bot::s3_client::http_client())
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
