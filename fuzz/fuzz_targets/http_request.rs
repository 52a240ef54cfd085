//! The v2 HTTP API from arbitrary bytes, at two depths.
//!
//! 1. The decoding layer alone (`form`, `keys_request`, `url`): the input's request line
//!    and body are decoded as the client port decodes them. Checked: a form keeps the
//!    *first* value of each name (against a model of Go's `url.ParseQuery`), a cleaned
//!    key is absolute, has no empty or dot segments and cleans to itself, validation is
//!    deterministic and never changes the key it was given, and member URLs that parse
//!    print back to themselves.
//! 2. The whole request: the input is written as raw bytes on an in-memory connection to
//!    the real hyper client port (`api::handle`) of a one-member cluster over the real
//!    v2 store (commands apply at once). Every answer must be a well-formed HTTP/1.1
//!    response; a keys answer with a JSON content type must be JSON; and a `PUT` answered
//!    `"action":"set"` must read back (`GET` of the returned key gives the returned value
//!    and index). Time is tokio's paused clock, so watches that never fire end at once.
//!
//! Seeds are plain HTTP requests (fuzz/corpus/http_request/); a finding is replayed as a
//! unit test beside the code it breaks (raft-kv/src/server/).
#![no_main]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use parking_lot::Mutex;
use raft_kv::node::StateMachine;
use raft_kv::server::api;
use raft_kv::server::config::Config;
use raft_kv::server::datadir::Identity;
use raft_kv::server::form::{percent_decode, Form};
use raft_kv::server::id::{ClusterId, MemberId};
use raft_kv::server::keys_request::{clean_key, parse_keys_request};
use raft_kv::server::keyspace::{new_store, StoreKeySpace, StoreStateMachine};
use raft_kv::server::member::{BoxFuture, Consensus, ConsensusError, ConsensusStatus, Member};
use raft_kv::server::membership::Membership;
use raft_kv::server::url::MemberUrl;
use raft_kv::store::{Event, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-member consensus over the real store: a proposal applies at once.
struct Direct {
    sm: Mutex<StoreStateMachine>,
    membership: Mutex<Membership>,
    commit: AtomicU64,
}

const ME: MemberId = MemberId(0x8aa7_2386_741a_849f);

impl Consensus for Direct {
    type Response = Result<Event, StoreError>;
    fn propose(&self, command: Vec<u8>) -> BoxFuture<'_, Result<Self::Response, ConsensusError>> {
        Box::pin(async move {
            let index = self.commit.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(self.sm.lock().apply(index, &command))
        })
    }
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), ConsensusError>> {
        Box::pin(async { Ok(()) })
    }
    fn add_member(
        &self,
        id: MemberId,
        urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>> {
        Box::pin(async move {
            self.membership
                .lock()
                .apply_add(id, urls)
                .map_err(|e| ConsensusError::Dropped(e.message))
        })
    }
    fn update_member(
        &self,
        id: MemberId,
        urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>> {
        Box::pin(async move {
            self.membership
                .lock()
                .apply_update(id, urls)
                .map_err(|e| ConsensusError::Dropped(e.message))
        })
    }
    fn remove_member(&self, id: MemberId) -> BoxFuture<'_, Result<(), ConsensusError>> {
        Box::pin(async move {
            self.membership
                .lock()
                .apply_remove(id)
                .map_err(|e| ConsensusError::Dropped(e.message))
        })
    }
    fn publish_attributes(
        &self,
        name: String,
        urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>> {
        Box::pin(async move {
            self.membership.lock().apply_attributes(ME, name, urls);
            Ok(())
        })
    }
    fn status(&self) -> ConsensusStatus {
        let commit = self.commit.load(Ordering::SeqCst);
        ConsensusStatus {
            leader: Some(ME),
            term: 2,
            commit,
            applied: commit,
        }
    }
    fn membership(&self) -> Membership {
        self.membership.lock().clone()
    }
    fn started_and_connected(&self) -> usize {
        1
    }
}

type FuzzMember = Member<Direct, StoreKeySpace>;

fn member() -> Arc<FuzzMember> {
    let client = MemberUrl::parse("http://127.0.0.1:2379").expect("client URL");
    let peer = MemberUrl::parse("http://127.0.0.1:2380").expect("peer URL");
    let config = Config::single("m1", "/nonexistent".into(), client, peer);
    let (sm, keys) = new_store();
    let consensus = Arc::new(Direct {
        sm: Mutex::new(sm),
        membership: Mutex::new(Membership::bootstrap([(
            ME,
            "m1".to_string(),
            vec!["http://127.0.0.1:2380".to_string()],
        )])),
        commit: AtomicU64::new(1),
    });
    let identity = Identity {
        member_id: ME,
        cluster_id: ClusterId(0x7f29_080d_bb68_8dc6),
    };
    Arc::new(Member::new(config, identity, consensus, keys))
}

/// Go's `url.ParseQuery` as a model: the first value of `name`, `None` if absent.
/// Only called on text the form accepted.
fn model_first(encoded: &[&str], name: &str) -> Option<String> {
    for text in encoded {
        for part in text.split('&').filter(|p| !p.is_empty()) {
            let (n, v) = part.split_once('=').unwrap_or((part, ""));
            if percent_decode(n, true).ok()?.as_str() == name {
                return percent_decode(v, true).ok();
            }
        }
    }
    None
}

/// Layer 1: decoding and validation, as `api::route` and `api::keys` do it.
fn decode_layer(input: &str) {
    let (head, body) = input.split_once("\r\n\r\n").unwrap_or((input, ""));
    let line = head.lines().next().unwrap_or("");
    let mut words = line.split(' ');
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    // Member URLs (the members API's peerURLs): whatever parses prints back the same.
    for candidate in [target, body] {
        if let Ok(url) = MemberUrl::parse(candidate) {
            let again = MemberUrl::parse(url.as_str()).expect("a parsed URL reparses");
            assert_eq!(again, url);
            assert!(matches!(url.scheme(), "http" | "https" | "unix" | "unixs"));
        }
        let _ = MemberUrl::parse_list(candidate);
    }

    let Ok(decoded) = percent_decode(path, false) else {
        return;
    };
    let raw_key = decoded.strip_prefix("/v2/keys").unwrap_or(&decoded);
    let key = clean_key(raw_key);
    assert!(key.starts_with('/'), "{key:?}");
    assert_eq!(clean_key(&key), key, "clean_key is idempotent");
    assert!(key == "/" || !key.ends_with('/'), "{key:?}");
    assert!(
        !key.contains("//") && !key.contains("/./") && !key.ends_with("/."),
        "{key:?}"
    );

    let mut form = Form::new();
    let mut accepted: Vec<&str> = Vec::new();
    for part in [body, query] {
        if form.append_encoded(part).is_err() {
            return;
        }
        accepted.push(part);
    }
    // Every name the input mentions: the form's first value is the model's.
    for text in &accepted {
        for part in text.split('&') {
            let name = part.split_once('=').map_or(part, |(n, _)| n);
            if let Ok(name) = percent_decode(name, true) {
                assert_eq!(
                    form.first(&name).map(str::to_string),
                    model_first(&accepted, &name),
                    "{name:?}"
                );
                assert_eq!(form.has(&name), form.first(&name).is_some());
            }
        }
    }
    for method in [method, "GET", "HEAD", "PUT", "POST", "DELETE"] {
        let first = parse_keys_request(method, raw_key, &form);
        assert_eq!(
            first,
            parse_keys_request(method, raw_key, &form),
            "deterministic"
        );
        if let Ok(request) = first {
            let got = match &request {
                raft_kv::server::keys_request::KeysRequest::Get { key, .. }
                | raft_kv::server::keys_request::KeysRequest::Watch { key, .. }
                | raft_kv::server::keys_request::KeysRequest::Post { key, .. }
                | raft_kv::server::keys_request::KeysRequest::Delete { key, .. } => key,
                raft_kv::server::keys_request::KeysRequest::Put(put) => &put.key,
            };
            assert_eq!(got, &key);
        }
    }
}

/// The status code and body of the first response in `raw`, if it is complete.
fn first_response(raw: &[u8]) -> Option<(u16, String, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    // HTTP/1.0 requests are answered in HTTP/1.0.
    assert!(
        status_line.starts_with("HTTP/1.1 ") || status_line.starts_with("HTTP/1.0 "),
        "bad status line {status_line:?}"
    );
    let code: u16 = status_line.get(9..12)?.parse().expect("a numeric status");
    assert!((100..600).contains(&code), "{code}");
    let headers = head.to_ascii_lowercase();
    let body = match headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        Some(n) => rest.get(..n)?.to_string(),
        None => String::new(),
    };
    Some((code, headers, body))
}

