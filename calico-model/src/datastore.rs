//! The datastore seam: etcd v2's key/value model as a trait, and the in-memory
//! implementation that is the embedded default.
//!
//! Calico 0.22 keeps all state in etcd v2, so the trait is etcd v2 without the HTTP:
//!
//! * a tree of **nodes**: a node is a *file* (holds a string value) or a *directory*;
//!   keys are `/`-separated absolute paths; writing a key creates missing parent
//!   directories;
//! * one store-wide **index**, bumped by every write; every node carries the index that
//!   created it (`createdIndex`) and last modified it (`modifiedIndex`);
//! * conditional writes: `prevExist=false` (create), `prevExist=true` (update),
//!   `prevIndex=N` / `prevValue=V` (compare-and-swap / compare-and-delete);
//! * directory reads, optionally recursive; directory deletes need `dir` (empty) or
//!   `recursive`;
//! * **watch** from an index: returns the first event at or after it on a key or, when
//!   recursive, anywhere below it; history is finite, and asking for an index older than
//!   the retained history is [`Error::EventIndexCleared`] (etcd 401), after which the
//!   watcher must re-read and watch from the read's index.
//!
//! Each [`Datastore`] method maps to one etcd v2 request, so an HTTP client and an
//! embedded raft store implement it 1:1:
//!
//! | method | etcd v2 request |
//! |---|---|
//! | [`Datastore::get`] | `GET /v2/keys/<key>[?recursive=true]` (answer's `X-Etcd-Index` in [`Read::index`]) |
//! | [`Datastore::set`] | `PUT /v2/keys/<key>` `value=..` `[&dir=true][&prevExist=..][&prevIndex=..][&prevValue=..]` |
//! | [`Datastore::delete`] | `DELETE /v2/keys/<key>[?dir=true][&recursive=true][&prevIndex=..][&prevValue=..]` |
//! | [`Datastore::watch`] | `GET /v2/keys/<key>?wait=true[&recursive=true][&waitIndex=..]` (`None` = timed out) |
//!
//! Answers are the etcd error codes as [`Error`] variants (100 `KeyNotFound`, 101
//! `CompareFailed`, 102 `NotAFile`, 104 `NotADirectory`, 105 `AlreadyExists`, 108
//! `DirectoryNotEmpty`, 401 `EventIndexCleared`); transport failures are
//! [`Error::Unavailable`].
//!
//! Caveats of [`MemoryDatastore`]: no TTLs (Calico 0.22 does not use them for the data
//! this crate reads), no hidden `_` keys, and it keeps the last 1000 events, as etcd v2.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// etcd's store index (`X-Etcd-Index`, `createdIndex`, `modifiedIndex`).
pub type Index = u64;

/// How many events [`MemoryDatastore`] keeps for watchers (etcd v2 keeps 1000).
pub const HISTORY_LEN: usize = 1000;

/// A node as etcd v2 returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Absolute key.
    pub key: String,
    /// The value of a file; `None` for a directory.
    pub value: Option<String>,
    /// Whether this is a directory.
    pub dir: bool,
    /// Children of a directory read, sorted by key (nested only for recursive reads).
    pub nodes: Vec<Node>,
    /// Index of the write that created the node.
    pub created_index: Index,
    /// Index of the write that last modified the node.
    pub modified_index: Index,
}

impl Node {
    /// Every file below (or at) this node, depth first in key order.
    pub fn leaves(&self) -> Vec<&Node> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a Node>) {
        if !self.dir {
            out.push(self);
        }
        for child in &self.nodes {
            child.collect_leaves(out);
        }
    }
}

/// The answer to a read: the node and the store index at the time of the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The node (with children for a directory).
    pub node: Node,
    /// The store's index when the read was served (`X-Etcd-Index`); watch from
    /// `index + 1` to see every later change.
    pub index: Index,
}

/// etcd v2's event `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Unconditional write.
    Set,
    /// `prevExist=false` write.
    Create,
    /// `prevExist=true` write.
    Update,
    /// `prevIndex`/`prevValue` write.
    CompareAndSwap,
    /// Unconditional delete.
    Delete,
    /// `prevIndex`/`prevValue` delete.
    CompareAndDelete,
    /// TTL expiry.
    Expire,
}

