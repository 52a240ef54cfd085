//! What the store answers: events (`action`, `node`, `prevNode`) in etcd v2's JSON shape,
//! and the replicated notion of time they are rendered with.
//!
//! An [`Event`] serializes to exactly the body etcd v2 sends for a keys request or a watch
//! notification (without the trailing newline, see [`Event::to_json_line`]):
//!
//! ```json
//! {"action":"set","node":{"key":"/a","value":"1","modifiedIndex":5,"createdIndex":5},
//!  "prevNode":{"key":"/a","value":"0","modifiedIndex":4,"createdIndex":4}}
//! ```
//!
//! Node fields appear in etcd's order `key, value, dir, expiration, ttl, nodes,
//! modifiedIndex, createdIndex` and are omitted when empty: no `key` and no indexes on the
//! root, `value` only on files (also when `""`) except in delete/expire results, `dir`
//! only on directories, `nodes` only for a listing with a visible child, `expiration` only
//! with a TTL, `ttl` only while positive.
//!
//! Time: expirations are absolute [`UnixNanos`]. `ttl` is the remaining time rounded up to
//! whole seconds, computed against the clock the event was rendered with (the proposer's
//! clock carried by the applied command, or a reader's clock for GETs).

use std::fmt::Write as _;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

/// A wall-clock instant as nanoseconds since the UNIX epoch (UTC). Serializes as a `u64`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixNanos(pub u64);

impl UnixNanos {
    /// One second.
    pub const SECOND: u64 = 1_000_000_000;

    /// The system clock now (0 if the clock is before 1970).
    pub fn now() -> UnixNanos {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixNanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    /// From milliseconds since the epoch (saturating).
    pub fn from_millis(ms: u64) -> UnixNanos {
        UnixNanos(ms.saturating_mul(1_000_000))
    }

    /// This instant plus `seconds` (saturating at the largest representable instant).
    pub fn plus_seconds(self, seconds: u64) -> UnixNanos {
        UnixNanos(self.0.saturating_add(seconds.saturating_mul(Self::SECOND)))
    }

    /// etcd's TTL rendering: the time from `now` to `self` rounded up to whole seconds
    /// (`ceil`), so a fresh `ttl=5` reads 5; 0 or negative once `self` has passed.
    pub fn ttl_from(self, now: UnixNanos) -> i64 {
        let diff = i128::from(self.0) - i128::from(now.0);
        let secs = diff.div_euclid(i128::from(Self::SECOND))
            + i128::from(diff.rem_euclid(i128::from(Self::SECOND)) > 0);
        i64::try_from(secs).unwrap_or(if secs > 0 { i64::MAX } else { i64::MIN })
    }

    /// RFC 3339 in UTC with up to 9 fractional digits, trailing zeros trimmed, as Go's
    /// `time.RFC3339Nano` prints it: `2026-11-26T17:15:08.96402784Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0 / Self::SECOND;
        let nanos = self.0 % Self::SECOND;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        let mut out = String::with_capacity(30);
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        );
        if nanos != 0 {
            let frac = format!("{nanos:09}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The `action` of an event, serialized as etcd spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// A read.
    Get,
    /// A plain set (also `refresh=true` without `prevExist`).
    Set,
    /// `prevExist=false`, mkdir, and in-order (POST) creates.
    Create,
    /// `prevExist=true` without compare conditions.
    Update,
    /// A write conditioned on `prevValue` / `prevIndex`.
    CompareAndSwap,
    /// A delete.
    Delete,
    /// A delete conditioned on `prevValue` / `prevIndex`.
    CompareAndDelete,
    /// A TTL expiry (applied through a sync command).
    Expire,
    /// Not an etcd action: the result of applying a [`crate::store::Command::Sync`]. It is
    /// never sent to clients nor to watchers; the expiries it caused are `expire` events.
    Sync,
}

impl Action {
    /// etcd's spelling of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Set => "set",
            Action::Create => "create",
            Action::Update => "update",
            Action::CompareAndSwap => "compareAndSwap",
            Action::Delete => "delete",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
            Action::Sync => "sync",
        }
    }
}

/// A node as the v2 API shows it (etcd's `NodeExtern`). See the module documentation for
/// which fields are emitted when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeExtern {
    /// The cleaned key; empty only for the root.
    pub key: String,
    /// The value of a file; `None` for directories and for the `node` of delete, compare
    /// and delete, and expire events.
    pub value: Option<String>,
    /// True for directories.
    pub dir: bool,
    /// Absolute expiry time, when the node has a TTL.
    pub expiration: Option<UnixNanos>,
    /// Remaining whole seconds (rounded up) when rendered; omitted unless positive.
    pub ttl: i64,
    /// Children of a listed directory (hidden children excluded); omitted when empty.
    pub nodes: Vec<NodeExtern>,
    /// Index of the last write to the node; 0 (omitted) only on the root.
    pub modified_index: u64,
    /// Index of the write that created the node; 0 (omitted) only on the root.
    pub created_index: u64,
}

