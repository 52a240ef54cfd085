//! A [`Datastore`] that embeds a single-member raft-kv node (feature `embedded`): the
//! etcd v2 store of `raft_kv::store` replicated (to itself) through `raft_kv::node` over
//! a `wal` write-ahead log in a data directory, so calicoctl or calico-node can keep
//! Calico's state on one machine without running etcd — and find it again after a
//! restart.
//!
//! * **Writes** are raft proposals ([`raft_kv::store::Command`]); each returns once the
//!   entry is durable (fsynced) and applied. Answers are etcd's: a failed condition is
//!   errorCode 101 and so on, mapped onto the crate's [`Error`] variants.
//! * **Reads** are linearizable (ReadIndex through the node), served on the node thread.
//! * **Watches** register with the store's watcher hub on the node thread, so a watch
//!   from index `W` sees every event `>= W` that is still in the 1000-event history
//!   (older is [`Error::EventIndexCleared`], etcd's 401), then block on the watcher.
//! * **One process per data directory**: [`EmbeddedDatastore::open`] takes
//!   `<data-dir>/LOCK` (holding the owner's pid; a lock whose process is gone is taken
//!   over) and a second opener gets [`Error::Unavailable`] naming the holder, instead of
//!   two WAL writers corrupting each other. The lock is released when the last clone of
//!   the datastore is dropped, after the node has stopped.
//!
//! Layout of the data directory: `wal/` (raft log segments), `snap/` (state snapshots,
//! every 10,000 writes), `LOCK`. [`EmbeddedDatastore::in_memory`] uses an in-memory
//! disk instead (tests, demos).
//!
//! Caveats: single member only (to share state between machines, run the etcd example
//! and use `calico_model::etcd`, feature `etcd`); no TTLs are set (Calico 0.22 sets
//! none on the keys this crate writes); one process per data directory, so calicoctl
//! and calico-node cannot share an embedded store at the same time.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raft_kv::node::{
    ClusterStart, DriverConfig, MemberInfo, NodeConfig, NodeError, NodeHandle, RaftNode,
    ReadConsistency, Role,
};
use raft_kv::storage::{Disk, MemDisk, WalDisk, WalDiskOptions};
use raft_kv::store::{
    self as kv, Command, DeleteRequest, NodeExtern, PutRequest, Store, StoreError, TryNext,
    UnixNanos,
};

use crate::datastore::{Action, Datastore, DeleteOptions, Event, Index, Node, Read, SetOptions};
use crate::error::{Error, Result};
use crate::v2_error;

/// The member id of the embedded node.
const MEMBER_ID: u64 = 1;
/// How long a write or read may wait for the node (it only waits on its own fsync).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`EmbeddedDatastore::open`] waits for the node to become leader.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// The embedded raft-kv datastore. Cloning shares the node.
#[derive(Clone)]
pub struct EmbeddedDatastore {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeHandle<Store>,
    data_dir: Option<PathBuf>,
    lock: Option<LockFile>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the node (closing the WAL) before releasing the directory.
        self.node.shutdown();
        self.lock.take();
    }
}

impl std::fmt::Debug for EmbeddedDatastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDatastore")
            .field("data_dir", &self.inner.data_dir)
            .finish()
    }
}

/// `<data-dir>/LOCK`, removed on drop.
struct LockFile {
    path: PathBuf,
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn unavailable(context: impl Into<String>, message: impl ToString) -> Error {
    Error::Unavailable {
        context: context.into(),
        message: message.to_string(),
    }
}

impl LockFile {
    fn acquire(dir: &Path) -> Result<LockFile> {
        let path = dir.join(LOCK_FILE);
        let me = std::process::id();
        // Two attempts: the second after removing a lock whose owner is gone.
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(format!("{me}\n").as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| unavailable(format!("write {}", path.display()), e))?;
                    return Ok(LockFile { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid: Option<u32> = holder.trim().parse().ok();
                    let alive = pid.is_some_and(|pid| {
                        pid == me || Path::new(&format!("/proc/{pid}")).exists()
                    });
                    if alive || pid.is_none() && !holder.is_empty() {
                        return Err(unavailable(
                            format!("open the embedded datastore in {}", dir.display()),
                            format!(
                                "the data directory is in use by process {} (lock file {}); \
                                 stop it, or remove the lock if that process is gone",
                                holder.trim(),
                                path.display()
                            ),
                        ));
                    }
                    // Stale (its process is gone) or empty (a crash between create and
                    // write): take it over.
                    std::fs::remove_file(&path)
                        .map_err(|e| unavailable(format!("remove {}", path.display()), e))?;
                }
                Err(e) => return Err(unavailable(format!("create {}", path.display()), e)),
            }
        }
        Err(unavailable(
            format!("lock {}", path.display()),
            "another process keeps taking the lock",
        ))
    }
}

