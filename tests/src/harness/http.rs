//! A minimal HTTP/1.1 client for talking to test processes on pod IPs.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{HarnessError, Result};

/// Status code and body of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (`Connection: close`) to `addr` (`host:port`) with a 10 s timeout.
pub async fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<Response> {
    let err = |message: String| HarnessError::Http {
        addr: addr.to_string(),
        message,
    };
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| err(e.to_string()))?;
        s.write_all(body).await.map_err(|e| err(e.to_string()))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| err(e.to_string()))?;
        parse_response(&buf).ok_or_else(|| err("malformed response".to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| err("timed out".to_string()))?
}

/// `GET path`.
pub async fn get(addr: &str, path: &str) -> Result<Response> {
    request(addr, "GET", path, b"").await
}

/// Parses a complete `Content-Length` (or close-delimited) response.
pub fn parse_response(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Response {
        status,
        body: buf[end + 4..].to_vec(),
    })
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_encodes() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno").unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "no"));
        assert!(parse_response(b"HTTP/1.1 200").is_none());
        assert_eq!(encode("a b/c&d"), "a%20b/c%26d");
    }
}
