//! Replicated commands: every write the store applies, as it travels in the Raft log.
//!
//! A [`Command`] carries everything its effect depends on, including the proposer's
//! wall-clock time (`now`), so applying it is a pure function of (state, command): a TTL
//! becomes the absolute expiration `now + ttl` identically on every member, and
//! [`Command::Sync`] expires exactly the keys whose expiration is `<= now`.
//!
//! The server turns an HTTP request into a command with [`PutRequest::into_command`] /
//! [`DeleteRequest::into_command`] (etcd's operation-selection table) or builds one
//! directly. Request *validation* (bad booleans, `ttl` that is not a number, `refresh` with
//! a value, ...) happens before that, in the server: those are errors with index 0 and are
//! never proposed.

use serde::{Deserialize, Serialize};

use super::error::{ErrorCode, StoreError};
use super::event::UnixNanos;

/// One replicated write (or clock tick) for the store.
///
/// # Encoding
///
/// [`Command::encode`] writes one version byte (`1`) followed by the command in bincode
/// 1.3 with `DefaultOptions` (variable-length little-endian integers: values < 251 take
/// one byte, larger ones a marker byte 251/252/253 then 2/4/8 bytes; the enum variant as
/// such an integer, in declaration order starting at 0; strings as a length then UTF-8
/// bytes; `Option` as a 0/1 byte then the value; `bool` as one byte). Fields are encoded in
/// declaration order. New variants are only ever appended, so old logs stay decodable;
/// any change to an existing variant bumps the version byte.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A plain `PUT` (etcd `set`): creates or replaces a file, or creates a directory
    /// with `dir`. With `refresh` the key must exist and keeps its value (the TTL is reset,
    /// `createdIndex` is reset too, as etcd does).
    Set {
        /// The key (cleaned by the store).
        key: String,
        /// The new value (ignored for directories and on refresh).
        value: String,
        /// Create a directory instead of a file.
        dir: bool,
        /// Seconds to live; `None` makes the node permanent.
        ttl: Option<u64>,
        /// `refresh=true`: reset the TTL, keep the value, notify no watcher.
        refresh: bool,
        /// The proposer's clock.
        now: UnixNanos,
    },
    /// `prevExist=false`: create a file or (`dir`) a directory; fails if the key exists.
    Create {
        /// The key (cleaned by the store).
        key: String,
        /// The value (ignored for directories).
        value: String,
        /// Create a directory instead of a file.
        dir: bool,
        /// Seconds to live; `None` makes the node permanent.
        ttl: Option<u64>,
        /// The proposer's clock.
        now: UnixNanos,
    },
    /// `POST` (in-order create): a child of `dir_key` named by the new index,
    /// zero-padded to 20 digits.
    CreateInOrder {
        /// The directory to create in (created if missing).
        dir_key: String,
        /// The value (ignored for directories).
        value: String,
        /// Create a directory instead of a file.
        dir: bool,
        /// Seconds to live; `None` makes the node permanent.
        ttl: Option<u64>,
        /// The proposer's clock.
        now: UnixNanos,
    },
    /// `prevExist=true` without compare conditions: the key must exist; a file gets the
    /// new value and TTL (keeping `createdIndex`), a directory only the TTL.
    Update {
        /// The key (cleaned by the store).
        key: String,
        /// The new value (must be empty for a directory; ignored on refresh).
        value: String,
        /// Seconds to live; `None` makes the node permanent.
        ttl: Option<u64>,
        /// `refresh=true`: reset the TTL, keep the value, notify no watcher.
        refresh: bool,
        /// The proposer's clock.
        now: UnixNanos,
    },
    /// A write conditioned on the current value and/or modified index of a file.
    CompareAndSwap {
        /// The key (cleaned by the store).
        key: String,
        /// The new value (ignored on refresh).
        value: String,
        /// Required current value; `None` or `Some("")` means no value condition.
        prev_value: Option<String>,
        /// Required current `modifiedIndex`; `None` or `Some(0)` means no index condition.
        prev_index: Option<u64>,
        /// Seconds to live; `None` makes the node permanent.
        ttl: Option<u64>,
        /// `refresh=true`: reset the TTL, keep the value, notify no watcher.
        refresh: bool,
        /// The proposer's clock.
        now: UnixNanos,
    },
    /// `DELETE`: a file, or a directory with `dir` (and `recursive` if it has children).
    Delete {
        /// The key (cleaned by the store).
        key: String,
        /// Allow deleting a directory.
        dir: bool,
        /// Allow deleting a non-empty directory (implies `dir`).
        recursive: bool,
        /// The proposer's clock.
        now: UnixNanos,
    },
    /// A delete of a file conditioned on its value and/or modified index.
    CompareAndDelete {
        /// The key (cleaned by the store).
        key: String,
        /// Required current value; `None` or `Some("")` means no value condition.
        prev_value: Option<String>,
        /// Required current `modifiedIndex`; `None` or `Some(0)` means no index condition.
        prev_index: Option<u64>,
        /// The proposer's clock.
        now: UnixNanos,
    },
    /// The leader's periodic clock tick: expires every node whose expiration is `<= now`,
    /// each expiry consuming one index and producing one `expire` event.
    Sync {
        /// The leader's clock.
        now: UnixNanos,
    },
}