impl EmbeddedDatastore {
    /// Opens (creating if needed) the store in `data_dir`, replaying its log. Fails with
    /// [`Error::Unavailable`] if another process has the directory open.
    pub fn open(data_dir: &Path) -> Result<EmbeddedDatastore> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| unavailable(format!("create {}", data_dir.display()), e))?;
        let lock = LockFile::acquire(data_dir)?;
        let disk = WalDisk::open(
            data_dir.join("wal"),
            data_dir.join("snap"),
            WalDiskOptions::default(),
        )
        .map_err(|e| unavailable(format!("open the raft log in {}", data_dir.display()), e))?;
        Self::start(disk, Some(data_dir.to_path_buf()), Some(lock))
    }

    /// A store on an in-memory disk: the same raft path, nothing persisted.
    pub fn in_memory() -> Result<EmbeddedDatastore> {
        Self::start(MemDisk::new(), None, None)
    }

    fn start<D: Disk + 'static>(
        disk: D,
        data_dir: Option<PathBuf>,
        lock: Option<LockFile>,
    ) -> Result<EmbeddedDatastore> {
        let what = match &data_dir {
            Some(dir) => format!("start the embedded datastore in {}", dir.display()),
            None => "start the in-memory embedded datastore".to_string(),
        };
        let context = || what.clone();
        let info = MemberInfo {
            name: "embedded".into(),
            peer_urls: Vec::new(),
            client_urls: Vec::new(),
        };
        let node = RaftNode::open(
            NodeConfig::new(MEMBER_ID),
            disk,
            Store::new(),
            ClusterStart::New(vec![(MEMBER_ID, info)]),
        )
        .map_err(|e| unavailable(context(), e))?;
        let driver = DriverConfig {
            tick_interval: Duration::from_millis(20),
            ..DriverConfig::default()
        };
        // A single member sends no messages: a vector is its whole transport.
        let node =
            NodeHandle::spawn(node, Vec::new(), driver).map_err(|e| unavailable(context(), e))?;
        let inner = Arc::new(Inner {
            node,
            data_dir,
            lock,
        });
        // The only voter wins at once; campaigning skips the election timeout.
        inner.node.campaign();
        let deadline = std::time::Instant::now() + ELECTION_TIMEOUT;
        loop {
            let status = inner.node.status();
            if status.role == Role::Leader {
                break;
            }
            if !status.lifecycle.is_running() || std::time::Instant::now() >= deadline {
                return Err(unavailable(
                    context(),
                    format!("the node did not become leader ({:?})", status.lifecycle),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(EmbeddedDatastore { inner })
    }

    /// The data directory (`None` for [`EmbeddedDatastore::in_memory`]).
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_deref()
    }

    fn propose(&self, what: &str, key: &str, command: Command) -> Result<Event> {
        let applied = self
            .inner
            .node
            .propose(command.encode())
            .wait_timeout(REQUEST_TIMEOUT)
            .map_err(|e| node_error(what, key, e))?;
        match applied.response {
            Ok(event) => Ok(convert_event(event)),
            Err(e) => Err(store_error(what, key, e)),
        }
    }

    fn read<R, F>(&self, what: &str, key: &str, read: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> R + Send + 'static,
    {
        self.inner
            .node
            .read(ReadConsistency::Linearizable, read)
            .wait_timeout(REQUEST_TIMEOUT)
            .map_err(|e| node_error(what, key, e))
    }
}

fn node_error(what: &str, key: &str, e: NodeError) -> Error {
    unavailable(format!("{what} {key} (embedded)"), e)
}

fn store_error(what: &str, key: &str, e: StoreError) -> Error {
    v2_error::from_code(e.code, e.message, &e.cause, e.index, key).unwrap_or_else(|| {
        // 107 (root is read only) and request validation errors.
        Error::invalid(
            format!("{what} request"),
            key,
            format!("{} ({})", e.message, e.cause),
        )
    })
}

fn convert_node(node: NodeExtern) -> Node {
    Node {
        key: if node.key.is_empty() {
            "/".to_string()
        } else {
            node.key
        },
        value: if node.dir { None } else { node.value },
        dir: node.dir,
        nodes: node.nodes.into_iter().map(convert_node).collect(),
        created_index: node.created_index,
        modified_index: node.modified_index,
    }
}

fn convert_action(action: kv::Action) -> Action {
    match action {
        kv::Action::Create => Action::Create,
        kv::Action::Update => Action::Update,
        kv::Action::CompareAndSwap => Action::CompareAndSwap,
        kv::Action::Delete => Action::Delete,
        kv::Action::CompareAndDelete => Action::CompareAndDelete,
        kv::Action::Expire => Action::Expire,
        kv::Action::Set | kv::Action::Get | kv::Action::Sync => Action::Set,
    }
}

fn convert_event(event: kv::Event) -> Event {
    let action = convert_action(event.action);
    let mut node = convert_node(event.node);
    if action.is_delete() {
        node.value = None;
    }
    Event {
        action,
        node,
        prev_node: event.prev_node.map(convert_node),
    }
}

impl Datastore for EmbeddedDatastore {
    fn get(&self, key: &str, recursive: bool) -> Result<Read> {
        let owned = key.to_string();
        let result = self.read("get", key, move |store: &Store| {
            store.get_at(&owned, recursive, true, UnixNanos::now())
        })?;
        match result {
            Ok(event) => Ok(Read {
                index: event.etcd_index,
                node: convert_node(event.node),
            }),
            Err(e) => Err(store_error("get", key, e)),
        }
    }

    fn set(&self, key: &str, value: &str, options: &SetOptions) -> Result<Event> {
        let command = PutRequest {
            key: key.to_string(),
            value: if options.dir {
                String::new()
            } else {
                value.to_string()
            },
            dir: options.dir,
            ttl: None,
            prev_exist: options.prev_exist,
            prev_value: options.prev_value.clone().filter(|v| !v.is_empty()),
            prev_index: options.prev_index.filter(|i| *i > 0),
            refresh: false,
        }
        .into_command(UnixNanos::now());
        self.propose("set", key, command)
    }

    fn delete(&self, key: &str, options: &DeleteOptions) -> Result<Event> {
        let command = DeleteRequest {
            key: key.to_string(),
            dir: options.dir,
            recursive: options.recursive,
            prev_value: options.prev_value.clone().filter(|v| !v.is_empty()),
            prev_index: options.prev_index.filter(|i| *i > 0),
        }
        .into_command(UnixNanos::now());
        self.propose("delete", key, command)
    }

    fn watch(
        &self,
        key: &str,
        recursive: bool,
        wait_index: Index,
        timeout: Duration,
    ) -> Result<Option<Event>> {
        let owned = key.to_string();
        let since = Some(wait_index).filter(|i| *i > 0);
        let registered = self.read("watch", key, move |store: &Store| {
            store.watch(&owned, recursive, false, since)
        })?;
        let mut watcher = registered.map_err(|e| match store_error("watch", key, e) {
            Error::EventIndexCleared { oldest, .. } => Error::EventIndexCleared {
                requested: wait_index,
                oldest,
            },
            other => other,
        })?;
        match watcher.next_timeout(timeout) {
            TryNext::Event(event) => Ok(Some(convert_event(*event))),
            TryNext::Pending => Ok(None),
            TryNext::Closed => Err(unavailable(
                format!("watch {key} (embedded)"),
                "the store stopped",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_watches_through_raft() {
        let ds = EmbeddedDatastore::in_memory().expect("start");
        let e = ds.put("/a/b", "1").expect("put");
        assert_eq!(e.action, Action::Set);
        let read = ds.get("/a", true).expect("get");
        assert_eq!(read.node.nodes.len(), 1);
        assert_eq!(read.node.nodes[0].value.as_deref(), Some("1"));
        assert!(read.index >= e.index());
        assert!(matches!(
            ds.create("/a/b", "2"),
            Err(Error::AlreadyExists { .. })
        ));
        let seen = ds
            .watch("/a", true, e.index(), Duration::from_millis(10))
            .expect("watch");
        assert_eq!(seen.map(|ev| ev.index()), Some(e.index()));
        assert_eq!(
            ds.watch("/a", true, 0, Duration::from_millis(10))
                .expect("quiet watch"),
            None
        );
    }

    #[test]
    fn persists_across_reopen_and_locks_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = {
            let ds = EmbeddedDatastore::open(dir.path()).expect("open");
            let second = EmbeddedDatastore::open(dir.path());
            let err = second.expect_err("the directory is locked");
            assert!(err.to_string().contains("in use by process"), "{err}");
            ds.put("/calico/v1/config/LogSeverity", "info")
                .expect("put")
                .index()
        };
        let ds = EmbeddedDatastore::open(dir.path()).expect("reopen");
        let value = ds.get_value("/calico/v1/config/LogSeverity").expect("get");
        assert_eq!(value, Some(("info".to_string(), index)));
        let next = ds.put("/k", "v").expect("put after reopen");
        assert!(next.index() > index);
    }

    #[test]
    fn a_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A pid that cannot be alive (above the kernel's pid_max limit of 2^22).
        std::fs::write(dir.path().join(LOCK_FILE), "4194305\n").expect("write lock");
        let ds = EmbeddedDatastore::open(dir.path()).expect("stale lock taken over");
        drop(ds);
        assert!(!dir.path().join(LOCK_FILE).exists(), "released on drop");
    }
}
