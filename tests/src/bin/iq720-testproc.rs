//! `iq720-testproc`: a tiny HTTP process for node-agent and harness tests.
//!
//! Listens on `--listen` (or `$LISTEN_ADDR`, or `$POD_IP`/`$IQ720_POD_IP` with `--port`,
//! default 8080) and serves:
//! - `GET /healthz` → 200 `ok`
//! - `GET /pid` → its process id
//! - `GET /env?name=N` → value of env var N (404 if unset)
//! - `GET /file?path=P` → contents of P (404 if missing)
//! - `POST /write?path=P` with a body → writes P (parent dirs created)
//!
//! `P` is an absolute path or `<alias>/<rest>` where `--dir <alias>=<dir>` names a
//! directory (pass mount paths this way: the node agent rewrites `alias=/mount/path`).
//! On SIGTERM it waits `--term-delay` seconds and exits 0; `--exit-after S --exit-code N`
//! makes it exit on its own (for restart tests).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "iq720-testproc")]
struct Args {
    /// Address to listen on (host:port).
    #[arg(long, env = "LISTEN_ADDR")]
    listen: Option<String>,
    /// Port used with the pod IP when --listen is not given.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Directory aliases `name=/dir` for the file endpoints.
    #[arg(long = "dir")]
    dirs: Vec<String>,
    /// Seconds to wait after SIGTERM before exiting.
    #[arg(long, env = "TERM_DELAY", default_value_t = 0)]
    term_delay: u64,
    /// Ignore SIGTERM entirely (only SIGKILL stops it).
    #[arg(long)]
    ignore_term: bool,
    /// Exit by itself after this many seconds.
    #[arg(long)]
    exit_after: Option<u64>,
    /// Exit code used with --exit-after.
    #[arg(long, default_value_t = 0)]
    exit_code: u8,
}

fn listen_addr(args: &Args) -> String {
    if let Some(l) = &args.listen {
        return l.clone();
    }
    let ip = std::env::var("POD_IP")
        .or_else(|_| std::env::var("IQ720_POD_IP"))
        .unwrap_or_else(|_| "127.0.0.1".to_string());
    format!("{ip}:{}", args.port)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(target: &str) -> (String, HashMap<String, String>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_string(), params)
}

fn resolve(dirs: &HashMap<String, PathBuf>, p: &str) -> PathBuf {
    if p.starts_with('/') {
        return PathBuf::from(p);
    }
    let (alias, rest) = p.split_once('/').unwrap_or((p, ""));
    match dirs.get(alias) {
        Some(d) if rest.is_empty() => d.clone(),
        Some(d) => d.join(rest),
        None => PathBuf::from(p),
    }
}

async fn respond(stream: &mut TcpStream, code: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

async fn handle(mut stream: TcpStream, dirs: HashMap<String, PathBuf>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return respond(&mut stream, 400, b"header too large").await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let content_length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < content_length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let (path, params) = query(&target);
    println!("{method} {target}");
    match (method.as_str(), path.as_str()) {
        ("GET", "/healthz") => respond(&mut stream, 200, b"ok").await,
        ("GET", "/pid") => {
            respond(&mut stream, 200, std::process::id().to_string().as_bytes()).await
        }
        ("GET", "/env") => match params.get("name").and_then(|n| std::env::var(n).ok()) {
            Some(v) => respond(&mut stream, 200, v.as_bytes()).await,
            None => respond(&mut stream, 404, b"unset").await,
        },
        ("GET", "/file") => {
            let p = resolve(
                &dirs,
                params.get("path").map(String::as_str).unwrap_or_default(),
            );
            match tokio::fs::read(&p).await {
                Ok(data) => respond(&mut stream, 200, &data).await,
                Err(e) => {
                    respond(&mut stream, 404, format!("{}: {e}", p.display()).as_bytes()).await
                }
            }
        }
        ("POST", "/write") => {
            let p = resolve(
                &dirs,
                params.get("path").map(String::as_str).unwrap_or_default(),
            );
            if let Some(parent) = p.parent() {
                let _ = tokio::fs::create_dir_all(parent).await;
            }
            match tokio::fs::write(&p, &body).await {
                Ok(()) => respond(&mut stream, 200, b"written").await,
                Err(e) => {
                    respond(&mut stream, 500, format!("{}: {e}", p.display()).as_bytes()).await
                }
            }
        }
        _ => respond(&mut stream, 404, b"not found").await,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let dirs: HashMap<String, PathBuf> = args
        .dirs
        .iter()
        .filter_map(|d| d.split_once('='))
        .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
        .collect();
    let addr = listen_addr(&args);
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "iq720-testproc pid {} listening on {addr} dirs {dirs:?}",
        std::process::id()
    );
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        eprintln!("cannot install SIGTERM handler");
        return std::process::ExitCode::from(2);
    };
    let exit_after = async {
        match args.exit_after {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exit_after);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let dirs = dirs.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, dirs).await {
                            eprintln!("request failed: {e}");
                        }
                    });
                }
            }
            _ = term.recv() => {
                if args.ignore_term {
                    println!("SIGTERM received, ignoring");
                    continue;
                }
                println!("SIGTERM received, exiting in {}s", args.term_delay);
                tokio::time::sleep(Duration::from_secs(args.term_delay)).await;
                return std::process::ExitCode::SUCCESS;
            }
            _ = &mut exit_after => {
                println!("exiting with {}", args.exit_code);
                return std::process::ExitCode::from(args.exit_code);
            }
        }
    }
}
