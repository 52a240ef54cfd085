//! The HTTP layer and the member's request flow, end to end over a real socket, against
//! the one-member test doubles of [`super::member::testing`]. Each case is one behaviour
//! of spec/etcd-v2.md, checked as a client sees it (status, headers, body).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::api::serve_clients;
use super::config::Config;
use super::datadir::Identity;
use super::id::{ClusterId, MemberId};
use super::member::testing::{FlatKeySpace, LocalConsensus};
use super::member::Member;
use super::url::MemberUrl;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Harness {
    addr: std::net::SocketAddr,
    consensus: Arc<LocalConsensus>,
    _stop: watch::Sender<bool>,
}

async fn start() -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = MemberUrl::parse(&format!("http://{addr}")).unwrap();
    let peer = MemberUrl::parse("http://127.0.0.1:1").unwrap();
    let config = Config::single("m1", "/nonexistent".into(), client, peer);
    let keys = Arc::new(FlatKeySpace::default());
    let consensus = Arc::new(LocalConsensus::new(
        MemberId(0x8aa72386741a849f),
        "m1",
        vec!["http://127.0.0.1:1".to_string()],
        keys.clone(),
    ));
    let identity = Identity {
        member_id: MemberId(0x8aa72386741a849f),
        cluster_id: ClusterId(0x7f29080dbb688dc6),
    };
    let member = Arc::new(Member::new(config, identity, consensus.clone(), keys));
    member.publish_attributes().await;
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(serve_clients(listener, member, shutdown));
    Harness {
        addr,
        consensus,
        _stop: stop,
    }
}

async fn request(
    h: &Harness,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        text.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn write_then_read_with_etcd_headers() {
    let h = start().await;
    let r = request(&h, "PUT", "/v2/keys/newworld", FORM, "value=Hello+Docker").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.ends_with('\n'));
    assert_eq!(r.header("X-Etcd-Cluster-Id"), Some("7f29080dbb688dc6"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.header("X-Raft-Index").is_some() && r.header("X-Raft-Term").is_some());
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    let r = request(&h, "GET", "/v2/keys/newworld", None, "").await;
    assert_eq!(r.status, 200);
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["node"]["value"], "Hello Docker");
    assert_eq!(r.header("X-Etcd-Index"), Some("1"));
    let head = request(&h, "HEAD", "/v2/keys/newworld", None, "").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    let get_length = r.header("Content-Length").map(str::to_string);
    assert_eq!(
        head.header("Content-Length").map(str::to_string),
        get_length,
        "HEAD has GET's length"
    );
    let missing = request(&h, "GET", "/v2/keys/nope?quorum=true", None, "").await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.header("X-Raft-Index").is_none(),
        "errors carry no raft headers"
    );
    assert_eq!(missing.header("X-Etcd-Index"), Some("1"));
}

#[tokio::test]
async fn body_value_wins_and_validation_errors_have_index_zero() {
    let h = start().await;
    let r = request(
        &h,
        "PUT",
        "/v2/keys/q?value=fromquery",
        FORM,
        "value=frombody",
    )
    .await;
    assert!(r.body.contains("frombody"), "{}", r.body);
    let r = request(&h, "PUT", "/v2/keys/t", FORM, "value=x&ttl=abc").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        "{\"errorCode\":202,\"message\":\"The given TTL in POST form is not a number\",\"cause\":\"invalid value for \\\"ttl\\\"\",\"index\":0}\n"
    );
    assert_eq!(r.header("X-Etcd-Index"), Some("0"));
    let r = request(&h, "PUT", "/v2/keys/t?a=%zz", FORM, "").await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("\"errorCode\":210") && r.body.contains("invalid URL escape"),
        "{}",
        r.body
    );
    // A text/plain body is ignored: the value comes from nowhere, so it is "".
    let r = request(
        &h,
        "PUT",
        "/v2/keys/plain",
        Some("text/plain"),
        "value=ignored",
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(r.body.contains("\"value\":\"\""), "{}", r.body);
}

