//! A streamed upload: any HTTP body (a bot's backup or archive stream) into an S3
//! multipart upload, sha256 computed on the fly.
//!
//! Why a bounded pipeline: sending one part and reading the next only after it is
//! stored leaves the link idle half the time. Up to [`PARTS_IN_FLIGHT`] parts are
//! uploaded on their own tasks while the next one is read; the part buffers are
//! allocated once and reused (taken back from the SDK when its request is done), so
//! memory stays at `(PARTS_IN_FLIGHT + 1) x part size` whatever the object's size.
//!
//! Why multipart: an upload that fails or runs past its deadline is aborted, and one
//! interrupted by an operator restart stays an incomplete upload, which S3 never lists
//! as an object, so a partial archive can never be mistaken for a complete one. The
//! sha256 goes into the object's metadata: when the source announces it up front (the
//! bot hashes an archive as it writes it) it is set when the upload starts, and the
//! upload completes only if the bytes sent have that hash; otherwise it is known only
//! at the end and [`write_metadata`] records it by a server-side copy of the object
//! onto itself (S3 cannot change metadata in place), which rewrites the whole object.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};
use tracing::{info, warn};

use super::{META_SHA256, S3Error, S3Target};

/// Parts uploaded at the same time while the next one is read.
pub const PARTS_IN_FLIGHT: usize = 4;

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

/// Streams `body` into `key` and records its sha256 in the object's metadata
/// ([`META_SHA256`]), finishing by `deadline`. `announced`: the sha256 the source
/// announced for the body; set when the upload starts, and the upload completes only
/// if the bytes sent match it. Without it the metadata is written afterwards with
/// [`write_metadata`]. Any failure leaves no object.
#[allow(clippy::too_many_arguments)]
pub async fn store_with_sha256<B>(
    s3: &S3Target,
    key: &str,
    content_type: &str,
    metadata: HashMap<String, String>,
    body: B,
    part_size: usize,
    announced: Option<&str>,
    deadline: Instant,
) -> Result<Uploaded, S3Error>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut metadata = metadata;
    if let Some(sha) = announced {
        metadata.insert(META_SHA256.to_string(), sha.to_string());
        return stream_to_s3(
            s3,
            key,
            content_type,
            &metadata,
            body,
            part_size,
            announced,
            deadline,
        )
        .await;
    }
    let uploaded = stream_to_s3(
        s3,
        key,
        content_type,
        &metadata,
        body,
        part_size,
        None,
        deadline,
    )
    .await?;
    metadata.insert(META_SHA256.to_string(), uploaded.sha256.clone());
    if let Err(e) = write_metadata(s3, key, content_type, metadata, deadline).await {
        // Without its checksum the object is not complete: remove it.
        let _ = s3
            .client
            .delete_object()
            .bucket(&s3.bucket)
            .key(key)
            .send()
            .await;
        return Err(e);
    }
    Ok(uploaded)
}

/// Streams `body` into `key` with a multipart upload, finishing by `deadline`.
/// `expect_sha256`: the upload completes only if the body has this sha256. Any
/// failure (or the deadline, or a different sha256) aborts the upload, so no object
/// is left.
#[allow(clippy::too_many_arguments)]
pub async fn stream_to_s3<B>(
    s3: &S3Target,
    key: &str,
    content_type: &str,
    metadata: &HashMap<String, String>,
    body: B,
    part_size: usize,
    expect_sha256: Option<&str>,
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
    let checked = result.and_then(|(parts, uploaded)| match expect_sha256 {
        Some(want) if want != uploaded.sha256 => Err(S3Error::Source(format!(
            "the source announced sha256 {want}, the {} bytes sent have {}",
            uploaded.size, uploaded.sha256
        ))),
        _ => Ok((parts, uploaded)),
    });
    let (parts, uploaded) = match checked {
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

/// What one part's task returns: its number and ETag, and its buffer to reuse.
type PartDone = Result<(CompletedPart, Bytes), S3Error>;

/// The parts being uploaded, and the buffers they gave back.
struct Pipeline<'a> {
    s3: &'a S3Target,
    key: &'a str,
    upload_id: &'a str,
    part_size: usize,
    running: JoinSet<PartDone>,
    parts: Vec<CompletedPart>,
    spare: Vec<BytesMut>,
}

impl Pipeline<'_> {
    /// Uploads `full` as the next part on its own task, after waiting for a free slot.
    async fn send(&mut self, full: BytesMut) -> Result<(), S3Error> {
        while self.running.len() >= PARTS_IN_FLIGHT {
            self.collect_one().await?;
        }
        let number = i32::try_from(self.parts.len() + self.running.len() + 1).unwrap_or(i32::MAX);
        let part = full.freeze();
        let body = part.clone();
        let client = self.s3.client.clone();
        let (bucket, key, upload_id) = (
            self.s3.bucket.clone(),
            self.key.to_string(),
            self.upload_id.to_string(),
        );
        self.running.spawn(async move {
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| S3Error::api("UploadPart", &e))?;
            let done = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build();
            Ok((done, part))
        });
        Ok(())
    }

    /// Waits for one part to be stored and keeps its buffer for reuse.
    async fn collect_one(&mut self) -> Result<(), S3Error> {
        let Some(joined) = self.running.join_next().await else {
            return Ok(());
        };
        let (done, part) =
            joined.map_err(|e| S3Error::Source(format!("a part upload task failed: {e}")))??;
        self.parts.push(done);
        // The SDK has dropped its copy of the body: the buffer is ours again.
        if let Ok(mut buf) = part.try_into_mut() {
            buf.clear();
            self.spare.push(buf);
        }
        Ok(())
    }

    /// An empty buffer of `part_size` capacity (a reused one when there is one).
    fn buffer(&mut self) -> BytesMut {
        self.spare
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(self.part_size))
    }

    /// Waits for every part and returns them in part-number order.
    async fn finish(mut self) -> Result<Vec<CompletedPart>, S3Error> {
        while !self.running.is_empty() {
            self.collect_one().await?;
        }
        let mut parts = self.parts;
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
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
    // Dropping the pipeline (an error, the deadline) aborts the part tasks.
    let mut pipe = Pipeline {
        s3,
        key,
        upload_id,
        part_size,
        running: JoinSet::new(),
        parts: Vec::new(),
        spare: Vec::new(),
    };
    let mut buf = pipe.buffer();
    loop {
        let data = match body.frame().await {
            None => break,
            Some(Err(e)) => {
                return Err(S3Error::Source(format!(
                    "the stream broke after {size} bytes: {e}"
                )));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        hasher.update(&data);
        size += data.len() as u64;
        // Every part but the last is exactly `part_size` (S3's minimum is 5 MiB).
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = (part_size - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if buf.len() == part_size {
                pipe.send(buf).await?;
                buf = pipe.buffer();
            }
        }
    }
    if size == 0 {
        return Err(S3Error::Source("the stream was empty".into()));
    }
    if !buf.is_empty() {
        pipe.send(buf).await?;
    }
    let parts = pipe.finish().await?;
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
