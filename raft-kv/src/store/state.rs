//! [`Store`]: the deterministic v2 state machine and its read/watch side.
//!
//! Each write method below follows etcd 3.4's `v2store` step by step (the order of the
//! checks decides which error a request gets) and states the quirks it keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::command::Command;
use super::error::{ErrorCode, StoreError};
use super::event::{Action, Event, NodeExtern, UnixNanos};
use super::name::Name;
use super::path::{self, MAX_KEY_DEPTH};
use super::stats::{Counter, Stats, StoreStats};
use super::tree::{last_segment, Kind, Node, Tree, WalkError};
use super::watch::{History, Hub, Watcher};

/// The etcd v2 store: a tree of files and directories with etcd's indexes, TTLs, compare
/// operations, event history and watchers. See the module documentation of
/// [`crate::store`] for the model and its rules.
///
/// `apply` is deterministic; reads, watches and stats take `&self` (counters are atomics,
/// the watcher registry has its own lock), so a `RwLock<Store>` lets reads run in
/// parallel with each other.
#[derive(Debug)]
pub struct Store {
    pub(crate) tree: Tree,
    /// The etcd index: the index of the last write (0 for a new store).
    pub(crate) index: u64,
    /// The latest proposer clock seen in an applied command (used to render GETs).
    pub(crate) clock: UnixNanos,
    /// Nodes with a TTL by (expiration, key): the expiry order.
    pub(crate) ttl_by_time: BTreeSet<(u64, String)>,
    /// Nodes with a TTL by key (to drop a removed subtree's entries).
    pub(crate) ttl_by_key: BTreeMap<String, u64>,
    pub(crate) history: History,
    pub(crate) hub: Arc<Hub>,
    pub(crate) stats: Stats,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Watchers of a store that goes away would otherwise wait forever.
        self.hub.close_all();
    }
}

fn walk_error(err: WalkError, index: u64) -> StoreError {
    match err {
        WalkError::NotFound(cause) => StoreError::new(ErrorCode::KeyNotFound, cause, index),
        WalkError::NotDir(cause) => StoreError::new(ErrorCode::NotDir, cause, index),
    }
}

/// etcd's compare rule: both given conditions must hold; the cause names what failed.
fn compare(node: &Node, prev_value: Option<&str>, prev_index: Option<u64>) -> Result<(), String> {
    let prev_value = prev_value.filter(|v| !v.is_empty());
    let prev_index = prev_index.filter(|i| *i > 0);
    let value_ok = prev_value.is_none_or(|v| node.value() == v);
    let index_ok = prev_index.is_none_or(|i| node.modified_index == i);
    match (value_ok, index_ok) {
        (true, true) => Ok(()),
        (false, true) => Err(format!(
            "[{} != {}]",
            prev_value.unwrap_or(""),
            node.value()
        )),
        (true, false) => Err(format!(
            "[{} != {}]",
            prev_index.unwrap_or(0),
            node.modified_index
        )),
        (false, false) => Err(format!(
            "[{} != {}] [{} != {}]",
            prev_value.unwrap_or(""),
            node.value(),
            prev_index.unwrap_or(0),
            node.modified_index
        )),
    }
}

impl Store {
    /// An empty store at index 0.
    pub fn new() -> Store {
        Store {
            tree: Tree::default(),
            index: 0,
            clock: UnixNanos(0),
            ttl_by_time: BTreeSet::new(),
            ttl_by_key: BTreeMap::new(),
            history: History::default(),
            hub: Arc::new(Hub::default()),
            stats: Stats::default(),
        }
    }

    /// The etcd index (`X-Etcd-Index`): the index of the last applied write.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The latest proposer clock carried by an applied command; [`Store::get`] renders
    /// `ttl` against it.
    pub fn clock(&self) -> UnixNanos {
        self.clock
    }

    /// Number of nodes (files and directories, the root excluded).
    pub fn node_count(&self) -> u64 {
        self.tree.count_nodes()
    }

    /// Number of pending watchers on this store.
    pub fn watcher_count(&self) -> u64 {
        self.hub.count()
    }

    /// The earliest expiration of any node, if any has a TTL: the leader need not
    /// propose a [`Command::Sync`] before it.
    pub fn next_expiration(&self) -> Option<UnixNanos> {
        self.ttl_by_time.first().map(|(t, _)| UnixNanos(*t))
    }