/// The command format version written by [`Command::encode`].
pub const COMMAND_VERSION: u8 = 1;

fn bincode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

impl Command {
    /// Encodes the command for the Raft log (see the type's documentation).
    pub fn encode(&self) -> Vec<u8> {
        use bincode::Options;
        let mut out = Vec::with_capacity(64);
        out.push(COMMAND_VERSION);
        // Serializing owned strings and integers into a Vec cannot fail.
        let _ = bincode_options().serialize_into(&mut out, self);
        out
    }

    /// Decodes a command written by [`Command::encode`]. Undecodable bytes give
    /// errorCode 300 (they can only come from a corrupted or foreign log).
    pub fn decode(bytes: &[u8]) -> Result<Command, StoreError> {
        use bincode::Options;
        let corrupt = |why: String| StoreError::new(ErrorCode::RaftInternal, why, 0);
        match bytes.split_first() {
            Some((&COMMAND_VERSION, body)) => bincode_options()
                .deserialize(body)
                .map_err(|e| corrupt(format!("undecodable store command: {e}"))),
            Some((version, _)) => Err(corrupt(format!(
                "store command version {version} (expected {COMMAND_VERSION})"
            ))),
            None => Err(corrupt("empty store command".to_owned())),
        }
    }

    /// The proposer's clock carried by the command.
    pub fn now(&self) -> UnixNanos {
        match self {
            Command::Set { now, .. }
            | Command::Create { now, .. }
            | Command::CreateInOrder { now, .. }
            | Command::Update { now, .. }
            | Command::CompareAndSwap { now, .. }
            | Command::Delete { now, .. }
            | Command::CompareAndDelete { now, .. }
            | Command::Sync { now } => *now,
        }
    }

    /// `etcdctl mkdir`: `PUT ?dir=true&prevExist=false` (a permanent directory).
    pub fn mkdir(key: impl Into<String>, now: UnixNanos) -> Command {
        Command::Create {
            key: key.into(),
            value: String::new(),
            dir: true,
            ttl: None,
            now,
        }
    }

    /// A plain permanent set of a file.
    pub fn set(key: impl Into<String>, value: impl Into<String>, now: UnixNanos) -> Command {
        Command::Set {
            key: key.into(),
            value: value.into(),
            dir: false,
            ttl: None,
            refresh: false,
            now,
        }
    }
}

/// The parameters of a v2 `PUT`, after validation, from which etcd selects the operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key.
    pub key: String,
    /// `value` (default `""`).
    pub value: String,
    /// `dir=true`.
    pub dir: bool,
    /// `ttl` (`None` when absent or empty).
    pub ttl: Option<u64>,
    /// `prevExist` when given.
    pub prev_exist: Option<bool>,
    /// `prevValue` when given (the server rejects an empty one with 201 beforehand).
    pub prev_value: Option<String>,
    /// `prevIndex` when given (0 means no condition).
    pub prev_index: Option<u64>,
    /// `refresh=true`.
    pub refresh: bool,
}

impl PutRequest {
    /// etcd's operation selection (first matching row):
    ///
    /// | condition | command |
    /// |---|---|
    /// | `prevExist=true`, no `prevValue`, `prevIndex` 0/absent | [`Command::Update`] |
    /// | `prevExist=true` with `prevValue` or `prevIndex` | [`Command::CompareAndSwap`] |
    /// | `prevExist=false` | [`Command::Create`] |
    /// | `prevValue` non-empty or `prevIndex` > 0 | [`Command::CompareAndSwap`] |
    /// | otherwise | [`Command::Set`] |
    pub fn into_command(self, now: UnixNanos) -> Command {
        let prev_value = self.prev_value.filter(|v| !v.is_empty());
        let prev_index = self.prev_index.filter(|i| *i > 0);
        let conditional = prev_value.is_some() || prev_index.is_some();
        match self.prev_exist {
            Some(true) if !conditional => Command::Update {
                key: self.key,
                value: self.value,
                ttl: self.ttl,
                refresh: self.refresh,
                now,
            },
            Some(false) => Command::Create {
                key: self.key,
                value: self.value,
                dir: self.dir,
                ttl: self.ttl,
                now,
            },
            _ if conditional => Command::CompareAndSwap {
                key: self.key,
                value: self.value,
                prev_value,
                prev_index,
                ttl: self.ttl,
                refresh: self.refresh,
                now,
            },
            _ => Command::Set {
                key: self.key,
                value: self.value,
                dir: self.dir,
                ttl: self.ttl,
                refresh: self.refresh,
                now,
            },
        }
    }
}

/// The parameters of a v2 `DELETE`, after validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The key.
    pub key: String,
    /// `dir=true`.
    pub dir: bool,
    /// `recursive=true`.
    pub recursive: bool,
    /// `prevValue` when given.
    pub prev_value: Option<String>,
    /// `prevIndex` when given (0 means no condition).
    pub prev_index: Option<u64>,
}