impl Action {
    /// etcd's spelling (`set`, `compareAndSwap`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Set => "set",
            Action::Create => "create",
            Action::Update => "update",
            Action::CompareAndSwap => "compareAndSwap",
            Action::Delete => "delete",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
        }
    }

    /// Whether the node is gone after this event (felix's reading: delete,
    /// compareAndDelete and expire are deletes, everything else a set).
    pub fn is_delete(self) -> bool {
        matches!(
            self,
            Action::Delete | Action::CompareAndDelete | Action::Expire
        )
    }
}

/// One change, as a write returns it and a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The node after the change (for deletes: key, no value, the delete's index).
    pub node: Node,
    /// The node before the change, if it existed.
    pub prev_node: Option<Node>,
}

impl Event {
    /// The index of the write (the node's `modifiedIndex`).
    pub fn index(&self) -> Index {
        self.node.modified_index
    }
}

/// Conditions and flags of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// `prevExist`: `Some(false)` = must not exist (create), `Some(true)` = must exist.
    pub prev_exist: Option<bool>,
    /// `prevIndex`: the node's `modifiedIndex` must equal this.
    pub prev_index: Option<Index>,
    /// `prevValue`: the node's value must equal this.
    pub prev_value: Option<String>,
    /// `dir=true`: create a directory (the value is ignored).
    pub dir: bool,
}

/// Conditions and flags of a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `dir=true`: the key may be an (empty) directory.
    pub dir: bool,
    /// `recursive=true`: delete a directory and everything below it.
    pub recursive: bool,
    /// `prevIndex`: the node's `modifiedIndex` must equal this.
    pub prev_index: Option<Index>,
    /// `prevValue`: the node's value must equal this.
    pub prev_value: Option<String>,
}

/// etcd v2's key/value API. See the module docs for the mapping to HTTP requests.
pub trait Datastore: Send + Sync {
    /// Reads a key; a directory comes with its children (all levels if `recursive`).
    fn get(&self, key: &str, recursive: bool) -> Result<Read>;

    /// Writes a value (or creates a directory) subject to the options' conditions.
    fn set(&self, key: &str, value: &str, options: &SetOptions) -> Result<Event>;

    /// Deletes a key subject to the options.
    fn delete(&self, key: &str, options: &DeleteOptions) -> Result<Event>;

    /// Waits up to `timeout` for the first event with index `>= wait_index` on `key`
    /// (or below it when `recursive`); `wait_index == 0` means the next event from now.
    /// `Ok(None)` when the timeout passes first (normal for long polls).
    fn watch(
        &self,
        key: &str,
        recursive: bool,
        wait_index: Index,
        timeout: Duration,
    ) -> Result<Option<Event>>;

    /// Unconditional write.
    fn put(&self, key: &str, value: &str) -> Result<Event> {
        self.set(key, value, &SetOptions::default())
    }

    /// Write only if the key does not exist (`prevExist=false`).
    fn create(&self, key: &str, value: &str) -> Result<Event> {
        self.set(
            key,
            value,
            &SetOptions {
                prev_exist: Some(false),
                ..SetOptions::default()
            },
        )
    }

    /// Write only if the key's `modifiedIndex` is `prev_index` (`prevIndex=N`).
    fn compare_and_swap(&self, key: &str, value: &str, prev_index: Index) -> Result<Event> {
        self.set(
            key,
            value,
            &SetOptions {
                prev_index: Some(prev_index),
                ..SetOptions::default()
            },
        )
    }

    /// Delete only if the key's `modifiedIndex` is `prev_index`.
    fn compare_and_delete(&self, key: &str, prev_index: Index) -> Result<Event> {
        self.delete(
            key,
            &DeleteOptions {
                prev_index: Some(prev_index),
                ..DeleteOptions::default()
            },
        )
    }