    /// Applies one replicated command. Deterministic: the same command on the same state
    /// gives the same result and state on every member. Successful writes consume one
    /// index, are recorded in the history and notify watchers (refreshes excepted).
    /// A [`Command::Sync`] returns an [`Action::Sync`] event (use [`Store::expire`] to get
    /// the individual `expire` events).
    pub fn apply(&mut self, cmd: &Command) -> Result<Event, StoreError> {
        self.clock = self.clock.max(cmd.now());
        match cmd {
            Command::Set {
                key,
                value,
                dir,
                ttl,
                refresh,
                now,
            } => {
                let r = self.set(key, value, *dir, *ttl, *refresh, *now);
                self.stats.count(Counter::Set, r.is_ok());
                r
            }
            Command::Create {
                key,
                value,
                dir,
                ttl,
                now,
            } => {
                let r = self.create(key, value, *dir, *ttl, false, *now);
                self.stats.count(Counter::Create, r.is_ok());
                r
            }
            Command::CreateInOrder {
                dir_key,
                value,
                dir,
                ttl,
                now,
            } => {
                let r = self.create(dir_key, value, *dir, *ttl, true, *now);
                self.stats.count(Counter::Create, r.is_ok());
                r
            }
            Command::Update {
                key,
                value,
                ttl,
                refresh,
                now,
            } => {
                let r = self.update(key, value, *ttl, *refresh, *now);
                self.stats.count(Counter::Update, r.is_ok());
                r
            }
            Command::CompareAndSwap {
                key,
                value,
                prev_value,
                prev_index,
                ttl,
                refresh,
                now,
            } => {
                let r = self.compare_and_swap(
                    key,
                    value,
                    prev_value.as_deref(),
                    *prev_index,
                    *ttl,
                    *refresh,
                    *now,
                );
                self.stats.count(Counter::CompareAndSwap, r.is_ok());
                r
            }
            Command::Delete {
                key,
                dir,
                recursive,
                now,
            } => {
                let r = self.delete(key, *dir, *recursive, *now);
                self.stats.count(Counter::Delete, r.is_ok());
                r
            }
            Command::CompareAndDelete {
                key,
                prev_value,
                prev_index,
                now,
            } => {
                let r = self.compare_and_delete(key, prev_value.as_deref(), *prev_index, *now);
                self.stats.count(Counter::CompareAndDelete, r.is_ok());
                r
            }
            Command::Sync { now } => {
                self.expire(*now);
                Ok(Event {
                    action: Action::Sync,
                    node: NodeExtern {
                        dir: true,
                        ..NodeExtern::default()
                    },
                    prev_node: None,
                    etcd_index: self.index,
                })
            }
        }
    }

    /// Decodes and applies an encoded command ([`Command::encode`]).
    pub fn apply_bytes(&mut self, bytes: &[u8]) -> Result<Event, StoreError> {
        let cmd = Command::decode(bytes)?;
        self.apply(&cmd)
    }

    /// Reads a key, rendering `ttl` against the latest applied clock ([`Store::clock`]).
    /// See [`Store::get_at`].
    pub fn get(&self, key: &str, recursive: bool, sorted: bool) -> Result<Event, StoreError> {
        self.get_at(key, recursive, sorted, self.clock)
    }

    /// Reads a key (etcd `get`), rendering `ttl` against `now` (the server passes its wall
    /// clock so `ttl` counts down between syncs). A directory lists its visible children
    /// (all levels with `recursive`), always in byte order (`sorted` is accepted for the
    /// API's sake: byte order is a valid answer to an unsorted read). Counts in the stats.
    pub fn get_at(
        &self,
        key: &str,
        recursive: bool,
        sorted: bool,
        now: UnixNanos,
    ) -> Result<Event, StoreError> {
        let _ = sorted;
        let key = path::clean_key_cow(key);
        match self.tree.get(&key) {
            Ok(node) => {
                self.stats.count(Counter::Get, true);
                let shown_key = if key == "/" { "" } else { &*key };
                let node = if node.is_dir() {
                    node.to_listing(shown_key, recursive, now)
                } else {
                    node.to_extern(shown_key, now)
                };
                Ok(Event {
                    action: Action::Get,
                    node,
                    prev_node: None,
                    etcd_index: self.index,
                })
            }
            Err(e) => {
                self.stats.count(Counter::Get, false);
                Err(walk_error(e, self.index))
            }
        }
    }

