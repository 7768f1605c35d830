//! Test harness: spawn the real `iq720-bot` binary on a free port with temp dirs and
//! talk to it over plain HTTP/1.1.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Token every test bot accepts.
pub const TOKEN: &str = "test-token-0123456789";

/// Base config for tests: fast ticks, active strategy, loose loss limits.
pub const BASE: &str = r#"
name: test-bot
pairs: [BTC/USDT, ETH/USDT, SOL/USDT]
strategy: {name: rsi, params: {rsiPeriod: 3, rsiBuy: 40, rsiSell: 60}}
risk: {maxPositions: 3, maxPositionSize: 500, maxDrawdownPercent: 100, dailyLossLimitPercent: 100}
marketData:
  tickRate: 200
  staleAfter: 500ms
  failbackAfter: 1s
  primary: {kind: simulator, name: sim-primary, seed: 11, volatility: 0.003}
  backup: {kind: simulator, name: sim-backup, seed: 22, volatility: 0.003}
snapshotInterval: 1s
"#;

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Resp {
    /// Body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&data[..pos]).to_string();
        let size =
            usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// One HTTP request (Connection: close).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Build config YAML: `BASE` deep-merged with `overrides`.
pub fn config_yaml(overrides: &str) -> String {
    let mut base: serde_yaml::Value = serde_yaml::from_str(BASE).unwrap();
    if !overrides.trim().is_empty() {
        merge(&mut base, serde_yaml::from_str(overrides).unwrap());
    }
    serde_yaml::to_string(&base).unwrap()
}

/// A running bot.
pub struct Bot {
    /// Child process.
    pub child: Option<Child>,
    /// API port.
    pub port: u16,
    /// Root of the temp dirs (data/, logs/, tokens/, config.yaml).
    pub root: PathBuf,
    /// Extra environment for the next [`Bot::launch`]; overrides the harness defaults
    /// (e.g. `IQ720_SHUTDOWN_DRAIN`).
    pub env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Bot {
    /// Start a bot with fresh temp dirs.
    pub fn start(overrides: &str) -> Bot {
        let mut b = Bot::unstarted();
        b.launch(overrides);
        b
    }

    /// Fresh temp dirs and a token, but no process yet (seed the data dir, then
    /// [`Bot::launch`]).
    pub fn unstarted() -> Bot {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("tokens")).unwrap();
        std::fs::write(root.join("tokens/token"), format!("{TOKEN}\n")).unwrap();
        Bot {
            child: None,
            port: 0,
            root,
            env: Vec::new(),
            _tmp: Some(tmp),
        }
    }

    /// Path helpers.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    /// Log dir.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Token dir.
    pub fn token_dir(&self) -> PathBuf {
        self.root.join("tokens")
    }

    /// (Re)start the process on the same dirs with a new port.
    pub fn launch(&mut self, overrides: &str) {
        assert!(self.child.is_none(), "already running");
        self.port = free_port();
        let cfg = self.root.join("config.yaml");
        std::fs::write(&cfg, config_yaml(overrides)).unwrap();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("stdout.log"))
            .unwrap();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("stderr.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_iq720-bot"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("IQ720_LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .env("IQ720_DATA_DIR", self.data_dir())
            .env("IQ720_LOG_DIR", self.log_dir())
            .env("IQ720_TOKEN_DIR", self.token_dir())
            // No shutdown drain unless a test asks for one: `stop()` stays prompt with
            // positions open, as the tests written before the drain expect.
            .env("IQ720_SHUTDOWN_DRAIN", "0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        poll("bot answers /healthz", Duration::from_secs(20), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "bot exited early with {st}: {}",
                    std::fs::read_to_string(self.root.join("stderr.log")).unwrap_or_default()
                );
            }
            http(port, "GET", "/healthz", None, None)
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// Request with the test token.
    pub fn req(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        http(self.port, method, path, Some(TOKEN), body).unwrap()
    }
    /// GET with token, expect 200, return JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.req("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }
    /// Status document.
    pub fn status(&self) -> Value {
        self.get_json("/api/v1/status")
    }
    /// Value of an unlabelled metric, or a labelled one given `name{labels}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = http(self.port, "GET", "/metrics", None, None).ok()?.text();
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
    /// Total ticks seen by the active source (for "let time pass" waits).
    pub fn ticks(&self) -> u64 {
        let st = self.status();
        st["marketData"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["ticks"].as_u64().unwrap())
            .max()
            .unwrap()
    }
    /// Wait until at least `n` more ticks were produced.
    pub fn wait_ticks(&self, n: u64) {
        let start = self.ticks();
        poll("ticks advance", Duration::from_secs(30), || {
            (self.ticks() >= start + n).then_some(())
        });
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("bot did not stop on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Pid of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send a signal (`TERM`, `INT`, ...) with `kill(1)`; the process is not reaped.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} failed: {st}");
    }

    /// The exit status if the process has exited (reaped; `child` becomes `None`).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(st)
    }

    /// Wait up to `timeout` for the process to exit; the status and when it was seen.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(std::process::ExitStatus, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some((st, Instant::now()));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Text the bot wrote to stdout so far (its JSON log lines).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.root.join("stdout.log")).unwrap_or_default()
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run the CLI with args; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iq720-bot"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Open a database file read-only.
pub fn open_db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}
