//! A minimal HTTP/1.1 client for the workload: one request per connection, explicit
//! timeouts, and a precise account of *how* a request failed, because that decides
//! whether a write's outcome is known ("refused before sending": it did not happen) or
//! unknown (sent, no answer: it may have happened).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How a request ended.
#[derive(Debug)]
pub enum HttpResult {
    /// A complete answer.
    Answer {
        /// HTTP status.
        status: u16,
        /// `X-Etcd-Index`, if present.
        etcd_index: Option<u64>,
        /// The body (chunked encoding removed).
        body: String,
    },
    /// The connection could not be made: the request never left.
    NotSent(String),
    /// Sent (or partly sent), but no complete answer.
    NoAnswer(String),
}

/// Percent-encodes a form value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends one request to `127.0.0.1:port`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    form: Option<&str>,
    timeout: Duration,
) -> HttpResult {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(s) => s,
        Err(e) => return HttpResult::NotSent(e.to_string()),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_nodelay(true);
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    match form {
        Some(body) => text.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None => text.push_str("\r\n"),
    }
    if let Err(e) = stream.write_all(text.as_bytes()) {
        return HttpResult::NoAnswer(format!("send: {e}"));
    }
    match read_response(stream) {
        Ok((status, etcd_index, body)) => HttpResult::Answer {
            status,
            etcd_index,
            body,
        },
        Err(e) => HttpResult::NoAnswer(e),
    }
}

fn read_response(stream: TcpStream) -> Result<(u16, Option<u64>, String), String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("status line: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut etcd_index = None;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("header: {e}"))?;
        if line.is_empty() {
            return Err("connection closed in headers".into());
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "x-etcd-index" => etcd_index = value.parse().ok(),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("chunk size: {e}"))?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader
                .read_exact(&mut chunk)
                .map_err(|e| format!("chunk: {e}"))?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("body: {e}"))?;
    } else {
        reader
            .read_to_end(&mut body)
            .map_err(|e| format!("body: {e}"))?;
    }
    Ok((
        status,
        etcd_index,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}