impl Serialize for NodeExtern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("NodeExtern", 8)?;
        if !self.key.is_empty() {
            s.serialize_field("key", &self.key)?;
        }
        if let Some(value) = &self.value {
            s.serialize_field("value", value)?;
        }
        if self.dir {
            s.serialize_field("dir", &true)?;
        }
        if let Some(expiration) = self.expiration {
            s.serialize_field("expiration", &expiration.to_rfc3339())?;
        }
        if self.ttl > 0 {
            s.serialize_field("ttl", &self.ttl)?;
        }
        if !self.nodes.is_empty() {
            s.serialize_field("nodes", &self.nodes)?;
        }
        if self.modified_index != 0 {
            s.serialize_field("modifiedIndex", &self.modified_index)?;
        }
        if self.created_index != 0 {
            s.serialize_field("createdIndex", &self.created_index)?;
        }
        s.end()
    }
}

/// The result of a store operation or a watch notification (etcd's `Event`).
///
/// Serializes to `{"action":…,"node":{…},"prevNode":{…}}` (`prevNode` only when present);
/// `etcd_index` is not in the body, it is the `X-Etcd-Index` header: the new index for a
/// write, the current index for a read or a history hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The node after the operation (for deletes: the key, its `dir` flag and indexes).
    pub node: NodeExtern,
    /// The node before the operation, without children, when one was replaced.
    pub prev_node: Option<NodeExtern>,
    /// The etcd index to report in `X-Etcd-Index`.
    pub etcd_index: u64,
}

impl Event {
    /// The event's own index: `node.modifiedIndex` (for a write, the index it consumed).
    pub fn index(&self) -> u64 {
        self.node.modified_index
    }

    /// The HTTP status etcd answers a successful request with: 201 for `create` and for
    /// a `set` that created the key (no `prevNode`), 200 otherwise.
    pub fn http_status(&self) -> u16 {
        match self.action {
            Action::Create => 201,
            Action::Set if self.prev_node.is_none() => 201,
            _ => 200,
        }
    }

    /// The JSON body with etcd's trailing newline.
    ///
    /// Byte for byte what `serde_json` makes of the [`Serialize`] impl, but written
    /// without recursion, so the deepest listing ([`MAX_KEY_DEPTH`] levels) needs no call
    /// stack, and without serde's per-field dispatch on this hot path.
    ///
    /// [`MAX_KEY_DEPTH`]: super::path::MAX_KEY_DEPTH
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"action\":");
        write_json_str(&mut out, self.action.as_str());
        out.extend_from_slice(b",\"node\":");
        write_node_json(&mut out, &self.node);
        if let Some(prev) = &self.prev_node {
            out.extend_from_slice(b",\"prevNode\":");
            write_node_json(&mut out, prev);
        }
        out.extend_from_slice(b"}\n");
        out
    }

    /// The body for `noValueOnSuccess=true`: `{"action":"…"}` and a newline.
    pub fn action_only_json_line(&self) -> Vec<u8> {
        format!("{{\"action\":\"{}\"}}\n", self.action.as_str()).into_bytes()
    }
}

/// Writes `node` as its [`Serialize`] impl does, depth first with an explicit stack.
fn write_node_json(out: &mut Vec<u8>, node: &NodeExtern) {
    // Each frame: a node whose `"nodes":[` is open, and how many children are written.
    let mut stack: Vec<(&NodeExtern, usize)> = Vec::new();
    let mut next = Some(node);
    loop {
        if let Some(n) = next.take() {
            // Open the node and write its fields up to `nodes`.
            out.push(b'{');
            let mut first = true;
            let mut field = |out: &mut Vec<u8>, name: &str| {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.push(b'"');
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
            };
            if !n.key.is_empty() {
                field(out, "key");
                write_json_str(out, &n.key);
            }
            if let Some(value) = &n.value {
                field(out, "value");
                write_json_str(out, value);
            }
            if n.dir {
                field(out, "dir");
                out.extend_from_slice(b"true");
            }
            if let Some(expiration) = n.expiration {
                field(out, "expiration");
                write_json_str(out, &expiration.to_rfc3339());
            }
            if n.ttl > 0 {
                field(out, "ttl");
                out.extend_from_slice(n.ttl.to_string().as_bytes());
            }
            if !n.nodes.is_empty() {
                field(out, "nodes");
                out.push(b'[');
                stack.push((n, 0));
            } else {
                write_node_tail(out, n, first);
            }
        }
        // Continue the innermost open `nodes` array, or close it and its node.
        let Some((parent, written)) = stack.last_mut() else {
            return;
        };
        if *written < parent.nodes.len() {
            if *written > 0 {
                out.push(b',');
            }
            next = Some(&parent.nodes[*written]);
            *written += 1;
        } else {
            let parent = *parent;
            stack.pop();
            out.push(b']');
            write_node_tail(out, parent, false);
        }
    }
}

/// The fields after `nodes` (the indexes) and the closing brace; `first` when no field
/// was written before.
fn write_node_tail(out: &mut Vec<u8>, n: &NodeExtern, mut first: bool) {
    for (name, value) in [
        ("modifiedIndex", n.modified_index),
        ("createdIndex", n.created_index),
    ] {
        if value != 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(value.to_string().as_bytes());
        }
    }
    out.push(b'}');
}

