//! A streamed upload: any HTTP body (a bot's backup or archive stream) into an S3
//! multipart upload, one part in memory at a time, sha256 computed on the fly.
//!
//! Why multipart: an upload that fails or runs past its deadline is aborted, and one
//! interrupted by an operator restart stays an incomplete upload, which S3 never lists
//! as an object, so a partial archive can never be mistaken for a complete one. The
//! sha256 is only known at the end, so [`write_metadata`] records it by a server-side
//! copy of the object onto itself (S3 cannot change metadata in place).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Body;
use sha2::{Digest, Sha256};
use tokio::time::{Instant, timeout_at};
use tracing::{info, warn};

use super::{S3Error, S3Target};

/// An object stored in S3.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Size in bytes.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
}

/// Lower-case hex of a digest.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `body` into `key` with a multipart upload, finishing by `deadline`.
/// Any failure (or the deadline) aborts the upload, so no object is left.
pub async fn stream_to_s3<B>(
    s3: &S3Target,
    key: &str,
    content_type: &str,
    metadata: &HashMap<String, String>,
    body: B,
    part_size: usize,
    deadline: Instant,
) -> Result<Uploaded, S3Error>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let create = timeout_at(
        deadline,
        s3.client
            .create_multipart_upload()
            .bucket(&s3.bucket)
            .key(key)
            .content_type(content_type)
            .set_metadata(Some(metadata.clone()))
            .send(),
    )
    .await
    .map_err(|_| S3Error::Deadline)?
    .map_err(|e| S3Error::api("CreateMultipartUpload", &e))?;
    let upload_id = create.upload_id().unwrap_or_default().to_string();
    let result =
        match timeout_at(deadline, upload_parts(s3, key, &upload_id, body, part_size)).await {
            Ok(r) => r,
            Err(_) => Err(S3Error::Deadline),
        };
    let (parts, uploaded) = match result {
        Ok(done) => done,
        Err(e) => {
            abort(s3, key, &upload_id).await;
            return Err(e);
        }
    };
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
            let err = S3Error::api("CompleteMultipartUpload", &e);
            abort(s3, key, &upload_id).await;
            Err(err)
        }
        Err(_) => {
            abort(s3, key, &upload_id).await;
            Err(S3Error::Deadline)
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
            warn!(key, error = %S3Error::api("AbortMultipartUpload", &e), "cannot abort the multipart upload")
        }
        Err(_) => warn!(key, "aborting the multipart upload timed out"),
    }
}

async fn upload_parts<B>(
    s3: &S3Target,
    key: &str,
    upload_id: &str,
    mut body: B,
    part_size: usize,
) -> Result<(Vec<CompletedPart>, Uploaded), S3Error>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = BytesMut::with_capacity(part_size);
    let mut parts = Vec::new();
    let mut finished = false;
    while !finished {
        match body.frame().await {
            None => finished = true,
            Some(Err(e)) => {
                return Err(S3Error::Source(format!(
                    "the stream broke after {size} bytes: {e}"
                )));
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
                .map_err(|e| S3Error::api("UploadPart", &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
        }
    }
    if size == 0 {
        return Err(S3Error::Source("the stream was empty".into()));
    }
    Ok((
        parts,
        Uploaded {
            size,
            sha256: hex(&hasher.finalize()),
        },
    ))
}

/// Writes the object's metadata again (for example with its sha256) by a server-side
/// copy onto itself.
pub async fn write_metadata(
    s3: &S3Target,
    key: &str,
    content_type: &str,
    metadata: HashMap<String, String>,
    deadline: Instant,
) -> Result<(), S3Error> {
    timeout_at(
        deadline,
        s3.client
            .copy_object()
            .bucket(&s3.bucket)
            .key(key)
            .copy_source(format!("{}/{}", s3.bucket, key))
            .metadata_directive(MetadataDirective::Replace)
            .content_type(content_type)
            .set_metadata(Some(metadata))
            .send(),
    )
    .await
    .map_err(|_| S3Error::Deadline)?
    .map_err(|e| S3Error::api("CopyObject", &e))?;
    Ok(())
}
