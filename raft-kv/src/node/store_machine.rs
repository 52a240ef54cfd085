//! The etcd v2 [`Store`] as the node's [`StateMachine`].
//!
//! Commands are [`Command`]s encoded with [`Command::encode`]; the response is what
//! [`Store::apply`] answers (`Ok(Event)` or a deterministic `StoreError`, which is an
//! answer, not a failure of the member). Snapshots are [`Store::snapshot`]; a restore keeps
//! the watchers registered on this member ([`Store::restore_from`]).
//!
//! Time: the leader proposes [`Command::Sync`] with its clock, but only when some key's
//! expiration has come, so an idle cluster without TTLs writes nothing.
//!
//! This adapter owns the store (reads run on the node thread through
//! `RaftNode::read` / `NodeHandle::read`). A server that wants readers to share the store
//! across threads wraps it in a lock in its own adapter, as the `server` feature does.

use crate::store::{Command, Event, Store, StoreError, UnixNanos};

use super::{SnapshotWriter, StateMachine};

impl StateMachine for Store {
    type Response = Result<Event, StoreError>;

    fn apply(&mut self, _index: u64, command: &[u8]) -> Result<Event, StoreError> {
        self.apply_bytes(command)
    }

    fn snapshot(&self) -> Vec<u8> {
        Store::snapshot(self)
    }

    fn snapshot_into(&self, out: &mut Vec<u8>) {
        Store::snapshot_into(self, out);
    }

    fn snapshot_writer(&self) -> Option<SnapshotWriter> {
        let frozen = self.freeze();
        Some(Box::new(move |out: &mut Vec<u8>| frozen.snapshot_into(out)))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.restore_from(snapshot).map_err(|e| Box::new(e) as _)
    }

    fn hash(&self) -> u64 {
        Store::hash(self)
    }

    fn leader_sync_command(&self, now_unix_ms: u64) -> Option<Vec<u8>> {
        let now = UnixNanos::from_millis(now_unix_ms);
        let due = self.next_expiration().is_some_and(|at| at <= now);
        due.then(|| Command::Sync { now }.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_applies_snapshots_and_syncs_through_the_trait() {
        let mut store = Store::new();
        let now = UnixNanos::from_millis(1_000);
        let mut command = Command::set("/a", "1", now);
        if let Command::Set { ttl, .. } = &mut command {
            *ttl = Some(1);
        }
        let event = StateMachine::apply(&mut store, 5, &command.encode());
        assert!(event.is_ok(), "{event:?}");
        assert!(StateMachine::apply(&mut store, 6, b"garbage").is_err());
        // Not yet due; due after the TTL.
        assert!(store.leader_sync_command(1_500).is_none());
        let sync = store.leader_sync_command(2_500).expect("a sync is due");
        let mut copy = Store::new();
        assert!(StateMachine::restore(&mut copy, &StateMachine::snapshot(&store)).is_ok());
        assert_eq!(StateMachine::hash(&copy), StateMachine::hash(&store));
        assert!(StateMachine::apply(&mut store, 7, &sync).is_ok());
        assert!(store.get("/a", false, false).is_err(), "the key expired");
        assert!(StateMachine::restore(&mut copy, b"not a snapshot").is_err());
    }
}
