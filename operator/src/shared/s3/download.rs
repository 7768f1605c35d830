//! A checked download: an object streamed into a local file with its sha256 computed
//! on the way, so a caller can compare it with the one recorded at upload.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::upload::hex;
use super::{META_SHA256, S3Error, S3Target};

/// Streams `key` into `path`; returns the content's sha256 and the sha256 recorded in
/// the object's metadata (if any).
pub async fn download_to_file(
    s3: &S3Target,
    key: &str,
    path: &Path,
) -> Result<(String, Option<String>), S3Error> {
    let mut out = s3
        .client
        .get_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| S3Error::api("GetObject", &e))?;
    let meta_sha = out
        .metadata()
        .and_then(|m| m.get(META_SHA256))
        .map(|s| s.to_string());
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = out.body.next().await {
        let chunk = chunk.map_err(|e| S3Error::Api {
            operation: "GetObject",
            message: format!("download broke: {e}"),
        })?;
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok((hex(&hasher.finalize()), meta_sha))
}
