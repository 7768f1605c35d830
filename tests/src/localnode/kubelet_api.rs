//! A minimal kubelet API (HTTPS on 127.0.0.1) so that `kubectl logs` works: the
//! apiserver proxies `GET /containerLogs/{ns}/{pod}/{container}` to the node's
//! `daemonEndpoints.kubeletEndpoint`. Supports `follow`, `tailLines`, `limitBytes`.
//! There is no client authentication: it listens on loopback only. The serving
//! certificate is self-signed (made with the `openssl` CLI; the apiserver does not
//! verify kubelet certificates unless given `--kubelet-certificate-authority`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::error::{NodeError, Result};

/// Makes (once) a self-signed serving certificate under `dir`; returns (cert, key).
pub fn ensure_certificate(dir: &Path, node_name: &str) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join("kubelet.crt");
    let key = dir.join("kubelet.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, e))?;
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={node_name}")])
        .args([
            "-addext",
            &format!("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{node_name}"),
        ])
        .output()
        .map_err(|e| NodeError::io("openssl", e))?;
    if !out.status.success() {
        return Err(NodeError::Spec(format!(
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok((cert, key))
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let bad = |e: String| NodeError::Spec(format!("kubelet TLS: {e}"));
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A parsed `/containerLogs` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Keep streaming new output.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// At most this many bytes.
    pub limit_bytes: Option<usize>,
}

/// Parses `/containerLogs/{ns}/{pod}/{container}?query`.
pub fn parse_log_request(target: &str) -> Option<LogRequest> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut parts = path.strip_prefix("/containerLogs/")?.split('/');
    let (namespace, pod, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || namespace.is_empty() || pod.is_empty() || container.is_empty() {
        return None;
    }
    let q: HashMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    Some(LogRequest {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        follow: q.get("follow").is_some_and(|v| *v == "true" || *v == "1"),
        tail_lines: q.get("tailLines").and_then(|v| v.parse().ok()),
        limit_bytes: q.get("limitBytes").and_then(|v| v.parse().ok()),
    })
}

/// The last `n` lines of `data`.
pub fn tail(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &data[data.len()..];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    match body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
    {
        Some((i, _)) => &data[i + 1..],
        None => data,
    }
}

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, code: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if code == 200 { "OK" } else { "Error" },
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.shutdown().await
}

async fn serve_logs<S: AsyncWrite + Unpin>(
    s: &mut S,
    req: &LogRequest,
    client: &Client,
    state_dir: &Path,
) -> std::io::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &req.namespace);
    let uid = match pods.get_opt(&req.pod).await {
        Ok(Some(p)) => p.metadata.uid.unwrap_or_default(),
        _ => return respond(s, 404, b"pod not found").await,
    };
    let pod_dir = state_dir.join("pods").join(&uid);
    let log = pod_dir.join("logs").join(format!("{}.log", req.container));
    let Ok(data) = tokio::fs::read(&log).await else {
        return respond(
            s,
            404,
            format!("no logs for container {:?}", req.container).as_bytes(),
        )
        .await;
    };
    let mut chunk = req.tail_lines.map_or(&data[..], |n| tail(&data, n));
    if let Some(limit) = req.limit_bytes {
        chunk = &chunk[..chunk.len().min(limit)];
    }
    if !req.follow {
        return respond(s, 200, chunk).await;
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        .await?;
    s.write_all(chunk).await?;
    s.flush().await?;
    let mut offset = data.len() as u64;
    let pid_file = pod_dir.join("pids").join(&req.container);
    let mut idle_without_process = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut f = tokio::fs::File::open(&log).await?;
        let len = f.metadata().await?.len();
        if len > offset {
            use tokio::io::AsyncSeekExt;
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut buf = Vec::with_capacity((len - offset) as usize);
            (&mut f).take(len - offset).read_to_end(&mut buf).await?;
            offset += buf.len() as u64;
            s.write_all(&buf).await?;
            s.flush().await?;
        }
        if pid_file.exists() {
            idle_without_process = 0;
        } else {
            idle_without_process += 1;
            if idle_without_process >= 8 {
                return s.shutdown().await;
            }
        }
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    client: Client,
    state_dir: PathBuf,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        first.next().unwrap_or_default(),
        first.next().unwrap_or_default(),
    );
    tracing::debug!(%method, %target, "kubelet API request");
    if method != "GET" {
        return respond(&mut s, 405, b"method not allowed").await;
    }
    if target == "/healthz" {
        return respond(&mut s, 200, b"ok").await;
    }
    match parse_log_request(target) {
        Some(req) => serve_logs(&mut s, &req, &client, &state_dir).await,
        None => respond(&mut s, 404, b"not supported by iq720-localnode").await,
    }
}

/// Binds the kubelet API listener on 127.0.0.1 (`port` 0 picks a free one).
pub async fn bind(port: u16) -> Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| NodeError::io(format!("127.0.0.1:{port}"), e))
}

/// Serves the kubelet API on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    cert: PathBuf,
    key: PathBuf,
    client: Client,
    state_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let acceptor = match acceptor(&cert, &key) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "kubelet API disabled");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let acceptor = acceptor.clone();
        let (client, state_dir) = (client.clone(), state_dir.clone());
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(tls) => {
                    if let Err(e) = handle(tls, client, state_dir).await {
                        tracing::debug!(error = %e, "kubelet API connection failed");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "kubelet API TLS handshake failed"),
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_requests() {
        let r = parse_log_request("/containerLogs/ns1/bot-0/bot?follow=true&tailLines=5").unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.container.as_str()),
            ("ns1", "bot-0", "bot")
        );
        assert!(r.follow);
        assert_eq!(r.tail_lines, Some(5));
        assert!(parse_log_request("/containerLogs/ns1/bot-0").is_none());
        assert!(parse_log_request("/exec/ns1/bot-0/bot").is_none());
    }

    #[test]
    fn tails_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\n", 5), b"a\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
        assert_eq!(tail(b"", 3), b"");
    }
}
