//! Typed v2 API responses, as parsed by the client.
//!
//! These types are the client's own (they do not depend on the store or raft code):
//! they accept whatever an etcd v2 server emits — fields in any order, absent fields
//! meaning empty/zero, unknown fields ignored — so the client also works against real
//! etcd 2.x/3.x servers.
//!
//! Wire format of a keys response body (§3–4 of the v2 spec):
//!
//! ```text
//! {"action":"set",
//!  "node":{"key":"/k","value":"v","dir":true,"expiration":"2026-11-26T17:15:08.96Z",
//!          "ttl":5,"nodes":[...],"modifiedIndex":7,"createdIndex":7},
//!  "prevNode":{...}}
//! ```
//!
//! plus the headers `X-Etcd-Index`, `X-Raft-Index`, `X-Raft-Term`, `X-Etcd-Cluster-Id`
//! ([`ResponseMeta`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The action of a keys response or watch event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// A read.
    Get,
    /// A `set` (create or replace).
    Set,
    /// A create (`prevExist=false` or an in-order POST).
    Create,
    /// An update (`prevExist=true`).
    Update,
    /// A compare-and-swap.
    CompareAndSwap,
    /// A delete.
    Delete,
    /// A compare-and-delete.
    CompareAndDelete,
    /// A TTL expiry (only in watch events).
    Expire,
    /// An action this client does not know, kept verbatim.
    Other(String),
}

impl Action {
    /// The action as spelled on the wire (`compareAndSwap`, …).
    pub fn as_str(&self) -> &str {
        match self {
            Action::Get => "get",
            Action::Set => "set",
            Action::Create => "create",
            Action::Update => "update",
            Action::CompareAndSwap => "compareAndSwap",
            Action::Delete => "delete",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
            Action::Other(s) => s,
        }
    }

    /// Parses a wire action; unknown names become [`Action::Other`].
    pub fn parse(s: &str) -> Action {
        match s {
            "get" => Action::Get,
            "set" => Action::Set,
            "create" => Action::Create,
            "update" => Action::Update,
            "compareAndSwap" => Action::CompareAndSwap,
            "delete" => Action::Delete,
            "compareAndDelete" => Action::CompareAndDelete,
            "expire" => Action::Expire,
            other => Action::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Action::parse(&s))
    }
}

/// A node of the key space: a file (with a value) or a directory (with children).
///
/// Invariant kept by servers, not enforced here: `dir` nodes have no `value`; `nodes`
/// is only filled for directory listings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// The absolute key (`""` for the root directory).
    #[serde(default)]
    pub key: String,
    /// The value of a file; `None` for directories and for the node of delete/expire events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether the node is a directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    /// Children of a listed directory (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    /// Expiration time (RFC 3339, UTC) of a node with a TTL, as sent by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// Remaining time to live in whole seconds (rounded up), for TTL nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// The etcd index of the last write to this node (0 for the root).
    #[serde(default)]
    pub modified_index: u64,
    /// The etcd index of the write that created this node (0 for the root).
    #[serde(default)]
    pub created_index: u64,
}

impl Node {
    /// The value, or `""` for directories and value-less nodes.
    pub fn value_str(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }
}

/// The cluster headers of a response (absent headers are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    /// `X-Etcd-Index`: the etcd index at response time (for a write, the write's index;
    /// for a watch, the index when the watch was registered).
    pub etcd_index: Option<u64>,
    /// `X-Raft-Index`: the raft log's committed index.
    pub raft_index: Option<u64>,
    /// `X-Raft-Term`: the raft term.
    pub raft_term: Option<u64>,
    /// `X-Etcd-Cluster-Id`: the cluster ID in lower-case hex.
    pub cluster_id: Option<String>,
}

/// A successful keys API response (or watch event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysResponse {
    /// What happened.
    pub action: Action,
    /// The node (absent only with `noValueOnSuccess`).
    pub node: Option<Node>,
    /// The replaced/deleted node, when there was one.
    pub prev_node: Option<Node>,
    /// Headers.
    pub meta: ResponseMeta,
    /// The HTTP status (200 or 201).
    pub status: u16,
}

impl KeysResponse {
    /// The node, or an empty one when the server sent none.
    pub fn node_or_default(&self) -> Node {
        self.node.clone().unwrap_or_default()
    }
}

/// The JSON body of a keys response, before headers are attached.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeysBody {
    pub action: Action,
    #[serde(default)]
    pub node: Option<Node>,
    #[serde(default)]
    pub prev_node: Option<Node>,
}