impl DeleteRequest {
    /// `prevValue` (non-empty) or `prevIndex` (> 0) → [`Command::CompareAndDelete`],
    /// otherwise [`Command::Delete`].
    pub fn into_command(self, now: UnixNanos) -> Command {
        let prev_value = self.prev_value.filter(|v| !v.is_empty());
        let prev_index = self.prev_index.filter(|i| *i > 0);
        if prev_value.is_some() || prev_index.is_some() {
            Command::CompareAndDelete {
                key: self.key,
                prev_value,
                prev_index,
                now,
            }
        } else {
            Command::Delete {
                key: self.key,
                dir: self.dir,
                recursive: self.recursive,
                now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<Command> {
        let now = UnixNanos(1_700_000_000_123_456_789);
        vec![
            Command::set("/a", "v", now),
            Command::Set {
                key: "/d".into(),
                value: String::new(),
                dir: true,
                ttl: Some(5),
                refresh: true,
                now,
            },
            Command::mkdir("/m", now),
            Command::CreateInOrder {
                dir_key: "/q".into(),
                value: "job".into(),
                dir: false,
                ttl: None,
                now,
            },
            Command::Update {
                key: "/a".into(),
                value: "w".into(),
                ttl: Some(u64::MAX),
                refresh: false,
                now,
            },
            Command::CompareAndSwap {
                key: "/a".into(),
                value: "x".into(),
                prev_value: Some("w".into()),
                prev_index: Some(7),
                ttl: None,
                refresh: false,
                now,
            },
            Command::Delete {
                key: "/d".into(),
                dir: true,
                recursive: true,
                now,
            },
            Command::CompareAndDelete {
                key: "/a".into(),
                prev_value: None,
                prev_index: Some(9),
                now,
            },
            Command::Sync { now },
        ]
    }

    #[test]
    fn encode_decode_round_trip() {
        for cmd in all_kinds() {
            let bytes = cmd.encode();
            assert_eq!(bytes[0], COMMAND_VERSION);
            assert_eq!(Command::decode(&bytes), Ok(cmd));
        }
    }

    #[test]
    fn decode_rejects_garbage_without_panicking() {
        assert_eq!(Command::decode(&[]).unwrap_err().code, 300);
        assert_eq!(Command::decode(&[2, 0]).unwrap_err().code, 300);
        let mut bytes = Command::set("/a", "v", UnixNanos(1)).encode();
        bytes.push(0);
        assert_eq!(
            Command::decode(&bytes).unwrap_err().code,
            300,
            "trailing bytes"
        );
        for cut in 1..bytes.len() - 1 {
            assert!(
                Command::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        // A string claiming an absurd length must not allocate it.
        assert!(Command::decode(&[1, 0, 253, 255, 255, 255, 255, 255, 255, 255, 127]).is_err());
    }

    #[test]
    fn put_selection_table() {
        let now = UnixNanos(0);
        let base = PutRequest {
            key: "/k".into(),
            value: "v".into(),
            ..PutRequest::default()
        };
        let kind = |r: PutRequest| match r.into_command(now) {
            Command::Set { .. } => "set",
            Command::Create { .. } => "create",
            Command::Update { .. } => "update",
            Command::CompareAndSwap { .. } => "cas",
            _ => "other",
        };
        assert_eq!(kind(base.clone()), "set");
        assert_eq!(
            kind(PutRequest {
                prev_exist: Some(true),
                ..base.clone()
            }),
            "update"
        );
        assert_eq!(
            kind(PutRequest {
                prev_exist: Some(true),
                prev_index: Some(0),
                ..base.clone()
            }),
            "update"
        );
        assert_eq!(
            kind(PutRequest {
                prev_exist: Some(true),
                prev_index: Some(3),
                ..base.clone()
            }),
            "cas"
        );
        assert_eq!(
            kind(PutRequest {
                prev_exist: Some(true),
                prev_value: Some("x".into()),
                ..base.clone()
            }),
            "cas"
        );
        assert_eq!(
            kind(PutRequest {
                prev_exist: Some(false),
                prev_value: Some("x".into()),
                ..base.clone()
            }),
            "create"
        );
        assert_eq!(
            kind(PutRequest {
                prev_value: Some("x".into()),
                ..base.clone()
            }),
            "cas"
        );
        assert_eq!(
            kind(PutRequest {
                prev_index: Some(0),
                ..base.clone()
            }),
            "set"
        );
        assert_eq!(
            kind(PutRequest {
                prev_index: Some(1),
                ..base
            }),
            "cas"
        );
    }

    #[test]
    fn delete_selection() {
        let now = UnixNanos(0);
        let d = DeleteRequest {
            key: "/k".into(),
            ..DeleteRequest::default()
        };
        assert!(matches!(
            d.clone().into_command(now),
            Command::Delete { .. }
        ));
        assert!(matches!(
            DeleteRequest {
                prev_index: Some(0),
                ..d.clone()
            }
            .into_command(now),
            Command::Delete { .. }
        ));
        assert!(matches!(
            DeleteRequest {
                prev_value: Some("x".into()),
                ..d
            }
            .into_command(now),
            Command::CompareAndDelete { .. }
        ));
    }
}