    /// Creates a directory; an existing directory is fine (etcd answers 102, which
    /// libcalico treats as "already exists").
    fn ensure_dir(&self, key: &str) -> Result<()> {
        match self.set(
            key,
            "",
            &SetOptions {
                dir: true,
                ..SetOptions::default()
            },
        ) {
            Ok(_) => Ok(()),
            Err(Error::NotAFile { .. }) => match self.get(key, false) {
                Ok(read) if read.node.dir => Ok(()),
                Ok(_) => Err(Error::NotADirectory {
                    key: key.to_string(),
                }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// A file's value and `modifiedIndex`, `None` if the key does not exist.
    fn get_value(&self, key: &str) -> Result<Option<(String, Index)>> {
        match self.get(key, false) {
            Ok(read) if read.node.dir => Err(Error::NotAFile {
                key: key.to_string(),
            }),
            Ok(read) => Ok(Some((
                read.node.value.unwrap_or_default(),
                read.node.modified_index,
            ))),
            Err(Error::KeyNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

macro_rules! forward_datastore {
    ($($ty:ty),*) => {$(
        impl<T: Datastore + ?Sized> Datastore for $ty {
            fn get(&self, key: &str, recursive: bool) -> Result<Read> {
                (**self).get(key, recursive)
            }
            fn set(&self, key: &str, value: &str, options: &SetOptions) -> Result<Event> {
                (**self).set(key, value, options)
            }
            fn delete(&self, key: &str, options: &DeleteOptions) -> Result<Event> {
                (**self).delete(key, options)
            }
            fn watch(&self, key: &str, recursive: bool, wait_index: Index, timeout: Duration) -> Result<Option<Event>> {
                (**self).watch(key, recursive, wait_index, timeout)
            }
        }
    )*};
}

forward_datastore!(Arc<T>, &T, Box<T>);

/// Canonical form of a key: leading `/`, no trailing `/`, no empty, `.` or `..`
/// segments (etcd cleans paths the same way; we reject `..` rather than resolve it).
pub fn normalize_key(key: &str) -> Result<String> {
    let mut out = String::with_capacity(key.len() + 1);
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(Error::invalid("key", key, "'..' is not allowed")),
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn parent_of(key: &str) -> Option<&str> {
    match key.rfind('/') {
        Some(0) if key.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => key.get(..i),
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Option<String>,
    created: Index,
    modified: Index,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every node but the root, by normalised key. Directories have `value: None`.
    nodes: BTreeMap<String, Entry>,
    index: Index,
    history: VecDeque<Event>,
    /// Highest index dropped from `history` (0 = nothing dropped yet).
    dropped_upto: Index,
}

/// The in-memory etcd v2 store: the embedded default [`Datastore`].
///
/// Thread-safe; share it with `Arc`. Watches block on a condition variable.
#[derive(Debug, Default)]
pub struct MemoryDatastore {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl MemoryDatastore {
    /// An empty store at index 0.
    pub fn new() -> MemoryDatastore {
        MemoryDatastore::default()
    }

    /// The current store index.
    pub fn index(&self) -> Index {
        self.inner.lock().index
    }
}

impl Inner {
    fn node(&self, key: &str, entry: &Entry) -> Node {
        Node {
            key: key.to_string(),
            value: entry.value.clone(),
            dir: entry.value.is_none(),
            nodes: Vec::new(),
            created_index: entry.created,
            modified_index: entry.modified,
        }
    }

    fn children(&self, dir: &str, recursive: bool) -> Vec<Node> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let mut out = Vec::new();
        let mut iter = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .peekable();
        while let Some((k, e)) = iter.next() {
            let rest = k.get(prefix.len()..).unwrap_or_default();
            if rest.contains('/') {
                continue; // below a child directory: handled by that child's recursion
            }
            let mut node = self.node(k, e);
            if node.dir {
                if recursive {
                    node.nodes = self.children(k, true);
                }
                // Skip this directory's descendants in our own iteration.
                let sub = format!("{k}/");
                while iter.peek().is_some_and(|(k2, _)| k2.starts_with(&sub)) {
                    iter.next();
                }
            }
            out.push(node);
        }
        out
    }

    fn root_node(&self) -> Node {
        Node {
            key: "/".into(),
            value: None,
            dir: true,
            nodes: Vec::new(),
            created_index: 0,
            modified_index: 0,
        }
    }

    fn record(&mut self, event: Event) {
        if self.history.len() >= HISTORY_LEN {
            if let Some(old) = self.history.pop_front() {
                self.dropped_upto = old.index();
            }
        }
        self.history.push_back(event);
    }

    fn check_prev(
        &self,
        key: &str,
        entry: &Entry,
        prev_index: Option<Index>,
        prev_value: &Option<String>,
    ) -> Result<()> {
        let mut causes = Vec::new();
        if let Some(pv) = prev_value {
            if entry.value.as_deref() != Some(pv.as_str()) {
                causes.push(format!(
                    "[{} != {}]",
                    pv,
                    entry.value.as_deref().unwrap_or_default()
                ));
            }
        }
        if let Some(pi) = prev_index {
            if pi != entry.modified {
                causes.push(format!("[{} != {}]", pi, entry.modified));
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(Error::CompareFailed {
                key: key.to_string(),
                cause: causes.join(" "),
                index: self.index,
            })
        }
    }
}

fn watch_matches(watch_key: &str, recursive: bool, event: &Event) -> bool {
    let key = event.node.key.as_str();
    if key == watch_key {
        return true;
    }
    let below = |parent: &str, child: &str| {
        parent == "/"
            || (child.len() > parent.len()
                && child.starts_with(parent)
                && child.as_bytes().get(parent.len()) == Some(&b'/'))
    };
    // A recursive watch sees everything below its key; any watcher sees the deletion of
    // a directory that contained its key.
    (recursive && below(watch_key, key))
        || (event.action.is_delete() && event.node.dir && below(key, watch_key))
}

impl Datastore for MemoryDatastore {
    fn get(&self, key: &str, recursive: bool) -> Result<Read> {
        let key = normalize_key(key)?;
        let inner = self.inner.lock();
        let node = if key == "/" {
            let mut root = inner.root_node();
            root.nodes = inner.children("/", recursive);
            root
        } else {
            let entry = inner.nodes.get(&key).ok_or_else(|| Error::KeyNotFound {
                key: key.clone(),
                index: inner.index,
            })?;
            let mut node = inner.node(&key, entry);
            if node.dir {
                node.nodes = inner.children(&key, recursive);
            }
            node
        };
        Ok(Read {
            node,
            index: inner.index,
        })
    }

    fn set(&self, key: &str, value: &str, options: &SetOptions) -> Result<Event> {
        let key = normalize_key(key)?;
        if key == "/" {
            return Err(Error::NotAFile { key });
        }
        let mut inner = self.inner.lock();
        // Every ancestor must be a directory (or missing).
        let mut ancestor = parent_of(&key);
        while let Some(a) = ancestor {
            if a == "/" {
                break;
            }
            if inner.nodes.get(a).is_some_and(|e| e.value.is_some()) {
                return Err(Error::NotADirectory { key: a.to_string() });
            }
            ancestor = parent_of(a);
        }
        let existing = inner.nodes.get(&key).cloned();
        let conditional = options.prev_index.is_some() || options.prev_value.is_some();
        match (&existing, options.prev_exist) {
            (Some(_), Some(false)) => {
                return Err(Error::AlreadyExists {
                    key,
                    index: inner.index,
                })
            }
            (None, Some(true)) => {
                return Err(Error::KeyNotFound {
                    key,
                    index: inner.index,
                })
            }
            (None, _) if conditional => {
                return Err(Error::KeyNotFound {
                    key,
                    index: inner.index,
                })
            }
            _ => {}
        }
        if let Some(e) = &existing {
            if e.value.is_none() && !(options.dir && options.prev_exist == Some(true)) {
                return Err(Error::NotAFile { key });
            }
            if conditional {
                inner.check_prev(&key, e, options.prev_index, &options.prev_value)?;
            }
        }
        let action = if conditional {
            Action::CompareAndSwap
        } else {
            match options.prev_exist {
                Some(false) => Action::Create,
                Some(true) => Action::Update,
                None => Action::Set,
            }
        };
        inner.index += 1;
        let index = inner.index;
        // Create missing parents.
        let mut missing = Vec::new();
        let mut ancestor = parent_of(&key);
        while let Some(a) = ancestor {
            if a == "/" || inner.nodes.contains_key(a) {
                break;
            }
            missing.push(a.to_string());
            ancestor = parent_of(a);
        }
        for m in missing {
            inner.nodes.insert(
                m,
                Entry {
                    value: None,
                    created: index,
                    modified: index,
                },
            );
        }
        let created = match (&existing, action) {
            (Some(e), Action::Update | Action::CompareAndSwap) => e.created,
            _ => index,
        };
        let entry = Entry {
            value: if options.dir {
                None
            } else {
                Some(value.to_string())
            },
            created,
            modified: index,
        };
        let prev_node = existing.as_ref().map(|e| inner.node(&key, e));
        let node = inner.node(&key, &entry);
        inner.nodes.insert(key, entry);
        let event = Event {
            action,
            node,
            prev_node,
        };
        inner.record(event.clone());
        drop(inner);
        self.changed.notify_all();
        Ok(event)
    }

    fn delete(&self, key: &str, options: &DeleteOptions) -> Result<Event> {
        let key = normalize_key(key)?;
        if key == "/" {
            return Err(Error::NotAFile { key });
        }
        let mut inner = self.inner.lock();
        let existing = inner
            .nodes
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::KeyNotFound {
                key: key.clone(),
                index: inner.index,
            })?;
        let conditional = options.prev_index.is_some() || options.prev_value.is_some();
        let is_dir = existing.value.is_none();
        if is_dir {
            if conditional || !(options.dir || options.recursive) {
                return Err(Error::NotAFile { key });
            }
            let prefix = format!("{key}/");
            let has_children = inner
                .nodes
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix));
            if has_children && !options.recursive {
                return Err(Error::DirectoryNotEmpty { key });
            }
        } else if conditional {
            inner.check_prev(&key, &existing, options.prev_index, &options.prev_value)?;
        }
        inner.index += 1;
        let index = inner.index;
        let prev_node = inner.node(&key, &existing);
        if is_dir {
            let prefix = format!("{key}/");
            let doomed: Vec<String> = inner
                .nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                inner.nodes.remove(&k);
            }
        }
        inner.nodes.remove(&key);
        let node = Node {
            key: key.clone(),
            value: None,
            dir: is_dir,
            nodes: Vec::new(),
            created_index: existing.created,
            modified_index: index,
        };
        let action = if conditional {
            Action::CompareAndDelete
        } else {
            Action::Delete
        };
        let event = Event {
            action,
            node,
            prev_node: Some(prev_node),
        };
        inner.record(event.clone());
        drop(inner);
        self.changed.notify_all();
        Ok(event)
    }

    fn watch(
        &self,
        key: &str,
        recursive: bool,
        wait_index: Index,
        timeout: Duration,
    ) -> Result<Option<Event>> {
        let key = normalize_key(key)?;
        let deadline = Instant::now() + timeout;
        let mut inner = self.inner.lock();
        let mut from = if wait_index == 0 {
            inner.index + 1
        } else {
            wait_index
        };
        if from <= inner.dropped_upto {
            return Err(Error::EventIndexCleared {
                requested: from,
                oldest: inner.dropped_upto + 1,
            });
        }
        loop {
            if let Some(ev) = inner
                .history
                .iter()
                .find(|ev| ev.index() >= from && watch_matches(&key, recursive, ev))
            {
                return Ok(Some(ev.clone()));
            }
            from = from.max(inner.index + 1);
            if self.changed.wait_until(&mut inner, deadline).timed_out() {
                // One last look: an event may have arrived with the timeout.
                return Ok(inner
                    .history
                    .iter()
                    .find(|ev| ev.index() >= from && watch_matches(&key, recursive, ev))
                    .cloned());
            }
            if from <= inner.dropped_upto {
                return Err(Error::EventIndexCleared {
                    requested: from,
                    oldest: inner.dropped_upto + 1,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(ds: &MemoryDatastore) -> Vec<(String, String)> {
        ds.get("/", true)
            .unwrap()
            .node
            .leaves()
            .into_iter()
            .map(|n| (n.key.clone(), n.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn set_get_and_indexes_follow_etcd() {
        let ds = MemoryDatastore::new();
        let e = ds.put("/a/b", "1").unwrap();
        assert_eq!(
            (e.action, e.index(), e.node.created_index),
            (Action::Set, 1, 1)
        );
        let e = ds.put("a/b/", "2").unwrap();
        assert_eq!(
            (e.node.created_index, e.node.modified_index),
            (2, 2),
            "set replaces the node"
        );
        assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("1"));
        let e = ds.compare_and_swap("/a/b", "3", 2).unwrap();
        assert_eq!(
            (e.action, e.node.created_index, e.node.modified_index),
            (Action::CompareAndSwap, 2, 3)
        );
        let r = ds.get("/a", false).unwrap();
        assert!(r.node.dir);
        assert_eq!(r.index, 3);
        assert_eq!(r.node.nodes.len(), 1);
        assert_eq!(r.node.nodes[0].value.as_deref(), Some("3"));
    }

    #[test]
    fn conditional_writes_answer_with_etcd_codes() {
        let ds = MemoryDatastore::new();
        ds.create("/k", "v").unwrap();
        assert_eq!(ds.create("/k", "w").unwrap_err().etcd_code(), Some(105));
        let err = ds.compare_and_swap("/k", "w", 7).unwrap_err();
        assert_eq!(
            err,
            Error::CompareFailed {
                key: "/k".into(),
                cause: "[7 != 1]".into(),
                index: 1
            }
        );
        assert_eq!(
            ds.compare_and_swap("/missing", "w", 1)
                .unwrap_err()
                .etcd_code(),
            Some(100)
        );
        let upd = SetOptions {
            prev_exist: Some(true),
            ..SetOptions::default()
        };
        assert_eq!(
            ds.set("/missing", "w", &upd).unwrap_err().etcd_code(),
            Some(100)
        );
        assert_eq!(ds.set("/k", "u", &upd).unwrap().action, Action::Update);
        let pv = SetOptions {
            prev_value: Some("nope".into()),
            ..SetOptions::default()
        };
        let err = ds.set("/k", "x", &pv).unwrap_err();
        assert!(
            matches!(&err, Error::CompareFailed { cause, .. } if cause == "[nope != u]"),
            "{err}"
        );
        let pv = SetOptions {
            prev_value: Some("u".into()),
            ..SetOptions::default()
        };
        assert_eq!(
            ds.set("/k", "x", &pv).unwrap().action,
            Action::CompareAndSwap
        );
        assert_eq!(ds.put("/k/child", "x").unwrap_err().etcd_code(), Some(104));
        assert_eq!(
            ds.compare_and_delete("/k", 1).unwrap_err().etcd_code(),
            Some(101)
        );
        let idx = ds.get_value("/k").unwrap().unwrap().1;
        assert_eq!(
            ds.compare_and_delete("/k", idx).unwrap().action,
            Action::CompareAndDelete
        );
        assert_eq!(ds.get_value("/k").unwrap(), None);
    }

    #[test]
    fn directories_behave_like_etcd() {
        let ds = MemoryDatastore::new();
        ds.ensure_dir("/calico/v1/host/h/workload").unwrap();
        ds.ensure_dir("/calico/v1/host/h/workload").unwrap();
        let dir = SetOptions {
            dir: true,
            ..SetOptions::default()
        };
        assert_eq!(
            ds.set("/calico/v1/host/h/workload", "", &dir)
                .unwrap_err()
                .etcd_code(),
            Some(102)
        );
        assert_eq!(
            ds.put("/calico/v1/host", "x").unwrap_err().etcd_code(),
            Some(102)
        );
        ds.put("/calico/v1/host/h/bird_ip", "10.0.0.1").unwrap();
        assert_eq!(
            ds.delete("/calico/v1/host/h", &DeleteOptions::default())
                .unwrap_err()
                .etcd_code(),
            Some(102)
        );
        let d = DeleteOptions {
            dir: true,
            ..DeleteOptions::default()
        };
        assert_eq!(
            ds.delete("/calico/v1/host/h", &d).unwrap_err().etcd_code(),
            Some(108)
        );
        // Empty directories come back as the directory node itself.
        let r = ds.get("/calico", true).unwrap();
        let keys: Vec<&str> = r.node.leaves().iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, vec!["/calico/v1/host/h/bird_ip"]);
        let listing = ds.get("/calico/v1/host/h", false).unwrap().node;
        let kids: Vec<(&str, bool)> = listing
            .nodes
            .iter()
            .map(|n| (n.key.as_str(), n.dir))
            .collect();
        assert_eq!(
            kids,
            vec![
                ("/calico/v1/host/h/bird_ip", false),
                ("/calico/v1/host/h/workload", true)
            ]
        );
        assert!(listing.nodes[1].nodes.is_empty());
        let r = DeleteOptions {
            recursive: true,
            ..DeleteOptions::default()
        };
        let ev = ds.delete("/calico/v1/host/h", &r).unwrap();
        assert!(ev.node.dir);
        assert_eq!(leaves(&ds), vec![]);
        assert!(ds
            .get("/calico/v1/host", false)
            .unwrap()
            .node
            .nodes
            .is_empty());
        assert_eq!(ds.get("/nope", false).unwrap_err().etcd_code(), Some(100));
    }

    #[test]
    fn prefix_siblings_are_not_children() {
        let ds = MemoryDatastore::new();
        ds.put("/a/b", "1").unwrap();
        ds.put("/a/b-c", "2").unwrap();
        ds.put("/a/b/x", "3").unwrap_err();
        ds.put("/ab", "4").unwrap();
        let r = ds.get("/a", true).unwrap();
        let keys: Vec<&str> = r.node.nodes.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, vec!["/a/b", "/a/b-c"]);
    }

    #[test]
    fn watch_from_an_index_replays_then_waits() {
        let ds = Arc::new(MemoryDatastore::new());
        ds.put("/calico/v1/a", "1").unwrap();
        ds.put("/other", "x").unwrap();
        ds.put("/calico/v1/b", "2").unwrap();
        let ev = ds
            .watch("/calico/v1", true, 1, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert_eq!((ev.node.key.as_str(), ev.index()), ("/calico/v1/a", 1));
        let ev = ds
            .watch("/calico/v1", true, 2, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert_eq!(ev.index(), 3);
        assert_eq!(
            ds.watch("/calico/v1", false, 1, Duration::ZERO).unwrap(),
            None
        );
        assert_eq!(
            ds.watch("/calico/v1", true, 4, Duration::from_millis(10))
                .unwrap(),
            None
        );
        let writer = {
            let ds = Arc::clone(&ds);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                ds.put("/calico/v1/c", "3").unwrap();
            })
        };
        let ev = ds
            .watch("/calico/v1", true, 0, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!((ev.node.key.as_str(), ev.index()), ("/calico/v1/c", 4));
        writer.join().unwrap();
    }

    #[test]
    fn watch_sees_deletion_of_an_enclosing_directory() {
        let ds = MemoryDatastore::new();
        ds.put("/d/k", "1").unwrap();
        ds.delete(
            "/d",
            &DeleteOptions {
                recursive: true,
                ..DeleteOptions::default()
            },
        )
        .unwrap();
        let ev = ds.watch("/d/k", false, 2, Duration::ZERO).unwrap().unwrap();
        assert_eq!((ev.action, ev.node.key.as_str()), (Action::Delete, "/d"));
    }

    #[test]
    fn watching_behind_the_history_is_401() {
        let ds = MemoryDatastore::new();
        for i in 0..(HISTORY_LEN + 5) {
            ds.put("/k", &i.to_string()).unwrap();
        }
        let err = ds.watch("/k", false, 3, Duration::ZERO).unwrap_err();
        assert_eq!(
            err,
            Error::EventIndexCleared {
                requested: 3,
                oldest: 6
            }
        );
        assert_eq!(
            ds.watch("/k", false, 6, Duration::ZERO)
                .unwrap()
                .unwrap()
                .index(),
            6
        );
    }

    #[test]
    fn keys_are_normalised_and_dotdot_rejected() {
        assert_eq!(normalize_key("a//b/").unwrap(), "/a/b");
        assert_eq!(normalize_key("/").unwrap(), "/");
        assert_eq!(normalize_key("").unwrap(), "/");
        assert!(normalize_key("/a/../b").is_err());
        let ds = MemoryDatastore::new();
        assert_eq!(ds.put("/", "x").unwrap_err().etcd_code(), Some(102));
    }

    mod model_check {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(u8, u8, u8),
            Create(u8, u8, u8),
            Cas(u8, u8, u8, bool),
            CasValue(u8, u8, u8, bool),
            Delete(u8, u8),
            CompareAndDelete(u8, u8, bool),
            DeleteDir(u8),
        }

        fn arb_op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0u8..2, 0u8..3, any::<u8>()).prop_map(|(d, k, v)| Op::Put(d, k, v)),
                2 => (0u8..2, 0u8..3, any::<u8>()).prop_map(|(d, k, v)| Op::Create(d, k, v)),
                2 => (0u8..2, 0u8..3, any::<u8>(), any::<bool>()).prop_map(|(d, k, v, ok)| Op::Cas(d, k, v, ok)),
                1 => (0u8..2, 0u8..3, any::<u8>(), any::<bool>()).prop_map(|(d, k, v, ok)| Op::CasValue(d, k, v, ok)),
                1 => (0u8..2, 0u8..3).prop_map(|(d, k)| Op::Delete(d, k)),
                1 => (0u8..2, 0u8..3, any::<bool>()).prop_map(|(d, k, ok)| Op::CompareAndDelete(d, k, ok)),
                1 => (0u8..2).prop_map(Op::DeleteDir),
            ]
        }

        fn key(d: u8, k: u8) -> String {
            format!("/d{d}/k{k}")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

            /// The store agrees with a map of files (value, modifiedIndex) on every
            /// answer and every state, the index counts successful writes, and replaying
            /// the watch history from index 1 rebuilds the final state.
            #[test]
            fn store_matches_a_map_and_watch_replays_it(ops in proptest::collection::vec(arb_op(), 1..40)) {
                let ds = MemoryDatastore::new();
                let mut model: BTreeMap<String, (String, Index)> = BTreeMap::new();
                let mut index: Index = 0;
                for op in &ops {
                    let (result, expect_ok) = match op {
                        Op::Put(d, k, v) => (ds.put(&key(*d, *k), &v.to_string()).map(|_| ()), true),
                        Op::Create(d, k, v) => (ds.create(&key(*d, *k), &v.to_string()).map(|_| ()), !model.contains_key(&key(*d, *k))),
                        Op::Cas(d, k, v, right) => {
                            let cur = model.get(&key(*d, *k)).map(|e| e.1);
                            let prev = if *right { cur.unwrap_or(1) } else { cur.map_or(1, |c| c + 1) };
                            (ds.compare_and_swap(&key(*d, *k), &v.to_string(), prev).map(|_| ()), cur == Some(prev))
                        }
                        Op::CasValue(d, k, v, right) => {
                            let cur = model.get(&key(*d, *k)).map(|e| e.0.clone());
                            let prev = if *right { cur.clone().unwrap_or_default() } else { "nope".to_string() };
                            let opts = SetOptions { prev_value: Some(prev.clone()), ..SetOptions::default() };
                            (ds.set(&key(*d, *k), &v.to_string(), &opts).map(|_| ()), cur == Some(prev))
                        }
                        Op::Delete(d, k) => (ds.delete(&key(*d, *k), &DeleteOptions::default()).map(|_| ()), model.contains_key(&key(*d, *k))),
                        Op::CompareAndDelete(d, k, right) => {
                            let cur = model.get(&key(*d, *k)).map(|e| e.1);
                            let prev = if *right { cur.unwrap_or(1) } else { cur.map_or(1, |c| c + 1) };
                            (ds.compare_and_delete(&key(*d, *k), prev).map(|_| ()), cur == Some(prev))
                        }
                        Op::DeleteDir(d) => {
                            let dir = format!("/d{d}");
                            let exists = ds.get(&dir, false).is_ok();
                            (ds.delete(&dir, &DeleteOptions { recursive: true, ..DeleteOptions::default() }).map(|_| ()), exists)
                        }
                    };
                    prop_assert_eq!(result.is_ok(), expect_ok, "{:?}: {:?}", op, result);
                    if let Err(e) = &result {
                        prop_assert!(e.etcd_code().is_some(), "failures are etcd answers: {}", e);
                    }
                    if expect_ok {
                        index += 1;
                        match op {
                            Op::Put(d, k, v) | Op::Create(d, k, v) | Op::Cas(d, k, v, _) | Op::CasValue(d, k, v, _) => {
                                model.insert(key(*d, *k), (v.to_string(), index));
                            }
                            Op::Delete(d, k) | Op::CompareAndDelete(d, k, _) => {
                                model.remove(&key(*d, *k));
                            }
                            Op::DeleteDir(d) => model.retain(|k, _| !k.starts_with(&format!("/d{d}/"))),
                        }
                    }
                    prop_assert_eq!(ds.index(), index);
                    let leaves: BTreeMap<String, (String, Index)> = ds.get("/", true).unwrap().node.leaves().into_iter()
                        .map(|n| (n.key.clone(), (n.value.clone().unwrap_or_default(), n.modified_index))).collect();
                    prop_assert_eq!(&leaves, &model);
                }
                // Replay the history.
                let mut replayed: BTreeMap<String, (String, Index)> = BTreeMap::new();
                let mut from = 1;
                while let Some(ev) = ds.watch("/", true, from, Duration::ZERO).unwrap() {
                    prop_assert!(ev.index() >= from);
                    if ev.action.is_delete() {
                        let prefix = format!("{}/", ev.node.key);
                        replayed.retain(|k, _| k != &ev.node.key && !k.starts_with(&prefix));
                    } else if !ev.node.dir {
                        replayed.insert(ev.node.key.clone(), (ev.node.value.clone().unwrap_or_default(), ev.index()));
                    }
                    from = ev.index() + 1;
                }
                prop_assert_eq!(replayed, model);
            }
        }
    }
}
