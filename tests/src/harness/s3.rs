//! S3 (MinIO) client from the cluster's env file, with small helpers.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

use super::cluster::Cluster;
use super::error::{HarnessError, Result};

fn s3_err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::S3(e.to_string())
}

/// A path-style S3 client for the cluster's MinIO (static credentials).
pub fn s3_client(cluster: &Cluster) -> Result<aws_sdk_s3::Client> {
    let env = &cluster.env;
    let creds = Credentials::new(
        env.var("IQ720_S3_ACCESS_KEY")?,
        env.var("IQ720_S3_SECRET_KEY")?,
        None,
        None,
        "iq720-tests",
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(iq720_bot::s3_client::http_client())
        .region(Region::new(
            env.var("IQ720_S3_REGION")
                .unwrap_or("us-east-1")
                .to_string(),
        ))
        .endpoint_url(env.var("IQ720_S3_ENDPOINT")?)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(conf))
}

/// The test bucket's name.
pub fn s3_bucket(cluster: &Cluster) -> Result<String> {
    cluster.env.var("IQ720_S3_BUCKET").map(str::to_string)
}

/// Uploads `data` to `bucket/key`.
pub async fn put_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    data: Vec<u8>,
) -> Result<()> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| s3_err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(())
}

/// Downloads `bucket/key`.
pub async fn get_object(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| s3_err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let bytes = out.body.collect().await.map_err(s3_err)?;
    Ok(bytes.into_bytes().to_vec())
}

/// Lists every key under `prefix` (all pages).
pub async fn list_keys(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.clone())
            .send()
            .await
            .map_err(|e| s3_err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        match out.next_continuation_token() {
            Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(keys)
}

/// Deletes `bucket/key`.
pub async fn delete_object(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<()> {
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| s3_err(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    Ok(())
}