#[tokio::test]
async fn oversized_form_body_is_error_210() {
    let h = start().await;
    let big = format!("value={}", "x".repeat(10 * 1024 * 1024 + 10));
    let r = request(&h, "PUT", "/v2/keys/big", FORM, &big).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("\"errorCode\":210") && r.body.contains("http: POST too large"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn routing_redirects_404_405_options() {
    let h = start().await;
    let r = request(&h, "GET", "/v2/keys/a//b?x=1", None, "").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/v2/keys/a/b?x=1"));
    assert_eq!(
        r.body,
        "<a href=\"/v2/keys/a/b?x=1\">Moved Permanently</a>.\n\n"
    );
    let r = request(&h, "PUT", "/v2/keys/a/%2E%2E/b", FORM, "").await;
    assert_eq!((r.status, r.header("Location")), (301, Some("/v2/keys/b")));
    for path in ["/v2/nothing", "/v2/stats", "/v2/keysx", "/v3nope"] {
        let r = request(&h, "GET", path, None, "").await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, "404 page not found\n"),
            "{path}"
        );
    }
    let table = [
        ("/v2/keys/m", "PATCH", "HEAD,GET,PUT,POST,DELETE"),
        ("/v2/stats/self", "POST", "GET"),
        ("/v2/stats/leader", "PUT", "GET"),
        ("/v2/stats/store", "DELETE", "GET"),
        ("/v2/members", "PATCH", "GET,POST,DELETE,PUT"),
        ("/v2/members", "DELETE", "GET,POST,DELETE,PUT"),
        ("/v2/machines", "POST", "GET,HEAD"),
        ("/health", "POST", "GET"),
        ("/version", "PUT", "GET"),
    ];
    for (path, method, allow) in table {
        let r = request(&h, method, path, None, "").await;
        assert_eq!(
            (r.status, r.header("Allow")),
            (405, Some(allow)),
            "{method} {path}"
        );
        assert_eq!(r.body, "Method Not Allowed\n");
    }
    let r = request(&h, "OPTIONS", "/anything", None, "").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(
        r.header("Access-Control-Allow-Methods"),
        Some("POST, GET, OPTIONS, PUT, DELETE")
    );
    let long = format!("/v2/keys/{}", "H".repeat(65536));
    let r = request(&h, "PUT", &long, FORM, "value=1").await;
    assert_eq!(r.status, 414);
}

#[tokio::test]
async fn watch_sends_headers_before_the_event() {
    let h = start().await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream
        .write_all(b"GET /v2/keys/w?wait=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut head))
        .await
        .expect("headers must arrive before any event")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(
        head.contains("X-Etcd-Index") || head.contains("x-etcd-index"),
        "{head}"
    );
    let r = request(&h, "PUT", "/v2/keys/w", FORM, "value=go").await;
    assert_eq!(r.status, 201);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("\"action\":\"set\"") && rest.contains("\"value\":\"go\""),
        "{rest}"
    );
    let invalid = request(&h, "GET", "/v2/keys/w?wait=true&waitIndex=soon", None, "").await;
    assert!(
        invalid.body.contains("\"errorCode\":203"),
        "{}",
        invalid.body
    );
}

