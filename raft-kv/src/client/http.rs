//! The HTTP layer of the v2 client: request values, the [`Transport`] seam, its `ureq`
//! implementation, and the URL/form encoders that make our requests byte-identical to
//! the ones etcd's Go client sends.
//!
//! Why byte-identical: `etcdctl --debug` prints every request as a `curl` command, and
//! operators diff those lines; servers also see the same query strings whichever client
//! they talk to. The rules, taken from Go's `net/url`:
//!
//! * Paths are first cleaned like Go's `path.Clean` (collapse `//`, drop `.`, resolve
//!   `..`), keeping a trailing slash (etcd's `CanonicalURLPath`), then percent-encoded
//!   byte by byte, leaving `A-Z a-z 0-9 - _ . ~ $ & + , / : ; = @` as they are.
//! * Query strings and form bodies are `url.Values.Encode()`: keys sorted, every byte
//!   except `A-Z a-z 0-9 - _ . ~` percent-encoded, a space becomes `+`.
//!
//! The transport is a trait so that the failover logic above it can be tested with canned
//! responses ([`Transport`] implementations must be `Send + Sync`). A transport returns
//! every HTTP status as a response (4xx and 5xx included); only a failure to obtain a
//! response at all is a [`TransportError`], whose text mimics Go's `net` errors
//! (`dial tcp 127.0.0.1:1: connect: connection refused`) because etcdctl prints it.

use std::fmt;
use std::io::Read;
use std::net::ToSocketAddrs;
use std::time::Duration;

/// The largest response body the client accepts (a recursive get of a huge tree is the
/// only legitimate large answer); anything larger is treated as a broken endpoint.
pub const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// An HTTP method used by the v2 API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `PUT`
    Put,
    /// `POST`
    Post,
    /// `DELETE`
    Delete,
}

impl Method {
    /// The method's name as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A request body with its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The `Content-Type` header value.
    pub content_type: &'static str,
    /// The encoded body.
    pub bytes: Vec<u8>,
}

/// One HTTP request, independent of the endpoint it is sent to.
///
/// `path` is already cleaned and percent-encoded and `query` already encoded (see the
/// module documentation); the endpoint's own path, if any, is prepended by
/// [`HttpRequest::url_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The unencoded path below the endpoint (e.g. `/v2/keys/a b`), before cleaning.
    pub path: String,
    /// The encoded query string without `?` (empty for none).
    pub query: String,
    /// The body, if any. `Some` with empty bytes is an empty body (`-d ""` in curl form).
    pub body: Option<Body>,
    /// A long-poll (`wait=true`): the per-request timeout does not apply.
    pub wait: bool,
}

impl HttpRequest {
    /// A request without body.
    pub fn new(method: Method, path: impl Into<String>, query: String) -> HttpRequest {
        HttpRequest {
            method,
            path: path.into(),
            query,
            body: None,
            wait: false,
        }
    }

    /// The full URL of this request on `endpoint` (`scheme://host:port[/base]`).
    pub fn url_for(&self, endpoint: &str) -> String {
        let (origin, base) = split_origin(endpoint);
        let path = escape_path(&canonical_url_path(&format!("{base}{}", self.path)));
        if self.query.is_empty() {
            format!("{origin}{path}")
        } else {
            format!("{origin}{path}?{}", self.query)
        }
    }

    /// The request as the `curl` command etcd's Go client prints in debug mode:
    /// `curl -X PUT http://h:p/v2/keys/a -d "value=1"`.
    pub fn curl_command(&self, endpoint: &str) -> String {
        let mut command = format!(
            "curl -X {} {}",
            self.method.as_str(),
            self.url_for(endpoint)
        );
        if let Some(body) = &self.body {
            command.push_str(" -d ");
            command.push_str(&go_quote(&String::from_utf8_lossy(&body.bytes)));
        }
        command
    }
}

/// An HTTP response: status, headers (names as received) and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer already decoded).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What kind of failure a [`TransportError`] is; decides whether a request may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// No connection could be made (refused, unreachable, DNS): nothing was sent, so any
    /// request, even a non-idempotent one, may be sent to another endpoint.
    Connect,
    /// The request's deadline passed before a complete response arrived.
    Timeout,
    /// The connection broke after the request may have been sent.
    Io,
    /// The peer answered something that is not HTTP/1.1 (or the URL was unusable).
    Protocol,
}

