//! S3 against the local cluster's MinIO: the harness's round trip, and the operator's
//! streamed multipart upload (parts of exactly the part size, the sha256 the source
//! announced stored as metadata, a body that differs from it leaving no object and
//! no unfinished upload).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use iq720_operator::shared::s3::{META_SHA256, S3Target, store_with_sha256};
use iq720_tests::{
    Cluster, delete_object, get_object, list_keys, put_object, s3_bucket, s3_client,
};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn put_get_list_delete_round_trip() {
    let cluster = Cluster::shared().await.expect("local cluster");
    let s3 = s3_client(&cluster).unwrap();
    let bucket = s3_bucket(&cluster).unwrap();
    let prefix = format!(
        "harness-test/{}/",
        iq720_tests::harness::namespace::random_suffix(8)
    );
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    put_object(&s3, &bucket, &format!("{prefix}a.bin"), body.clone())
        .await
        .unwrap();
    put_object(&s3, &bucket, &format!("{prefix}b.txt"), b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(
        get_object(&s3, &bucket, &format!("{prefix}a.bin"))
            .await
            .unwrap(),
        body
    );
    let mut keys = list_keys(&s3, &bucket, &prefix).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![format!("{prefix}a.bin"), format!("{prefix}b.txt")]
    );
    for k in &keys {
        delete_object(&s3, &bucket, k).await.unwrap();
    }
    assert!(list_keys(&s3, &bucket, &prefix).await.unwrap().is_empty());
    assert!(
        get_object(&s3, &bucket, &format!("{prefix}a.bin"))
            .await
            .is_err()
    );
}

const MIB: usize = 1024 * 1024;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `data` as an HTTP body in frames of an odd size, so frames straddle part borders.
fn body(
    data: &[u8],
) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Unpin> {
    let frames: Vec<_> = data
        .chunks(65_537)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    StreamBody::new(futures::stream::iter(frames))
}

async fn target(prefix: &str) -> S3Target {
    let cluster = Cluster::shared().await.expect("local cluster");
    S3Target {
        client: s3_client(&cluster).unwrap(),
        bucket: s3_bucket(&cluster).unwrap(),
        prefix: prefix.to_string(),
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn sha_metadata(s3: &S3Target, key: &str) -> (Option<String>, String) {
    let head = s3
        .client
        .head_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let meta = head.metadata().and_then(|m| m.get(META_SHA256)).cloned();
    (meta, head.e_tag().unwrap_or_default().to_string())
}

/// The operator's upload of `content` to `key` in parts of 5 MiB.
async fn store(
    s3: &S3Target,
    key: &str,
    metadata: HashMap<String, String>,
    content: &[u8],
    announced: Option<&str>,
) -> Result<iq720_operator::shared::s3::Uploaded, iq720_operator::shared::s3::S3Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    store_with_sha256(
        s3,
        key,
        "application/octet-stream",
        metadata,
        body(content),
        5 * MIB,
        announced,
        deadline,
    )
    .await
}

#[tokio::test]
async fn the_announced_sha256_is_stored_with_a_multipart_upload_of_exact_parts() {
    let prefix = format!(
        "upload-test/{}",
        iq720_tests::harness::namespace::random_suffix(8)
    );
    let s3 = target(&prefix).await;
    let content = data(13 * MIB + 123);
    let sha = hex(&Sha256::digest(&content));
    let key = format!("{prefix}/announced.bin");
    let up = store(&s3, &key, HashMap::new(), &content, Some(&sha))
        .await
        .unwrap();
    assert_eq!(
        (up.size, up.sha256.as_str()),
        (content.len() as u64, sha.as_str())
    );
    let (meta, etag) = sha_metadata(&s3, &key).await;
    assert_eq!(meta.as_deref(), Some(sha.as_str()));
    // 5 + 5 + 3 MiB: a multipart ETag ends in the number of parts.
    assert!(etag.trim_matches('"').ends_with("-3"), "ETag {etag}");
    assert_eq!(
        get_object(&s3.client, &s3.bucket, &key).await.unwrap(),
        content
    );
    delete_object(&s3.client, &s3.bucket, &key).await.unwrap();
}

#[tokio::test]
async fn a_body_that_differs_from_its_announced_sha256_leaves_no_object() {
    let prefix = format!(
        "upload-test/{}",
        iq720_tests::harness::namespace::random_suffix(8)
    );
    let s3 = target(&prefix).await;
    let content = data(11 * MIB);
    let mut announced = hex(&Sha256::digest(&content));
    announced.replace_range(0..1, if announced.starts_with('0') { "1" } else { "0" });
    let key = format!("{prefix}/corrupted.bin");
    let err = store(&s3, &key, HashMap::new(), &content, Some(&announced))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("announced sha256"), "{err}");
    assert!(
        list_keys(&s3.client, &s3.bucket, &prefix)
            .await
            .unwrap()
            .is_empty()
    );
    let uploads = s3
        .client
        .list_multipart_uploads()
        .bucket(&s3.bucket)
        .prefix(&prefix)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "the multipart upload was not aborted: {:?}",
        uploads.uploads()
    );
}

#[tokio::test]
async fn without_an_announcement_the_sha256_is_recorded_after_the_upload() {
    let prefix = format!(
        "upload-test/{}",
        iq720_tests::harness::namespace::random_suffix(8)
    );
    let s3 = target(&prefix).await;
    let content = data(6 * MIB + 1);
    let key = format!("{prefix}/unannounced.bin");
    let up = store(
        &s3,
        &key,
        HashMap::from([("iq720-bot".to_string(), "b".to_string())]),
        &content,
        None,
    )
    .await
    .unwrap();
    let sha = hex(&Sha256::digest(&content));
    assert_eq!(up.sha256, sha);
    let (meta, _) = sha_metadata(&s3, &key).await;
    assert_eq!(meta.as_deref(), Some(sha.as_str()));
    assert_eq!(
        get_object(&s3.client, &s3.bucket, &key).await.unwrap(),
        content
    );
    delete_object(&s3.client, &s3.bucket, &key).await.unwrap();
}