/// A cluster member as listed by `/v2/members`.
///
/// Wire format: `{"id":"<hex>","name":"…","peerURLs":[…],"clientURLs":[…]}`; a member
/// that was added but has not started has `name:""` and `clientURLs:[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member ID in lower-case hex without padding (as the server spells it).
    #[serde(default)]
    pub id: String,
    /// The member's name (`""` until it has started).
    #[serde(default)]
    pub name: String,
    /// Peer URLs.
    #[serde(default, rename = "peerURLs", deserialize_with = "null_as_empty")]
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until it has started and published them).
    #[serde(default, rename = "clientURLs", deserialize_with = "null_as_empty")]
    pub client_urls: Vec<String>,
}

impl Member {
    /// Whether the member was added but has not started (no name published yet).
    pub fn is_unstarted(&self) -> bool {
        self.name.is_empty()
    }

    /// The numeric member ID, when `id` is valid hex.
    pub fn id_u64(&self) -> Option<u64> {
        u64::from_str_radix(&self.id, 16).ok()
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
pub(crate) struct MemberCollection {
    #[serde(default)]
    pub members: Option<Vec<Member>>,
}

/// `GET /version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The server's version (`3.4.23`).
    #[serde(default)]
    pub etcdserver: String,
    /// The agreed cluster version (`3.4.0`, or `not_decided`).
    #[serde(default)]
    pub etcdcluster: String,
}

/// `GET /health`, as etcdctl reads it: `{"health":"true"}` or `{"health":true}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Whether the member reported itself healthy.
    pub healthy: bool,
}

impl Health {
    /// Parses a health body leniently like etcdctl: a JSON object whose `health` field
    /// (any letter case) is the string `"true"` or the boolean `true` means healthy; any
    /// other JSON object means unhealthy. Non-JSON is an error (the parser's message).
    pub fn parse(body: &[u8]) -> Result<Health, String> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let obj = value
            .as_object()
            .ok_or_else(|| "json: cannot unmarshal health result into an object".to_string())?;
        let field = obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("health"))
            .map(|(_, v)| v);
        let healthy = match field {
            Some(serde_json::Value::String(s)) => s == "true",
            Some(serde_json::Value::Bool(b)) => *b,
            _ => false,
        };
        Ok(Health { healthy })
    }
}

/// Leader information inside [`SelfStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderInfo {
    /// The leader's member ID (hex).
    #[serde(default)]
    pub leader: String,
    /// How long this member has known the leader (Go duration text).
    #[serde(default)]
    pub uptime: String,
    /// When the leadership began (RFC 3339).
    #[serde(default)]
    pub start_time: String,
}

/// `GET /v2/stats/self`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfStats {
    /// Member name.
    #[serde(default)]
    pub name: String,
    /// Member ID (hex).
    #[serde(default)]
    pub id: String,
    /// `StateLeader` or `StateFollower`.
    #[serde(default)]
    pub state: String,
    /// Start time (RFC 3339).
    #[serde(default)]
    pub start_time: String,
    /// Leader information.
    #[serde(default)]
    pub leader_info: LeaderInfo,
    /// Append requests received.
    #[serde(default)]
    pub recv_append_request_cnt: u64,
    /// Append requests sent.
    #[serde(default)]
    pub send_append_request_cnt: u64,
    /// Receive rate (packets/s), when non-zero.
    #[serde(default)]
    pub recv_pkg_rate: Option<f64>,
    /// Receive bandwidth (bytes/s), when non-zero.
    #[serde(default)]
    pub recv_bandwidth_rate: Option<f64>,
    /// Send rate (packets/s), when non-zero.
    #[serde(default)]
    pub send_pkg_rate: Option<f64>,
    /// Send bandwidth (bytes/s), when non-zero.
    #[serde(default)]
    pub send_bandwidth_rate: Option<f64>,
}

/// Latency figures of one follower in [`LeaderStats`] (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowerLatency {
    /// Last measured.
    #[serde(default)]
    pub current: f64,
    /// Mean.
    #[serde(default)]
    pub average: f64,
    /// Standard deviation.
    #[serde(default)]
    pub standard_deviation: f64,
    /// Minimum.
    #[serde(default)]
    pub minimum: f64,
    /// Maximum.
    #[serde(default)]
    pub maximum: f64,
}

/// Success/failure counts of one follower in [`LeaderStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerCounts {
    /// Failed appends.
    #[serde(default)]
    pub fail: u64,
    /// Successful appends.
    #[serde(default)]
    pub success: u64,
}

/// One follower in [`LeaderStats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FollowerStats {
    /// Latency.
    #[serde(default)]
    pub latency: FollowerLatency,
    /// Counts.
    #[serde(default)]
    pub counts: FollowerCounts,
}

/// `GET /v2/stats/leader` (served by the leader only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaderStats {
    /// The leader's member ID.
    #[serde(default)]
    pub leader: String,
    /// Followers by member ID.
    #[serde(default)]
    pub followers: std::collections::BTreeMap<String, FollowerStats>,
}