    /// Registers a watch on `key` (etcd `Watch`): `recursive` also matches descendants
    /// (hidden ones excepted), `stream` keeps the watcher for many events, `since_index`
    /// (`waitIndex`; `None`/0 = the next change) may reach back into the last 1000 events.
    /// Errors with 401 if `since_index` is older than the history. See
    /// [`crate::store::watch`] for the rules. A one-shot watch answered from history is not
    /// registered (it holds its event).
    pub fn watch(
        &self,
        key: &str,
        recursive: bool,
        stream: bool,
        since_index: Option<u64>,
    ) -> Result<Watcher, StoreError> {
        let key = path::clean_key(key);
        let since = since_index.filter(|i| *i > 0).unwrap_or(self.index + 1);
        let limit = if stream { usize::MAX } else { 1 };
        let hits = self
            .history
            .scan(&key, recursive, since, self.index, limit)?;
        // A history hit reports the current index (etcd clones the event with it).
        let hits: Vec<Arc<Event>> = hits
            .into_iter()
            .map(|e| {
                let mut e = Event::clone(&e);
                e.etcd_index = self.index;
                Arc::new(e)
            })
            .collect();
        if !stream && !hits.is_empty() {
            return Ok(Hub::answered(hits, self.index));
        }
        let live_since = since.max(self.index + 1);
        Ok(self
            .hub
            .register(key, recursive, stream, live_since, self.index, hits))
    }

    /// Counters for `/v2/stats/store`.
    pub fn stats(&self) -> StoreStats {
        self.stats.snapshot(self.hub.count())
    }