/// A failure to get any HTTP response from one endpoint.
///
/// Its text follows Go's `net` errors, because etcdctl prints it verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
}

impl TransportError {
    /// A transport error of `kind` with Go-style `message`.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> TransportError {
        TransportError {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether the failure happened before anything was sent.
    pub fn is_connect(&self) -> bool {
        self.kind == TransportErrorKind::Connect
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}

/// Sends one request to one endpoint. The seam under the client's failover logic.
pub trait Transport: Send + Sync {
    /// Sends `request` to `endpoint` (`scheme://host:port`) and returns the complete
    /// response, whatever its status. `timeout` bounds the whole exchange (connect,
    /// headers, body); `None` means no limit.
    fn round_trip(
        &self,
        endpoint: &str,
        request: &HttpRequest,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, TransportError>;
}

/// The production [`Transport`]: a pooled, keep-alive `ureq` agent.
#[derive(Debug, Clone)]
pub struct UreqTransport {
    agent: ureq::Agent,
}

impl Default for UreqTransport {
    fn default() -> Self {
        UreqTransport::new()
    }
}

impl UreqTransport {
    /// A transport with its own connection pool. Redirects are not followed: etcd only
    /// redirects non-canonical paths, which this client never sends.
    pub fn new() -> UreqTransport {
        UreqTransport {
            agent: ureq::AgentBuilder::new().redirects(0).build(),
        }
    }
}

impl Transport for UreqTransport {
    fn round_trip(
        &self,
        endpoint: &str,
        request: &HttpRequest,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, TransportError> {
        let started = std::time::Instant::now();
        let url = request.url_for(endpoint);
        let mut req = self.agent.request(request.method.as_str(), &url);
        if let Some(t) = timeout {
            // ureq rejects a zero timeout as "no time left"; keep a minimal positive one.
            req = req.timeout(t.max(Duration::from_millis(1)));
        }
        let result = match &request.body {
            Some(body) => req
                .set("Content-Type", body.content_type)
                .send_bytes(&body.bytes),
            None => req.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(map_ureq_error(&url, &t)),
        };
        let status = response.status();
        let headers = response
            .headers_names()
            .into_iter()
            .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut body = Vec::new();
        let mut reader = response.into_reader().take(MAX_RESPONSE_BYTES + 1);
        if let Err(e) = reader.read_to_end(&mut body) {
            return Err(map_io_error(&url, "read", &e));
        }
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                format!("response body from {url} exceeds {MAX_RESPONSE_BYTES} bytes"),
            ));
        }
        // A response completed after the deadline is a timeout, as in Go (socket
        // timeouts alone let a late or sub-millisecond-deadline answer through).
        if timeout.is_some_and(|t| started.elapsed() > t) {
            return Err(TransportError::new(
                TransportErrorKind::Timeout,
                format!("{url}: deadline exceeded"),
            ));
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// The `host:port` Go would print in a dial error for `url`: an IP literal as written,
/// a host name resolved to its first address when possible.
fn dial_address(url: &str) -> String {
    let (origin, _) = split_origin(url);
    let (scheme, authority) = match origin.split_once("://") {
        Some((s, a)) => (s, a),
        None => ("http", origin),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let host_port = if has_port {
        authority.to_string()
    } else if scheme == "https" {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port.as_str(), |(h, _)| h);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<std::net::IpAddr>().is_ok() {
        return host_port;
    }
    match host_port.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().map_or(host_port.clone(), |a| a.to_string()),
        Err(_) => host_port,
    }
}

/// Go's text for an OS error (its `syscall.Errno` strings are lower-case, without the
/// "(os error N)" suffix Rust adds).
fn go_errno_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset by peer".into(),
        K::ConnectionAborted => "software caused connection abort".into(),
        K::BrokenPipe => "broken pipe".into(),
        K::TimedOut | K::WouldBlock => "i/o timeout".into(),
        K::AddrNotAvailable => "cannot assign requested address".into(),
        K::UnexpectedEof => "EOF".into(),
        _ => {
            let text = e.to_string();
            let text = match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
                None => text,
            }
        }
    }
}

fn map_io_error(url: &str, op: &str, e: &std::io::Error) -> TransportError {
    use std::io::ErrorKind as K;
    let kind = match e.kind() {
        K::TimedOut | K::WouldBlock => TransportErrorKind::Timeout,
        _ => TransportErrorKind::Io,
    };
    if e.kind() == K::UnexpectedEof {
        return TransportError::new(kind, "EOF");
    }
    TransportError::new(
        kind,
        format!("{op} tcp {}: {op}: {}", dial_address(url), go_errno_text(e)),
    )
}

fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

fn map_ureq_error(url: &str, t: &ureq::Transport) -> TransportError {
    use ureq::ErrorKind as U;
    let io = std::error::Error::source(t).and_then(io_source);
    match t.kind() {
        U::Dns => {
            let (origin, _) = split_origin(url);
            let host = origin
                .split_once("://")
                .map_or(origin, |(_, a)| a)
                .rsplit_once(':')
                .map_or(origin, |(h, _)| h);
            TransportError::new(
                TransportErrorKind::Connect,
                format!("dial tcp: lookup {host}: no such host"),
            )
        }
        U::ConnectionFailed => match io {
            Some(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("dial tcp {}: i/o timeout", dial_address(url)),
                )
            }
            Some(e) => TransportError::new(
                TransportErrorKind::Connect,
                format!(
                    "dial tcp {}: connect: {}",
                    dial_address(url),
                    go_errno_text(e)
                ),
            ),
            None => TransportError::new(
                TransportErrorKind::Connect,
                format!("dial tcp {}: {}", dial_address(url), t),
            ),
        },
        U::Io => match io {
            Some(e) => map_io_error(url, "read", e),
            None => TransportError::new(TransportErrorKind::Io, t.to_string()),
        },
        U::InvalidUrl | U::UnknownScheme => TransportError::new(
            TransportErrorKind::Connect,
            format!("invalid URL {url}: {t}"),
        ),
        _ => match io {
            Some(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                map_io_error(url, "read", e)
            }
            _ => TransportError::new(
                TransportErrorKind::Protocol,
                format!("malformed HTTP response from {url}: {t}"),
            ),
        },
    }
}

