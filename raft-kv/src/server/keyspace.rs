//! The etcd v2 [`Store`] as the member's replicated state: the raft [`StateMachine`] that
//! applies commands to it, and the [`KeySpace`] view the HTTP layer reads and watches.
//!
//! Both share one `RwLock<Store>`: applying takes the write lock briefly on the node
//! thread; reads and watch registrations take the read lock on the HTTP tasks, in parallel
//! with each other. JSON is rendered outside the lock, once per response.
//!
//! Time: every write command carries the proposing member's clock; the leader proposes a
//! `Sync` carrying its clock every few ticks, but only when some node's expiration has
//! come (so an idle cluster without TTLs writes nothing). Reads render `ttl` against this
//! member's wall clock, so it counts down between syncs as etcd's does.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use super::keys_request::KeysRequest;
use super::member::{KeySpace, Rendered};
use crate::node::{SnapshotWriter, StateMachine};
use crate::store::{Command, DeleteRequest, Event, PutRequest, Store, StoreError, UnixNanos};

/// Watch events buffered per watcher on their way to the HTTP response.
const WATCH_CHANNEL: usize = 64;

/// The store shared by the state machine and the key space.
pub type SharedStore = Arc<RwLock<Store>>;

/// The raft state machine over the shared store.
pub struct StoreStateMachine {
    store: SharedStore,
}

/// A fresh store, its state machine and its key space (what [`super::run::run_member`]'s
/// factory returns).
pub fn new_store() -> (StoreStateMachine, Arc<StoreKeySpace>) {
    let store: SharedStore = Arc::new(RwLock::new(Store::new()));
    (
        StoreStateMachine {
            store: store.clone(),
        },
        Arc::new(StoreKeySpace { store }),
    )
}

impl StateMachine for StoreStateMachine {
    type Response = Result<Event, StoreError>;

    fn apply(&mut self, _index: u64, command: &[u8]) -> Result<Event, StoreError> {
        self.store.write().apply_bytes(command)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.store.read().snapshot()
    }

    fn snapshot_into(&self, out: &mut Vec<u8>) {
        self.store.read().snapshot_into(out);
    }

    fn snapshot_writer(&self) -> Option<SnapshotWriter> {
        let frozen = self.store.read().freeze();
        Some(Box::new(move |out: &mut Vec<u8>| frozen.snapshot_into(out)))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.store
            .write()
            .restore_from(snapshot)
            .map_err(|e| Box::new(e) as _)
    }

    fn hash(&self) -> u64 {
        self.store.read().hash()
    }

    fn leader_sync_command(&self, now_unix_ms: u64) -> Option<Vec<u8>> {
        let now = UnixNanos::from_millis(now_unix_ms);
        let due = self
            .store
            .read()
            .next_expiration()
            .is_some_and(|at| at <= now);
        due.then(|| Command::Sync { now }.encode())
    }
}

/// The HTTP layer's view of the shared store.
pub struct StoreKeySpace {
    store: SharedStore,
}

fn render_error(error: &StoreError) -> Rendered {
    (
        error.http_status(),
        error.index,
        Bytes::from(error.to_json_line()),
    )
}

fn render_event(event: &Event, no_value: bool) -> Rendered {
    let body = if no_value {
        event.action_only_json_line()
    } else {
        event.to_json_line()
    };
    (event.http_status(), event.etcd_index, Bytes::from(body))
}

impl KeySpace<Result<Event, StoreError>> for StoreKeySpace {
    fn write_command(&self, request: &KeysRequest, now_unix_ms: u64) -> Vec<u8> {
        let now = UnixNanos::from_millis(now_unix_ms);
        let command = match request.clone() {
            KeysRequest::Put(put) => PutRequest {
                key: put.key,
                value: put.value,
                dir: put.dir,
                ttl: put.ttl,
                prev_exist: put.prev_exist,
                prev_value: Some(put.prev_value).filter(|v| !v.is_empty()),
                prev_index: Some(put.prev_index).filter(|i| *i > 0),
                refresh: put.refresh,
            }
            .into_command(now),
            KeysRequest::Post {
                key,
                value,
                dir,
                ttl,
            } => Command::CreateInOrder {
                dir_key: key,
                value,
                dir,
                ttl,
                now,
            },
            KeysRequest::Delete {
                key,
                dir,
                recursive,
                prev_value,
                prev_index,
            } => DeleteRequest {
                key,
                dir,
                recursive,
                prev_value: Some(prev_value).filter(|v| !v.is_empty()),
                prev_index: Some(prev_index).filter(|i| *i > 0),
            }
            .into_command(now),
            // Reads never become commands; a clock tick is harmless if one ever did.
            KeysRequest::Get { .. } | KeysRequest::Watch { .. } => Command::Sync { now },
        };
        command.encode()
    }

    fn render_write(&self, response: Result<Event, StoreError>, no_value: bool) -> Rendered {
        match response {
            Ok(event) => render_event(&event, no_value),
            Err(error) => render_error(&error),
        }
    }

    fn get(&self, key: &str, recursive: bool, sorted: bool) -> Rendered {
        let result = self
            .store
            .read()
            .get_at(key, recursive, sorted, UnixNanos::now());
        match result {
            Ok(event) => render_event(&event, false),
            Err(error) => render_error(&error),
        }
    }

    fn watch(
        &self,
        key: &str,
        recursive: bool,
        stream: bool,
        wait_index: u64,
    ) -> Result<(u64, mpsc::Receiver<Bytes>), Rendered> {
        let watcher = self
            .store
            .read()
            .watch(key, recursive, stream, Some(wait_index).filter(|i| *i > 0))
            .map_err(|e| render_error(&e))?;
        let start_index = watcher.start_index();
        let (sender, receiver) = mpsc::channel(WATCH_CHANNEL);
        tokio::spawn(async move {
            let mut watcher = watcher;
            loop {
                let next = tokio::select! {
                    next = watcher.next() => next,
                    // The client went away: dropping the watcher unregisters it.
                    _ = sender.closed() => return,
                };
                let Some(event) = next else { return };
                if sender
                    .send(Bytes::from(event.to_json_line()))
                    .await
                    .is_err()
                    || !stream
                {
                    return;
                }
            }
        });
        Ok((start_index, receiver))
    }

    fn etcd_index(&self) -> u64 {
        self.store.read().index()
    }

    fn stats_json(&self) -> String {
        self.store.read().stats_json().to_string()
    }
}