/// `GET /v2/stats/store`: per-member operation counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)] // reason: the fields are the server's counter names, one per operation outcome.
pub struct StoreStats {
    #[serde(default)]
    pub gets_success: u64,
    #[serde(default)]
    pub gets_fail: u64,
    #[serde(default)]
    pub sets_success: u64,
    #[serde(default)]
    pub sets_fail: u64,
    #[serde(default)]
    pub delete_success: u64,
    #[serde(default)]
    pub delete_fail: u64,
    #[serde(default)]
    pub update_success: u64,
    #[serde(default)]
    pub update_fail: u64,
    #[serde(default)]
    pub create_success: u64,
    #[serde(default)]
    pub create_fail: u64,
    #[serde(default)]
    pub compare_and_swap_success: u64,
    #[serde(default)]
    pub compare_and_swap_fail: u64,
    #[serde(default)]
    pub compare_and_delete_success: u64,
    #[serde(default)]
    pub compare_and_delete_fail: u64,
    #[serde(default)]
    pub expire_count: u64,
    #[serde(default)]
    pub watchers: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_parses_all_fields_and_defaults() {
        let n: Node = serde_json::from_str(
            r#"{"key":"/k","value":"v","expiration":"2026-11-26T17:15:08.96402784Z","ttl":5,"modifiedIndex":7,"createdIndex":6,"future":1}"#,
        )
        .unwrap();
        assert_eq!(n.key, "/k");
        assert_eq!(n.value.as_deref(), Some("v"));
        assert!(!n.dir);
        assert_eq!(n.ttl, Some(5));
        assert_eq!(
            n.expiration.as_deref(),
            Some("2026-11-26T17:15:08.96402784Z")
        );
        assert_eq!((n.modified_index, n.created_index), (7, 6));
        let root: Node = serde_json::from_str(r#"{"dir":true}"#).unwrap();
        assert_eq!(root.key, "");
        assert!(root.dir && root.nodes.is_empty() && root.value.is_none());
    }

    #[test]
    fn member_parses_unstarted_and_null_lists() {
        let m: Member = serde_json::from_str(
            r#"{"id":"9fbcb430c28c28bb","name":"","peerURLs":["http://127.0.0.1:22485"],"clientURLs":null}"#,
        )
        .unwrap();
        assert!(m.is_unstarted());
        assert!(m.client_urls.is_empty());
        assert_eq!(m.id_u64(), Some(0x9fbc_b430_c28c_28bb));
    }

    #[test]
    fn health_accepts_string_and_bool() {
        assert!(Health::parse(br#"{"health":"true"}"#).unwrap().healthy);
        assert!(Health::parse(br#"{"health":true}"#).unwrap().healthy);
        assert!(Health::parse(br#"{"Health":"true"}"#).unwrap().healthy);
        assert!(!Health::parse(b"{\"health\":\"false\"}\n").unwrap().healthy);
        assert!(!Health::parse(br#"{}"#).unwrap().healthy);
        assert!(Health::parse(b"404 page not found\n").is_err());
    }

    #[test]
    fn actions_round_trip() {
        for s in [
            "get",
            "set",
            "create",
            "update",
            "compareAndSwap",
            "delete",
            "compareAndDelete",
            "expire",
            "weird",
        ] {
            assert_eq!(Action::parse(s).as_str(), s);
        }
    }

    #[test]
    fn stats_parse() {
        let s: StoreStats = serde_json::from_str(
            r#"{"getsSuccess":3,"getsFail":1,"setsSuccess":2,"setsFail":0,"deleteSuccess":0,"deleteFail":0,"updateSuccess":0,"updateFail":0,"createSuccess":1,"createFail":0,"compareAndSwapSuccess":0,"compareAndSwapFail":0,"compareAndDeleteSuccess":0,"compareAndDeleteFail":0,"expireCount":0,"watchers":2}"#,
        )
        .unwrap();
        assert_eq!((s.gets_success, s.watchers, s.create_success), (3, 2, 1));
        let l: LeaderStats = serde_json::from_str(
            r#"{"leader":"a","followers":{"b":{"latency":{"current":0.5,"average":1,"standardDeviation":0,"minimum":0.1,"maximum":2},"counts":{"fail":0,"success":9}}}}"#,
        )
        .unwrap();
        assert_eq!(l.followers["b"].counts.success, 9);
        let me: SelfStats = serde_json::from_str(
            r#"{"name":"t","id":"8e9e05c52164694d","state":"StateLeader","startTime":"x","leaderInfo":{"leader":"8e9e05c52164694d","uptime":"7m19.17s","startTime":"y"},"recvAppendRequestCnt":0,"sendAppendRequestCnt":0}"#,
        )
        .unwrap();
        assert_eq!(me.leader_info.uptime, "7m19.17s");
        assert_eq!(me.recv_pkg_rate, None);
    }
}