/// A JSON string with `serde_json`'s escapes: `"`, `\\`, and control characters
/// (`\b \f \n \r \t`, others as `\u00xx`); everything else, non-ASCII included, as is.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most keys and values need no escape: one pass without early exit (which the compiler
    // vectorizes) decides, and the string is copied whole.
    let needs_escape = bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escape {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Event", 3)?;
        s.serialize_field("action", &self.action)?;
        s.serialize_field("node", &self.node)?;
        if let Some(prev) = &self.prev_node {
            s.serialize_field("prevNode", prev)?;
        }
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_like_go() {
        assert_eq!(UnixNanos(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        // 2026-11-26T17:15:08.96402784Z
        let t = UnixNanos(1_795_713_308_964_027_840);
        assert_eq!(t.to_rfc3339(), "2026-11-26T17:15:08.96402784Z");
        assert_eq!(
            UnixNanos(951_782_400 * UnixNanos::SECOND).to_rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(UnixNanos(1).to_rfc3339(), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(
            UnixNanos(u64::MAX).to_rfc3339(),
            "2554-07-21T23:34:33.709551615Z"
        );
    }

    #[test]
    fn ttl_rounds_up() {
        let now = UnixNanos(100 * UnixNanos::SECOND);
        assert_eq!(now.plus_seconds(5).ttl_from(now), 5);
        assert_eq!(UnixNanos(now.0 + 4_000_000_001).ttl_from(now), 5);
        assert_eq!(UnixNanos(now.0 + 1).ttl_from(now), 1);
        assert_eq!(now.ttl_from(now), 0);
        assert_eq!(UnixNanos(now.0 - 1).ttl_from(now), 0);
        assert_eq!(UnixNanos(now.0 - 1_500_000_000).ttl_from(now), -1);
    }

    #[test]
    fn node_json_field_order_and_omissions() {
        let n = NodeExtern {
            key: "/a".into(),
            value: Some(String::new()),
            expiration: Some(UnixNanos(5 * UnixNanos::SECOND)),
            ttl: 3,
            modified_index: 7,
            created_index: 6,
            ..NodeExtern::default()
        };
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"key":"/a","value":"","expiration":"1970-01-01T00:00:05Z","ttl":3,"modifiedIndex":7,"createdIndex":6}"#
        );
        let root = NodeExtern {
            dir: true,
            ..NodeExtern::default()
        };
        assert_eq!(serde_json::to_string(&root).unwrap(), r#"{"dir":true}"#);
        let ev = Event {
            action: Action::CompareAndSwap,
            node: NodeExtern {
                key: "/d".into(),
                dir: true,
                modified_index: 2,
                created_index: 1,
                ..NodeExtern::default()
            },
            prev_node: None,
            etcd_index: 2,
        };
        assert_eq!(
            String::from_utf8(ev.to_json_line()).unwrap(),
            "{\"action\":\"compareAndSwap\",\"node\":{\"key\":\"/d\",\"dir\":true,\"modifiedIndex\":2,\"createdIndex\":1}}\n"
        );
        assert_eq!(
            ev.action_only_json_line(),
            b"{\"action\":\"compareAndSwap\"}\n"
        );
    }

    fn arb_node(depth: u32) -> impl proptest::strategy::Strategy<Value = NodeExtern> {
        use proptest::prelude::*;
        let leaf = (
            "[a-z/_\\\\\"\\x00-\\x1f\u{e9}\u{1F600}]{0,8}",
            proptest::option::of("\\PC{0,8}|[\\x00-\\x20\"\\\\]{0,4}"),
            any::<bool>(),
            proptest::option::of(0u64..4_000_000_000_000_000_000),
            -2i64..100,
            0u64..3,
            0u64..1_000_000,
        )
            .prop_map(|(key, value, dir, exp, ttl, m, c)| NodeExtern {
                key,
                value,
                dir,
                expiration: exp.map(UnixNanos),
                ttl,
                nodes: Vec::new(),
                modified_index: m,
                created_index: c,
            });
        leaf.prop_recursive(depth, 24, 4, |inner| {
            (inner.clone(), proptest::collection::vec(inner, 0..4)).prop_map(|(mut n, kids)| {
                n.nodes = kids;
                n
            })
        })
    }

    proptest::proptest! {
        /// The hand-written writer is byte for byte serde_json's rendering of the
        /// `Serialize` impls.
        #[test]
        fn json_line_is_serde_jsons_bytes(
            node in arb_node(4),
            prev in proptest::option::of(arb_node(1)),
            action in 0usize..9,
        ) {
            let actions = [
                Action::Get, Action::Set, Action::Create, Action::Update,
                Action::CompareAndSwap, Action::Delete, Action::CompareAndDelete,
                Action::Expire, Action::Sync,
            ];
            let ev = Event { action: actions[action], node, prev_node: prev, etcd_index: 1 };
            let mut expected = serde_json::to_vec(&ev).unwrap();
            expected.push(b'\n');
            proptest::prop_assert_eq!(
                String::from_utf8(ev.to_json_line()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