    /// [`Store::stats`] as JSON (etcd's field names).
    pub fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).unwrap_or_default()
    }

    /// Expires every node whose expiration is `<= now`, in (expiration, key) order, each
    /// consuming one index and producing one `expire` event (a directory expires with its
    /// whole subtree as one event). Returns the events. This is what [`Command::Sync`]
    /// does; call it only through the replicated log.
    pub fn expire(&mut self, now: UnixNanos) -> Vec<Event> {
        self.clock = self.clock.max(now);
        let mut events = Vec::new();
        while let Some((expiration, key)) = self.ttl_by_time.first().cloned() {
            if expiration > now.0 {
                break;
            }
            self.ttl_by_time.remove(&(expiration, key.clone()));
            self.ttl_by_key.remove(&key);
            let Some(node) = self.tree.remove(&key) else {
                continue;
            };
            self.forget_ttls_below(&key, &node);
            let next = self.index + 1;
            let event = Event {
                action: Action::Expire,
                node: NodeExtern {
                    key: key.clone(),
                    dir: node.is_dir(),
                    modified_index: next,
                    created_index: node.created_index,
                    ..NodeExtern::default()
                },
                prev_node: Some(node.to_extern(&key, now)),
                etcd_index: next,
            };
            self.index = next;
            self.stats.count_expire();
            events.push(self.record(event, false, Some(&node)));
        }
        events
    }

    // ----------------------------------------------------------------------------------
    // Writes. Each follows etcd's order of checks.
    // ----------------------------------------------------------------------------------

    /// etcd `Set`: create or replace a file, or create a directory (`dir`).
    ///
    /// Quirks kept: the new node is a *new* node (`createdIndex` = the new index) even when
    /// it replaces a file or refreshes it; `dir=true` on an existing file replaces it with
    /// an empty directory; any existing directory is 102.
    fn set(
        &mut self,
        key: &str,
        value: &str,
        dir: bool,
        ttl: Option<u64>,
        refresh: bool,
        now: UnixNanos,
    ) -> Result<Event, StoreError> {
        let key = path::clean_key(key);
        let next = self.index + 1;
        let current = self.index;
        let expiration = ttl.map(|t| now.plus_seconds(t));
        let new_node = |value: &str| {
            if dir {
                Node::new_dir(next, expiration)
            } else {
                Node::new_file(next, value, expiration)
            }
        };
        // One walk: an existing file is overwritten through the `&mut` the walk found
        // (its parents exist and their indexes do not change); otherwise the walk's error
        // says whether to create the node or fail.
        let (shown, prev) = match self.tree.get_mut(&key) {
            Ok(slot) => {
                if key == "/" {
                    return Err(StoreError::new(ErrorCode::RootReadOnly, "/", current));
                }
                if slot.is_dir() {
                    return Err(StoreError::new(ErrorCode::NotFile, key, current));
                }
                let node = if refresh {
                    new_node(slot.value())
                } else {
                    new_node(value)
                };
                let shown = node.to_extern(&key, now);
                let prev = (slot.to_extern(&key, now), slot.expiration());
                *slot = node;
                (shown, Some(prev))
            }
            Err(WalkError::NotFound(cause)) => {
                if refresh {
                    return Err(StoreError::new(ErrorCode::KeyNotFound, cause, current));
                }
                self.check_depth(&key)?;
                let node = new_node(value);
                let shown = node.to_extern(&key, now);
                self.insert_new(&key, node, next)?;
                (shown, None)
            }
            Err(e) => return Err(walk_error(e, current)),
        };
        if let Some((_, Some(_))) = &prev {
            self.forget_ttl(&key);
        }
        self.remember_ttl(&key, expiration);
        self.index = next;
        let event = Event {
            action: Action::Set,
            node: shown,
            prev_node: prev.map(|(p, _)| p),
            etcd_index: next,
        };
        Ok(self.record(event, refresh, None))
    }

    /// etcd `Create` (`prevExist=false`, and POST with `unique`): the key must not exist;
    /// missing parent directories are created with the new index. With `unique` the key
    /// is `key/<new index, 20 digits>`.
    fn create(
        &mut self,
        key: &str,
        value: &str,
        dir: bool,
        ttl: Option<u64>,
        unique: bool,
        now: UnixNanos,
    ) -> Result<Event, StoreError> {
        let next = self.index + 1;
        let key = if unique {
            path::join(&path::clean_key(key), &format!("{next:020}"))
        } else {
            path::clean_key(key)
        };
        if key == "/" {
            return Err(StoreError::new(ErrorCode::RootReadOnly, "/", self.index));
        }
        if let Err(file) = self.tree.check_parents(&key) {
            return Err(StoreError::new(ErrorCode::NotDir, file, self.index));
        }
        if self.tree.get(&key).is_ok() {
            return Err(StoreError::new(ErrorCode::NodeExist, key, self.index));
        }
        self.check_depth(&key)?;
        let expiration = ttl.map(|t| now.plus_seconds(t));
        let node = if dir {
            Node::new_dir(next, expiration)
        } else {
            Node::new_file(next, value, expiration)
        };
        let shown = node.to_extern(&key, now);
        self.insert_new(&key, node, next)?;
        self.remember_ttl(&key, expiration);
        self.index = next;
        let event = Event {
            action: Action::Create,
            node: shown,
            prev_node: None,
            etcd_index: next,
        };
        Ok(self.record(event, false, None))
    }

    /// etcd `Update` (`prevExist=true`): the key must exist. A file gets the value and
    /// TTL, keeping `createdIndex`. A directory accepts only an empty value and changes
    /// only its TTL; quirk kept: its *stored* `modifiedIndex` does not move, although the
    /// event shows the new index.
    fn update(
        &mut self,
        key: &str,
        value: &str,
        ttl: Option<u64>,
        refresh: bool,
        now: UnixNanos,
    ) -> Result<Event, StoreError> {
        let key = path::clean_key(key);
        if key == "/" {
            return Err(StoreError::new(ErrorCode::RootReadOnly, "/", self.index));
        }
        let index = self.index;
        let next = index + 1;
        let node = self.tree.get_mut(&key).map_err(|e| walk_error(e, index))?;
        if node.is_dir() && !value.is_empty() {
            return Err(StoreError::new(ErrorCode::NotFile, key, index));
        }
        let prev = node.to_extern(&key, now);
        let expiration = ttl.map(|t| now.plus_seconds(t));
        if let Kind::File(old) = &mut node.kind {
            if !refresh {
                *old = value.into();
            }
            node.modified_index = next;
        }
        node.set_expiration(expiration);
        let mut shown = node.to_extern(&key, now);
        shown.modified_index = next;
        let old_expiration = prev.expiration;
        if old_expiration.is_some() {
            self.forget_ttl(&key);
        }
        self.remember_ttl(&key, expiration);
        self.index = next;
        let event = Event {
            action: Action::Update,
            node: shown,
            prev_node: Some(prev),
            etcd_index: next,
        };
        Ok(self.record(event, refresh, None))
    }

    /// etcd `CompareAndSwap`: the key must exist and be a file, and every given condition
    /// must hold (else 101 with the cause `[prevValue != value]`, `[prevIndex !=
    /// modifiedIndex]` or both). Keeps `createdIndex`.
    #[allow(clippy::too_many_arguments)] // reason: mirrors the command's fields one to one
    fn compare_and_swap(
        &mut self,
        key: &str,
        value: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        ttl: Option<u64>,
        refresh: bool,
        now: UnixNanos,
    ) -> Result<Event, StoreError> {
        let key = path::clean_key(key);
        if key == "/" {
            return Err(StoreError::new(ErrorCode::RootReadOnly, "/", self.index));
        }
        let index = self.index;
        let next = index + 1;
        let node = self.tree.get_mut(&key).map_err(|e| walk_error(e, index))?;
        if node.is_dir() {
            return Err(StoreError::new(ErrorCode::NotFile, key, index));
        }
        compare(node, prev_value, prev_index)
            .map_err(|cause| StoreError::new(ErrorCode::TestFailed, cause, index))?;
        let prev = node.to_extern(&key, now);
        let expiration = ttl.map(|t| now.plus_seconds(t));
        if !refresh {
            node.kind = Kind::File(value.into());
        }
        node.modified_index = next;
        node.set_expiration(expiration);
        let shown = node.to_extern(&key, now);
        if prev.expiration.is_some() {
            self.forget_ttl(&key);
        }
        self.remember_ttl(&key, expiration);
        self.index = next;
        let event = Event {
            action: Action::CompareAndSwap,
            node: shown,
            prev_node: Some(prev),
            etcd_index: next,
        };
        Ok(self.record(event, refresh, None))
    }

    /// etcd `Delete`: a file regardless of `dir`; a directory needs `dir` (else 102) and,
    /// if it has children, `recursive` (else 108). `recursive` implies `dir`.
    fn delete(
        &mut self,
        key: &str,
        dir: bool,
        recursive: bool,
        now: UnixNanos,
    ) -> Result<Event, StoreError> {
        let key = path::clean_key(key);
        if key == "/" {
            return Err(StoreError::new(ErrorCode::RootReadOnly, "/", self.index));
        }
        let dir = dir || recursive;
        let node = self.tree.get(&key).map_err(|e| walk_error(e, self.index))?;
        if let Some(children) = node.children() {
            if !dir {
                return Err(StoreError::new(ErrorCode::NotFile, key, self.index));
            }
            if !children.is_empty() && !recursive {
                return Err(StoreError::new(ErrorCode::DirNotEmpty, key, self.index));
            }
        }
        Ok(self.remove_with_event(key, Action::Delete, now))
    }

    /// etcd `CompareAndDelete`: a file whose conditions hold (see compare-and-swap).
    /// Quirk kept: no root check, so the root is a directory: 102 with an empty cause.
    fn compare_and_delete(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        now: UnixNanos,
    ) -> Result<Event, StoreError> {
        let key = path::clean_key(key);
        let node = self.tree.get(&key).map_err(|e| walk_error(e, self.index))?;
        if node.is_dir() {
            let cause = if key == "/" { String::new() } else { key };
            return Err(StoreError::new(ErrorCode::NotFile, cause, self.index));
        }
        compare(node, prev_value, prev_index)
            .map_err(|cause| StoreError::new(ErrorCode::TestFailed, cause, self.index))?;
        Ok(self.remove_with_event(key, Action::CompareAndDelete, now))
    }

    // ----------------------------------------------------------------------------------
    // Helpers.
    // ----------------------------------------------------------------------------------

    /// Removes an existing node (checked by the caller) and records the event.
    fn remove_with_event(&mut self, key: String, action: Action, now: UnixNanos) -> Event {
        let next = self.index + 1;
        let Some(node) = self.tree.remove(&key) else {
            // Unreachable: the caller found the node. Answer as etcd would for a missing key.
            return Event {
                action,
                node: NodeExtern::default(),
                prev_node: None,
                etcd_index: self.index,
            };
        };
        self.forget_ttls_below(&key, &node);
        let event = Event {
            action,
            node: NodeExtern {
                key: key.clone(),
                dir: node.is_dir(),
                modified_index: next,
                created_index: node.created_index,
                ..NodeExtern::default()
            },
            prev_node: Some(node.to_extern(&key, now)),
            etcd_index: next,
        };
        self.index = next;
        self.record(event, false, Some(&node))
    }

    /// Refuses keys deeper than [`MAX_KEY_DEPTH`].
    fn check_depth(&self, key: &str) -> Result<(), StoreError> {
        if path::depth(key) > MAX_KEY_DEPTH {
            return Err(StoreError::new(
                ErrorCode::InvalidField,
                format!("key has more than {MAX_KEY_DEPTH} path segments"),
                self.index,
            ));
        }
        Ok(())
    }

    /// Inserts a new node at `key` (absent, parents checked), creating parents.
    fn insert_new(&mut self, key: &str, node: Node, index: u64) -> Result<(), StoreError> {
        let current = self.index;
        let name = last_segment(key)
            .ok_or_else(|| StoreError::new(ErrorCode::RootReadOnly, "/", current))?;
        let children = self
            .tree
            .parent_children_mut(key, index)
            .map_err(|file| StoreError::new(ErrorCode::NotDir, file, current))?;
        children.insert(Name::from(name), node);
        Ok(())
    }

    fn remember_ttl(&mut self, key: &str, expiration: Option<UnixNanos>) {
        if let Some(e) = expiration {
            // Stored expirations are never 0 (see `tree::Node`).
            let e = e.0.max(1);
            self.ttl_by_time.insert((e, key.to_owned()));
            self.ttl_by_key.insert(key.to_owned(), e);
        }
    }

    fn forget_ttl(&mut self, key: &str) {
        if let Some(e) = self.ttl_by_key.remove(key) {
            self.ttl_by_time.remove(&(e, key.to_owned()));
        }
    }

    /// Drops the TTL entries of a detached subtree rooted at `key`.
    fn forget_ttls_below(&mut self, key: &str, node: &Node) {
        if node.expiration.is_some() {
            self.forget_ttl(key);
        }
        if !node.is_dir() || self.ttl_by_key.is_empty() {
            return;
        }
        let lower = format!("{key}/");
        let upper = format!("{key}0");
        let doomed: Vec<(String, u64)> = self
            .ttl_by_key
            .range(lower..upper)
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        for (k, e) in doomed {
            self.ttl_by_key.remove(&k);
            self.ttl_by_time.remove(&(e, k));
        }
    }

    /// Records an applied event in the history and notifies watchers (not for refreshes).
    fn record(&mut self, event: Event, refresh: bool, removed: Option<&Node>) -> Event {
        let shared = Arc::new(event);
        self.history.push(Arc::clone(&shared), refresh);
        if !refresh {
            self.hub.notify(&shared, removed);
        }
        Event::clone(&shared)
    }

    /// Checks the store's invariants (tree structure, TTL index = nodes with TTL, history
    /// contiguity); returns the first violation. For tests and debugging; O(size).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.tree.check_invariants()?;
        let mut with_ttl = BTreeMap::new();
        let mut max_modified = 0u64;
        Tree::walk("", &self.tree.root, |key, node, _| {
            if let Some(e) = node.expiration {
                with_ttl.insert(key.to_owned(), e.get());
            }
            max_modified = max_modified.max(node.modified_index);
        });
        if with_ttl != self.ttl_by_key {
            return Err(format!(
                "TTL index by key {:?} != nodes with TTL {:?}",
                self.ttl_by_key, with_ttl
            ));
        }
        let by_time: BTreeSet<(u64, String)> = with_ttl.into_iter().map(|(k, e)| (e, k)).collect();
        if by_time != self.ttl_by_time {
            return Err("TTL index by time differs from nodes with TTL".to_owned());
        }
        if max_modified > self.index {
            return Err(format!(
                "a node has modifiedIndex {max_modified} > index {}",
                self.index
            ));
        }
        let mut expected = self.history.start_index();
        for entry in &self.history.entries {
            if entry.event.index() != expected {
                return Err(format!(
                    "history not contiguous: {} where {expected} expected",
                    entry.event.index()
                ));
            }
            expected += 1;
        }
        if !self.history.entries.is_empty() && expected != self.index + 1 {
            return Err(format!(
                "history ends at {} but index is {}",
                expected - 1,
                self.index
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_watcher_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Store>();
        send::<Watcher>();
    }
}
