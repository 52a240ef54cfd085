//! [`KvMachine`]: a small deterministic key/value state machine for tests and benches.
//!
//! Besides the map it records its **history**: `(index, fnv1a(command))` for every command
//! it applied, in order. The simulator compares histories across members (they must agree
//! index by index) and checks that every acknowledged write is in every member's history,
//! so a lost or reordered entry cannot hide behind a later overwrite of the same key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::node::{fnv1a, StateMachine};

/// A command of [`KvMachine`], encoded with `bincode` 1.3 default options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Set `key` to `value`; answers the previous value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove `key`; answers the previous value.
    Delete {
        /// The key.
        key: String,
    },
    /// The leader's clock (milliseconds since the UNIX epoch); answers nothing.
    Sync {
        /// The leader's clock.
        now_ms: u64,
    },
}

impl KvCommand {
    /// Encodes the command.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).unwrap_or_default()
    }

    /// Decodes a command; `None` if the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<KvCommand> {
        bincode::deserialize(bytes).ok()
    }
}

/// A deterministic key/value map with a history of applied commands (see the module
/// documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvMachine {
    map: BTreeMap<String, String>,
    history: Vec<(u64, u64)>,
    last_sync_ms: u64,
    #[serde(skip)]
    emit_sync: bool,
}

impl KvMachine {
    /// An empty machine. With `emit_sync`, the leader proposes [`KvCommand::Sync`]
    /// periodically.
    pub fn new(emit_sync: bool) -> Self {
        KvMachine {
            emit_sync,
            ..KvMachine::default()
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.map.get(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `(index, fnv1a(command))` of every command applied, in order.
    pub fn history(&self) -> &[(u64, u64)] {
        &self.history
    }

    /// The last leader clock applied.
    pub fn last_sync_ms(&self) -> u64 {
        self.last_sync_ms
    }
}

impl StateMachine for KvMachine {
    type Response = Option<String>;

    fn apply(&mut self, index: u64, command: &[u8]) -> Option<String> {
        self.history.push((index, fnv1a(command)));
        match KvCommand::decode(command)? {
            KvCommand::Put { key, value } => self.map.insert(key, value),
            KvCommand::Delete { key } => self.map.remove(&key),
            KvCommand::Sync { now_ms } => {
                self.last_sync_ms = self.last_sync_ms.max(now_ms);
                None
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        bincode::serialize(self).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let emit_sync = self.emit_sync;
        *self = bincode::deserialize(snapshot)?;
        self.emit_sync = emit_sync;
        Ok(())
    }

    fn hash(&self) -> u64 {
        fnv1a(&self.snapshot())
    }

    fn leader_sync_command(&self, now_unix_ms: u64) -> Option<Vec<u8>> {
        self.emit_sync.then(|| {
            KvCommand::Sync {
                now_ms: now_unix_ms,
            }
            .encode()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_and_restores() {
        let mut kv = KvMachine::new(false);
        let put = KvCommand::Put {
            key: "a".into(),
            value: "1".into(),
        };
        assert_eq!(kv.apply(3, &put.encode()), None);
        let put2 = KvCommand::Put {
            key: "a".into(),
            value: "2".into(),
        };
        assert_eq!(kv.apply(4, &put2.encode()), Some("1".into()));
        assert_eq!(kv.apply(5, b"garbage"), None);
        assert_eq!(kv.history().len(), 3);
        let mut other = KvMachine::new(false);
        assert!(other.restore(&kv.snapshot()).is_ok());
        assert_eq!(other.hash(), kv.hash());
        assert_eq!(other.get("a").map(String::as_str), Some("2"));
        assert!(other.restore(b"\xff").is_err());
        assert!(KvMachine::new(false).leader_sync_command(1).is_none());
        assert!(KvMachine::new(true).leader_sync_command(1).is_some());
    }
}
