//! A blocking plugin client that frames requests the way Docker's `pkg/plugins` client
//! does: `POST /<Method>` over HTTP/1.1 on the unix socket, `Accept:
//! application/vnd.docker.plugins.v1.2+json`, **no** `Content-Type`, and the JSON body
//! followed by a newline (Go's `json.Encoder`), or an empty body for the no-argument
//! calls.
//!
//! It exists so tests (and `calico-libnetwork call`) can drive the plugin exactly as the
//! daemon does without a daemon. One request per connection (`Connection: close`), which
//! keeps the response reader trivial: the body runs to `Content-Length` or end of stream.
//!
//! Caveat: no chunked transfer decoding; the plugin's server always sends
//! `Content-Length` for these small bodies.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::protocol::CONTENT_TYPE;

/// One answer from the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body parsed as JSON (`Value::Null` when empty or not JSON).
    pub body: Value,
    /// The body as received.
    pub raw: String,
}

/// Sends `POST /<method>` with `body` (`None` = empty body) to the socket at `path`.
pub fn call(path: &Path, method: &str, body: Option<&Value>) -> io::Result<Answer> {
    let payload = match body {
        Some(v) => format!("{v}\n"),
        None => String::new(),
    };
    call_raw(path, method, payload.as_bytes())
}

/// Sends `POST /<method>` with exactly `payload` as the body.
pub fn call_raw(path: &Path, method: &str, payload: &[u8]) -> io::Result<Answer> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nUser-Agent: Go-http-client/1.1\r\n\
         Accept: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(payload)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&response)
}

fn bad(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_string())
}

fn parse_response(bytes: &[u8]) -> io::Result<Answer> {
    let text = String::from_utf8_lossy(bytes);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut content_type = None;
    let mut content_length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse::<usize>().ok();
            }
        }
    }
    let raw = match content_length {
        Some(n) => rest
            .get(..n)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_string(),
        None => rest.to_string(),
    };
    let body = serde_json::from_str(raw.trim()).unwrap_or(Value::Null);
    Ok(Answer {
        status,
        content_type,
        body,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_split_into_status_type_and_json() {
        let r = parse_response(
            b"HTTP/1.1 409 Conflict\r\ncontent-type: application/x\r\ncontent-length: 12\r\n\r\n{\"Err\":\"x\"}\nJUNK",
        )
        .unwrap();
        assert_eq!(r.status, 409);
        assert_eq!(r.content_type.as_deref(), Some("application/x"));
        assert_eq!(r.body, serde_json::json!({"Err": "x"}));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n{}").is_err());
    }
}