#[tokio::test]
async fn members_api() {
    let h = start().await;
    let r = request(&h, "GET", "/v2/members", None, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        format!("{{\"members\":[{{\"id\":\"8aa72386741a849f\",\"name\":\"m1\",\"peerURLs\":[\"http://127.0.0.1:1\"],\"clientURLs\":[\"http://{}\"]}}]}}\n", h.addr)
    );
    assert_eq!(r.header("X-Etcd-Cluster-Id"), Some("7f29080dbb688dc6"));
    assert_eq!(
        request(&h, "GET", "/v2/members/", None, "").await.body,
        r.body
    );
    let leader = request(&h, "GET", "/v2/members/leader", None, "").await;
    assert!(
        leader.body.starts_with("{\"id\":\"8aa72386741a849f\"") && leader.body.ends_with("}\n")
    );
    let junk = request(&h, "GET", "/v2/members/not-a-thing", None, "").await;
    assert_eq!(
        (junk.status, junk.body.as_str()),
        (404, "{\"message\":\"Not found\"}")
    );
    let table: &[(Option<&str>, &str, u16, &str)] = &[
        (FORM, "{}", 415, "{\"message\":\"Bad Content-Type application/x-www-form-urlencoded, accept application/json\"}"),
        (None, "{}", 415, "{\"message\":\"Bad Content-Type , accept application/json\"}"),
        (JSON, "{\"peerURLs\":[]}", 400, "{\"message\":\"no valid URLs given\"}"),
        (JSON, "{}", 400, "{\"message\":\"no valid URLs given\"}"),
        (JSON, "{\"peerURLs\":[\"ftp://127.0.0.1:22489\"]}", 400, "{\"message\":\"URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:22489\"}"),
        (JSON, "{\"peerURLs\":[\"http://127.0.0.1\"]}", 400, "{\"message\":\"URL address does not have the form \\\"host:port\\\": http://127.0.0.1\"}"),
        (JSON, "{\"peerURLs\":[\"http://127.0.0.1:22489/x\"]}", 400, "{\"message\":\"URL must not contain a path: http://127.0.0.1:22489/x\"}"),
        (JSON, "{\"peerURLs\":[\"http://127.0.0.1:1\"]}", 409, "{\"message\":\"membership: peerURL exists\"}"),
    ];
    for (ct, body, status, want) in table {
        let r = request(&h, "POST", "/v2/members", *ct, body).await;
        assert_eq!((r.status, r.body.as_str()), (*status, *want), "{body}");
    }
    let bad = request(
        &h,
        "POST",
        "/v2/members",
        Some("application/json; charset=utf-8"),
        "{bad",
    )
    .await;
    assert_eq!(bad.status, 400);
    // A one-member cluster may add a second member (etcd's special case).
    let added = request(
        &h,
        "POST",
        "/v2/members",
        JSON,
        "{\"peerURLs\":[\"http://127.0.0.1:22489\"]}",
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let member: serde_json::Value = serde_json::from_str(&added.body).unwrap();
    assert_eq!(member["name"], "");
    assert_eq!(member["clientURLs"], serde_json::json!([]));
    let id = member["id"].as_str().unwrap().to_string();
    let update = request(
        &h,
        "PUT",
        &format!("/v2/members/{id}"),
        JSON,
        "{\"peerURLs\":[\"http://127.0.0.1:22488\"]}",
    )
    .await;
    assert_eq!((update.status, update.body.as_str()), (204, ""));
    let clash = request(
        &h,
        "PUT",
        &format!("/v2/members/{id}"),
        JSON,
        "{\"peerURLs\":[\"http://127.0.0.1:1\"]}",
    )
    .await;
    assert_eq!(clash.status, 409);
    let removed = request(&h, "DELETE", &format!("/v2/members/{id}"), None, "").await;
    assert_eq!((removed.status, removed.body.as_str()), (204, ""));
    let again = request(&h, "DELETE", &format!("/v2/members/{id}"), None, "").await;
    assert_eq!(
        (again.status, again.body),
        (
            410,
            format!("{{\"message\":\"Member permanently removed: {id}\"}}")
        )
    );
    let unknown = request(&h, "DELETE", "/v2/members/1234abcd", None, "").await;
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (404, "{\"message\":\"No such member: 1234abcd\"}")
    );
    let not_hex = request(&h, "DELETE", "/v2/members/not-hex", None, "").await;
    assert_eq!(
        (not_hex.status, not_hex.body.as_str()),
        (404, "{\"message\":\"No such member: not-hex\"}")
    );
}

#[tokio::test]
async fn health_version_stats_machines() {
    let h = start().await;
    let r = request(&h, "GET", "/health", None, "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "{\"health\":\"true\"}"));
    let r = request(&h, "GET", "/version", None, "").await;
    assert_eq!(
        r.body,
        "{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}"
    );
    let r = request(&h, "GET", "/v2/machines", None, "").await;
    assert_eq!(r.body, format!("http://{}", h.addr));
    let r = request(&h, "GET", "/v2/stats/self", None, "").await;
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(json["state"], "StateLeader");
    assert_eq!(json["leaderInfo"]["leader"], "8aa72386741a849f");
    let r = request(&h, "GET", "/v2/stats/leader", None, "").await;
    assert_eq!(r.body, "{\"leader\":\"8aa72386741a849f\",\"followers\":{}}");
    h.consensus.set_leaderless(true);
    let r = request(&h, "GET", "/health", None, "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "{\"health\":\"false\"}\n")
    );
    let r = request(&h, "GET", "/v2/members/leader", None, "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "{\"message\":\"During election\"}")
    );
    let r = request(&h, "GET", "/v2/stats/leader", None, "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "{\"message\":\"not current leader\"}")
    );
    // Plain reads still work without a leader.
    assert_eq!(
        request(&h, "GET", "/v2/keys/none", None, "").await.status,
        404
    );
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let h = start().await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    for i in 0..20 {
        let body = format!("value={i}");
        let text = format!(
            "PUT /v2/keys/k HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(text.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(reply.starts_with("HTTP/1.1 20"), "{reply}");
    }
}