/// Splits `scheme://authority/base` into (`scheme://authority`, `/base` or "").
pub(crate) fn split_origin(endpoint: &str) -> (&str, &str) {
    let start = endpoint.find("://").map_or(0, |i| i + 3);
    match endpoint[start..].find(['/', '?', '#']) {
        Some(i) => {
            let cut = start + i;
            let rest = &endpoint[cut..];
            let base = rest.split(['?', '#']).next().unwrap_or("");
            (&endpoint[..cut], base)
        }
        None => (endpoint, ""),
    }
}

/// etcd's `CanonicalURLPath`: a leading `/`, Go's `path.Clean`, and the trailing slash kept.
pub fn canonical_url_path(p: &str) -> String {
    if p.is_empty() {
        return "/".to_string();
    }
    let p = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    };
    let mut cleaned = clean_path(&p);
    if p.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    cleaned
}

/// Go's `path.Clean` for an absolute path.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in p.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Go's `url.PathEscape`-like escaping used by `URL.String()` for paths.
pub fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            push_escaped(&mut out, b);
        }
    }
    out
}

/// Go's `url.QueryEscape`: everything but `A-Z a-z 0-9 - _ . ~` escaped, space as `+`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            push_escaped(&mut out, b);
        }
    }
    out
}

/// Go's `url.Values.Encode()`: `k=v` pairs sorted by key (stable for equal keys), joined
/// with `&`.
pub fn encode_form(pairs: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Go's `%q` / `strconv.Quote`: a double-quoted string with Go escapes. etcdctl prints
/// request bodies and `ETCD_*` lines this way.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || matches!(c as u32, 0x2028 | 0x2029 | 0xfeff) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The reason phrase Go's `http.StatusText` gives a 5xx status (used in error texts).
pub(crate) fn status_text(status: u16) -> &'static str {
    match status {
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_match_go() {
        let table = [
            ("", "/"),
            ("/", "/"),
            ("/v2/keys", "/v2/keys"),
            ("/v2/keys/", "/v2/keys/"),
            ("/v2/keys//a//b", "/v2/keys/a/b"),
            ("/v2/keys/a/./b/", "/v2/keys/a/b/"),
            ("/v2/keys/a/../b", "/v2/keys/b"),
            ("/v2/keys/../../..", "/"),
            ("v2/keys/x", "/v2/keys/x"),
        ];
        for (input, want) in table {
            assert_eq!(canonical_url_path(input), want, "input {input:?}");
        }
    }

    #[test]
    fn path_escaping_matches_go() {
        assert_eq!(escape_path("/v2/keys/a b"), "/v2/keys/a%20b");
        assert_eq!(escape_path("/k?x#y%"), "/k%3Fx%23y%25");
        assert_eq!(escape_path("/a:b@c=d;e,f+g&h$i~j"), "/a:b@c=d;e,f+g&h$i~j");
        assert_eq!(escape_path("/é!*'()"), "/%C3%A9%21%2A%27%28%29");
    }

    #[test]
    fn form_encoding_sorts_and_escapes_like_url_values() {
        let form = encode_form(&[("value", "a b&c=d/é".to_string()), ("ttl", "5".to_string())]);
        assert_eq!(form, "ttl=5&value=a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode_form(&[]), "");
    }

    #[test]
    fn url_and_curl_command() {
        let mut req = HttpRequest::new(Method::Put, "/v2/keys/a/b", "prevExist=false".into());
        req.body = Some(Body {
            content_type: "application/x-www-form-urlencoded",
            bytes: b"value=1".to_vec(),
        });
        assert_eq!(
            req.curl_command("http://127.0.0.1:2379"),
            "curl -X PUT http://127.0.0.1:2379/v2/keys/a/b?prevExist=false -d \"value=1\""
        );
        let get = HttpRequest::new(Method::Get, "/v2/members", String::new());
        assert_eq!(
            get.url_for("http://h:1/prefix/"),
            "http://h:1/prefix/v2/members"
        );
        assert_eq!(
            get.curl_command("http://h:1"),
            "curl -X GET http://h:1/v2/members"
        );
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("node3"), "\"node3\"");
        assert_eq!(go_quote("a\"b\\c\n\t\u{1}"), "\"a\\\"b\\\\c\\n\\t\\x01\"");
        assert_eq!(go_quote("é"), "\"é\"");
        assert_eq!(
            go_quote("{\"peerURLs\":[\"http://x:1\"]}"),
            "\"{\\\"peerURLs\\\":[\\\"http://x:1\\\"]}\""
        );
    }

    #[test]
    fn split_origin_cases() {
        assert_eq!(split_origin("http://h:1"), ("http://h:1", ""));
        assert_eq!(split_origin("http://h:1/"), ("http://h:1", "/"));
        assert_eq!(split_origin("http://h:1/p?x"), ("http://h:1", "/p"));
        assert_eq!(split_origin("h:1"), ("h:1", ""));
    }

    #[test]
    fn dial_address_of_ip_literal() {
        assert_eq!(dial_address("http://127.0.0.1:1"), "127.0.0.1:1");
        assert_eq!(dial_address("http://[::1]:5/x"), "[::1]:5");
        assert_eq!(dial_address("http://127.0.0.1"), "127.0.0.1:80");
    }

    #[test]
    fn connection_refused_text_is_gos() {
        // Port 1 on loopback is never listening in the test environment.
        let t = UreqTransport::new();
        let req = HttpRequest::new(Method::Get, "/v2/members", String::new());
        let err = t
            .round_trip("http://127.0.0.1:1", &req, Some(Duration::from_secs(2)))
            .unwrap_err();
        assert_eq!(err.kind(), TransportErrorKind::Connect);
        assert_eq!(
            err.to_string(),
            "dial tcp 127.0.0.1:1: connect: connection refused"
        );
    }
}
