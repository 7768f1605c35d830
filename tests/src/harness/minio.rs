//! A private MinIO server for one test, and a bandwidth-limited TCP relay in front of it.
//!
//! Why private: failure tests stop and restart S3 in the middle of an upload; the
//! cluster's MinIO is shared by every test and engineer and must never be stopped. This
//! one is the same pinned binary (`tests/scripts/install-minio.sh`), started the way
//! `cluster-up.sh` starts the shared one, on a free loopback port with its own data
//! directory, and can be killed and started again on the same port and data dir.
//!
//! Why a relay: on loopback an upload of a few MiB finishes in milliseconds, too fast to
//! stop MinIO "during" it deterministically. [`ThrottledRelay`] forwards client →
//! server bytes at a fixed rate (a slow link), so an upload takes seconds and the test
//! can stop MinIO while parts are in flight.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use super::cluster::repo_root;
use super::error::{HarnessError, Result};
use super::wait::poll_until;

/// Path of the pinned MinIO binary (installed into the cache when missing).
pub fn minio_binary() -> Result<PathBuf> {
    let script = repo_root().join("tests/scripts/install-minio.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| HarnessError::io(&script, e))?;
    if !out.status.success() {
        return Err(HarnessError::Cluster(format!(
            "install-minio.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| HarnessError::io("127.0.0.1:0", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("127.0.0.1:0", e))
}

/// A MinIO server owned by a test (killed on drop).
pub struct PrivateMinio {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    console_port: u16,
    /// Root user (access key id).
    pub access_key: String,
    /// Root password (secret access key).
    pub secret_key: String,
    child: Option<Child>,
}

impl PrivateMinio {
    /// Starts MinIO with data in `dir/data` (log in `dir/minio.log`) on free loopback
    /// ports and waits until it is ready.
    pub async fn start(dir: &Path) -> Result<Self> {
        let mut m = Self {
            bin: minio_binary()?,
            dir: dir.to_path_buf(),
            port: free_port()?,
            console_port: free_port()?,
            access_key: "private-minio".to_string(),
            secret_key: format!("private-{}", super::namespace::random_suffix(24)),
            child: None,
        };
        m.resume().await?;
        Ok(m)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the server process is running (started and not stopped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, like a crash or a pulled cable) and reaps it.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory and waits until
    /// it is ready.
    pub async fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| HarnessError::io(&data, e))?;
        let log_path = self.dir.join("minio.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| HarnessError::io(&log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::io(&log_path, e))?;
        let child = Command::new(&self.bin)
            .env("MINIO_ROOT_USER", &self.access_key)
            .env("MINIO_ROOT_PASSWORD", &self.secret_key)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .env("MINIO_CALLHOME_ENABLE", "off")
            .arg("server")
            .arg("--address")
            .arg(self.address())
            .arg("--console-address")
            .arg(format!("127.0.0.1:{}", self.console_port))
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HarnessError::io(&self.bin, e))?;
        self.child = Some(child);
        let addr = self.address();
        poll_until(
            "private MinIO ready",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let addr = addr.clone();
                async move {
                    match super::http::get(&addr, "/minio/health/ready").await {
                        Ok(r) if r.status == 200 => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await
    }

    /// A path-style client with the root credentials, talking to `endpoint`
    /// (the server itself, or a relay in front of it).
    pub fn client_via(&self, endpoint: &str) -> aws_sdk_s3::Client {
        let creds = Credentials::new(
            self.access_key.clone(),
            self.secret_key.clone(),
            None,
            None,
            "private-minio",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(iq720_bot::s3_client::http_client())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// A client talking to the server directly.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_via(&self.endpoint())
    }

    /// Creates `bucket`.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| HarnessError::S3(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

/// Incomplete multipart uploads (key, upload id) under `prefix`.
pub async fn multipart_uploads(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, String)>> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .map_err(|e| HarnessError::S3(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
    Ok(out
        .uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// A TCP relay on a free loopback port that forwards to `upstream`, client → server at
/// most `bytes_per_second` (server → client unthrottled). Stops when dropped.
pub struct ThrottledRelay {
    port: u16,
    forwarded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ThrottledRelay {
    /// Starts the relay.
    pub async fn start(upstream: &str, bytes_per_second: u64) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| HarnessError::io("127.0.0.1:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("127.0.0.1:0", e))?
            .port();
        let forwarded = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_string();
        let counter = forwarded.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, bytes_per_second, counter).await;
                    }
                    // Upstream down: dropping the client connection is what a dead
                    // server behind a load balancer looks like.
                });
            }
        });
        Ok(Self {
            port,
            forwarded,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Client → server bytes forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for ThrottledRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, rate: u64, counter: Arc<AtomicU64>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let chunk = usize::try_from((rate / 20).clamp(1024, 256 * 1024)).unwrap_or(1024);
        let mut buf = vec![0u8; chunk];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let secs = n as f64 / rate.max(1) as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    // Either side ending ends the connection (a killed server resets it).
    tokio::select! {
        () = up => {},
        () = down => {},
    }
}