async fn exchange(member: &Arc<FuzzMember>, request: &[u8]) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let m = member.clone();
    let service = hyper::service::service_fn(move |req| {
        let m = m.clone();
        async move { Ok::<_, Infallible>(api::handle(m, req).await) }
    });
    let conn = tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            // The client half-closes after writing: answer what was read.
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service)
            .await;
    });
    let mut out = Vec::new();
    let io = async {
        client.write_all(request).await?;
        client.shutdown().await?;
        client.read_to_end(&mut out).await
    };
    // A watch never ends on its own: the paused clock makes this timeout immediate.
    let _ = tokio::time::timeout(Duration::from_secs(30), io).await;
    conn.abort();
    out
}

fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Layer 2: the whole request against a member.
fn whole_request(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let member = member();
        member.publish_attributes().await;
        let raw = exchange(&member, data).await;
        let Some((code, headers, body)) = first_response(&raw) else {
            return;
        };
        let is_json = headers.contains("content-type: application/json");
        // A HEAD answer has a Content-Length but no body.
        if !is_json || body.is_empty() || data.starts_with(b"HEAD ") {
            return;
        }
        let value: serde_json::Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => panic!("status {code}: JSON body does not parse ({e}): {body:?}"),
        };
        // Only a lone request: a pipelined one after the PUT may change the key.
        let answers = String::from_utf8_lossy(&raw).matches("HTTP/1.").count();
        let is_put = data.starts_with(b"PUT ") && answers == 1;
        if !(is_put && (code == 200 || code == 201) && value["action"] == "set") {
            return;
        }
        let node = &value["node"];
        let (Some(key), Some(index)) = (node["key"].as_str(), node["modifiedIndex"].as_u64())
        else {
            return;
        };
        if node["dir"] == true {
            return;
        }
        let get = format!(
            "GET /v2/keys{} HTTP/1.1\r\nHost: x\r\n\r\n",
            encode_key(key)
        );
        let raw = exchange(&member, get.as_bytes()).await;
        let (code, _, body) = first_response(&raw).expect("a GET of a key just set answers");
        assert_eq!(code, 200, "GET {key} after set: {body}");
        let read: serde_json::Value = serde_json::from_str(&body).expect("GET answers JSON");
        assert_eq!(read["node"]["value"], node["value"], "{key}");
        assert_eq!(read["node"]["modifiedIndex"].as_u64(), Some(index), "{key}");
    });
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    decode_layer(&String::from_utf8_lossy(data));
    whole_request(data);
});
