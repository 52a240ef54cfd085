//! Watches: the event history and the hub that delivers applied events to watchers.
//!
//! **History.** The last [`HISTORY_CAPACITY`] (1000, etcd's) events are kept, one per
//! consumed index, so they are contiguous. A watch from `waitIndex = W` first scans the
//! history: `W` older than the oldest retained event is errorCode 401 (cause
//! `the requested history has been cleared [<oldest>/<W>]`, index = current index); the
//! first matching event with index `>= W` is answered at once; otherwise the watcher
//! waits for a future event with index `>= W`. Refresh events are kept in the history (they
//! consume indexes) but never match. As in etcd, the history scan differs from live
//! delivery in one way: a recursive scan also matches hidden keys.
//!
//! **Live delivery** (etcd's `watcherHub.notify`): an event on key `K` reaches
//! - watchers on `K` itself;
//! - recursive watchers on an ancestor of `K`, unless the part of `K` below the watched
//!   key has a hidden (`_`) segment;
//! - for delete, compare-and-delete and expire: watchers on any key that existed in the
//!   removed subtree (so a watcher of `/d/x` sees the `delete` of `/d`, with `/d` as node).
//!
//! Each watcher receives an event at most once (etcd 3.4 delivers a delete twice to a
//! stream watcher on the deleted key itself; we do not copy that bug).
//!
//! **Watchers** are not replicated state: they live on the member that registered them.
//! A one-shot watcher is removed from the hub by its first event; a stream watcher stays
//! until it is dropped or its buffer of [`STREAM_BUFFER`] undelivered events overflows,
//! which closes it (as etcd does), so a slow consumer cannot grow memory without bound.
//! Dropping a [`Watcher`] unregisters it (the server drops it when the client goes away).
//! [`Watcher::next`] is an `async fn` that needs no particular runtime; the blocking
//! variants park the thread.

use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::error::{ErrorCode, StoreError};
use super::event::{Action, Event};
use super::path;
use super::tree::{Kind, Node};

/// Events kept for `waitIndex` scans (etcd's history size).
pub const HISTORY_CAPACITY: usize = 1000;

/// Undelivered events a stream watcher may hold before it is closed (etcd's channel size).
pub const STREAM_BUFFER: usize = 100;

/// One event in the history; refresh events are kept but never delivered.
#[derive(Clone, Debug)]
pub(crate) struct HistoryEntry {
    pub event: Arc<Event>,
    pub refresh: bool,
}

/// The last [`HISTORY_CAPACITY`] events, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    pub entries: VecDeque<HistoryEntry>,
}

impl History {
    /// Appends an event, dropping the oldest beyond capacity.
    pub fn push(&mut self, event: Arc<Event>, refresh: bool) {
        if self.entries.len() >= HISTORY_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(HistoryEntry { event, refresh });
    }

    /// Index of the oldest retained event (0 when empty, as etcd's `StartIndex`).
    pub fn start_index(&self) -> u64 {
        self.entries.front().map_or(0, |e| e.event.index())
    }

    /// Every retained, non-refresh event with index `>= since` matching a watch on `key`
    /// (at most `limit`), or errorCode 401 if `since` is older than the history.
    pub fn scan(
        &self,
        key: &str,
        recursive: bool,
        since: u64,
        current_index: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let start = self.start_index();
        if since < start {
            return Err(StoreError::new(
                ErrorCode::EventIndexCleared,
                format!("the requested history has been cleared [{start}/{since}]"),
                current_index,
            ));
        }
        let first = self.entries.partition_point(|e| e.event.index() < since);
        Ok(self
            .entries
            .range(first..)
            .filter(|e| !e.refresh && history_matches(&e.event, key, recursive))
            .take(limit)
            .map(|e| Arc::clone(&e.event))
            .collect())
    }
}

/// etcd's `EventHistory.scan` match rule (with a component-wise ancestor check).
fn history_matches(event: &Event, key: &str, recursive: bool) -> bool {
    let event_key = event.node.key.as_str();
    if event_key == key {
        return true;
    }
    if recursive && path::is_self_or_descendant(event_key, key) {
        return true;
    }
    if matches!(event.action, Action::Delete | Action::Expire) {
        if let Some(prev) = &event.prev_node {
            if prev.dir && path::is_self_or_descendant(key, &prev.key) {
                return true;
            }
        }
    }
    false
}

/// The delivery state shared by a [`Watcher`] and the hub.
#[derive(Debug, Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct MailboxState {
    queue: VecDeque<Arc<Event>>,
    /// No more events will arrive (one-shot fired, overflow, store gone, unregistered).
    closed: bool,
    /// Closed because the stream buffer overflowed.
    overflowed: bool,
    waker: Option<Waker>,
}

impl Mailbox {
    /// Queues an event; closes after it if `close`. Returns false (and closes) if a
    /// stream buffer is full. The waker to wake is pushed to `wake`: the caller wakes it
    /// after releasing the hub's lock (a waker may run arbitrary code, e.g. drop a
    /// watcher, which takes that lock).
    fn deliver(&self, event: &Arc<Event>, close: bool, wake: &mut Vec<Waker>) -> bool {
        let ok;
        {
            let mut st = self.state.lock();
            if st.closed {
                return false;
            }
            if st.queue.len() >= STREAM_BUFFER {
                st.closed = true;
                st.overflowed = true;
                ok = false;
            } else {
                st.queue.push_back(Arc::clone(event));
                st.closed = close;
                ok = true;
            }
            wake.extend(st.waker.take());
        }
        self.ready.notify_all();
        ok
    }

    /// Marks the mailbox finished; the waker goes to `wake` (see [`Mailbox::deliver`]).
    fn close(&self, wake: &mut Vec<Waker>) {
        {
            let mut st = self.state.lock();
            st.closed = true;
            wake.extend(st.waker.take());
        }
        self.ready.notify_all();
    }
}

/// A registered watcher as the hub sees it.
#[derive(Debug)]
struct Entry {
    id: u64,
    recursive: bool,
    stream: bool,
    since_index: u64,
    mailbox: Arc<Mailbox>,
}

#[derive(Debug, Default)]
struct HubInner {
    /// Watchers by the (cleaned) key they watch.
    by_key: BTreeMap<String, Vec<Entry>>,
    next_id: u64,
}

/// Registered watchers of one store (shared with its [`Watcher`]s).
#[derive(Debug, Default)]
pub(crate) struct Hub {
    inner: Mutex<HubInner>,
    count: AtomicU64,
}

impl Hub {
    /// Number of registered (pending) watchers.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Registers a watcher; `prefill` events are queued first (a history catch-up).
    pub fn register(
        self: &Arc<Self>,
        key: String,
        recursive: bool,
        stream: bool,
        since_index: u64,
        start_index: u64,
        prefill: Vec<Arc<Event>>,
    ) -> Watcher {
        let mailbox = Arc::new(Mailbox::default());
        mailbox.state.lock().queue.extend(prefill);
        let mut inner = self.inner.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.by_key.entry(key.clone()).or_default().push(Entry {
            id,
            recursive,
            stream,
            since_index,
            mailbox: Arc::clone(&mailbox),
        });
        self.count.fetch_add(1, Ordering::Relaxed);
        Watcher {
            mailbox,
            registration: Some(Registration {
                hub: Arc::clone(self),
                key,
                id,
            }),
            start_index,
            stream,
        }
    }

    /// A watcher answered from history: holds its events and is not registered.
    pub fn answered(events: Vec<Arc<Event>>, start_index: u64) -> Watcher {
        let mailbox = Arc::new(Mailbox::default());
        {
            let mut st = mailbox.state.lock();
            st.queue.extend(events);
            st.closed = true;
        }
        Watcher {
            mailbox,
            registration: None,
            start_index,
            stream: false,
        }
    }

    fn unregister(&self, key: &str, id: u64) {
        let mut inner = self.inner.lock();
        if let Some(list) = inner.by_key.get_mut(key) {
            if let Some(pos) = list.iter().position(|e| e.id == id) {
                list.remove(pos);
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            if list.is_empty() {
                inner.by_key.remove(key);
            }
        }
    }

    /// Closes and forgets every watcher (the store is going away).
    pub fn close_all(&self) {
        let mut wake = Vec::new();
        {
            let mut inner = self.inner.lock();
            for list in std::mem::take(&mut inner.by_key).into_values() {
                for entry in list {
                    entry.mailbox.close(&mut wake);
                    self.count.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        wake.into_iter().for_each(Waker::wake);
    }

    /// Delivers an applied event (see the module documentation). `removed` is the
    /// subtree a delete/expire detached, to reach watchers of keys inside it.
    pub fn notify(&self, event: &Arc<Event>, removed: Option<&Node>) {
        if self.count() == 0 {
            return;
        }
        let key = event.node.key.as_str();
        let index = event.index();
        let mut wake: Vec<Waker> = Vec::new();
        let mut inner = self.inner.lock();
        let mut emptied: Vec<String> = Vec::new();

        // Watchers of keys strictly inside a removed directory.
        if let Some(Node {
            kind: Kind::Dir(_), ..
        }) = removed
        {
            let lower = format!("{key}/");
            let upper = format!("{key}0"); // '0' is the byte after '/'
            for (watched, list) in inner.by_key.range_mut::<str, _>((
                Bound::Included(lower.as_str()),
                Bound::Excluded(upper.as_str()),
            )) {
                let relative = watched.get(key.len()..).unwrap_or("");
                if removed.is_some_and(|n| exists_below(n, relative)) {
                    self.deliver_to(list, event, index, |_| true, &mut wake);
                    if list.is_empty() {
                        emptied.push(watched.clone());
                    }
                }
            }
        }

        // Watchers on the key and its ancestors.
        for watched in path::ancestors_and_self(key) {
            let Some(list) = inner.by_key.get_mut(watched) else {
                continue;
            };
            let original = watched == key;
            if !original && path::hidden_below(watched, key) {
                continue;
            }
            self.deliver_to(list, event, index, |e| original || e.recursive, &mut wake);
            if list.is_empty() {
                emptied.push(watched.to_owned());
            }
        }
        for k in emptied {
            inner.by_key.remove(&k);
        }
        drop(inner);
        wake.into_iter().for_each(Waker::wake);
    }

    fn deliver_to(
        &self,
        list: &mut Vec<Entry>,
        event: &Arc<Event>,
        index: u64,
        interested: impl Fn(&Entry) -> bool,
        wake: &mut Vec<Waker>,
    ) {
        list.retain(|entry| {
            if index < entry.since_index || !interested(entry) {
                return true;
            }
            let delivered = entry.mailbox.deliver(event, !entry.stream, wake);
            let keep = entry.stream && delivered;
            if !keep {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
    }
}

/// True if the path `relative` (`/x/y`) exists below `node`.
fn exists_below(node: &Node, relative: &str) -> bool {
    let mut cur = node;
    for seg in path::segments(relative) {
        match cur.children().and_then(|c| c.get(seg.as_bytes())) {
            Some(child) => cur = child,
            None => return false,
        }
    }
    true
}

#[derive(Debug)]
struct Registration {
    hub: Arc<Hub>,
    key: String,
    id: u64,
}

/// A pending watch (etcd's `Watcher`): yields the events it matched, then `None`.
///
/// A one-shot watcher yields one event; a stream watcher yields events until it is
/// dropped, its store goes away, or it overflows ([`Watcher::overflowed`]). Dropping it
/// unregisters it from the store at once.
#[derive(Debug)]
pub struct Watcher {
    mailbox: Arc<Mailbox>,
    registration: Option<Registration>,
    start_index: u64,
    stream: bool,
}

/// What [`Watcher::try_next`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryNext {
    /// An event (boxed: events are large next to the other variants).
    Event(Box<Event>),
    /// Nothing yet; the watcher is still open.
    Pending,
    /// The watcher is finished.
    Closed,
}

impl Watcher {
    /// The etcd index when the watch was registered: the `X-Etcd-Index` header of the
    /// watch response (sent before any event).
    pub fn start_index(&self) -> u64 {
        self.start_index
    }

    /// True for a stream (`stream=true`) watcher.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// True if the watcher was closed because its buffer overflowed.
    pub fn overflowed(&self) -> bool {
        self.mailbox.state.lock().overflowed
    }

    /// The next event, or `None` when the watcher is finished. Runtime-agnostic.
    pub async fn next(&mut self) -> Option<Event> {
        poll_fn(|cx| {
            let mut st = self.mailbox.state.lock();
            if let Some(ev) = st.queue.pop_front() {
                return Poll::Ready(Some(Arc::unwrap_or_clone(ev)));
            }
            if st.closed {
                return Poll::Ready(None);
            }
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Takes an event if one is queued, without waiting.
    pub fn try_next(&mut self) -> TryNext {
        let mut st = self.mailbox.state.lock();
        match st.queue.pop_front() {
            Some(ev) => TryNext::Event(Box::new(Arc::unwrap_or_clone(ev))),
            None if st.closed => TryNext::Closed,
            None => TryNext::Pending,
        }
    }

    /// Blocks the thread until the next event or the end of the watcher.
    pub fn next_blocking(&mut self) -> Option<Event> {
        let mut st = self.mailbox.state.lock();
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Some(Arc::unwrap_or_clone(ev));
            }
            if st.closed {
                return None;
            }
            self.mailbox.ready.wait(&mut st);
        }
    }

    /// Like [`Watcher::next_blocking`] but gives up after `timeout` with
    /// [`TryNext::Pending`].
    pub fn next_timeout(&mut self, timeout: Duration) -> TryNext {
        let deadline = Instant::now() + timeout;
        let mut st = self.mailbox.state.lock();
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return TryNext::Event(Box::new(Arc::unwrap_or_clone(ev)));
            }
            if st.closed {
                return TryNext::Closed;
            }
            if self.mailbox.ready.wait_until(&mut st, deadline).timed_out() {
                return TryNext::Pending;
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(reg) = self.registration.take() {
            reg.hub.unregister(&reg.key, reg.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::event::NodeExtern;

    fn ev(action: Action, key: &str, index: u64) -> Arc<Event> {
        Arc::new(Event {
            action,
            node: NodeExtern {
                key: key.into(),
                modified_index: index,
                created_index: index,
                ..NodeExtern::default()
            },
            prev_node: None,
            etcd_index: index,
        })
    }

    #[test]
    fn history_keeps_the_last_thousand() {
        let mut h = History::default();
        for i in 1..=1005 {
            h.push(ev(Action::Set, "/k", i), false);
        }
        assert_eq!(h.start_index(), 6);
        let err = h.scan("/k", false, 5, 1005, 1).unwrap_err();
        assert_eq!(err.code, 401);
        assert_eq!(err.cause, "the requested history has been cleared [6/5]");
        assert_eq!(err.index, 1005);
        assert_eq!(h.scan("/k", false, 6, 1005, 1).unwrap()[0].index(), 6);
        assert!(h.scan("/k", false, 1006, 1005, 1).unwrap().is_empty());
    }

    #[test]
    fn stream_overflow_closes_watcher() {
        let hub = Arc::new(Hub::default());
        let mut w = hub.register("/k".into(), false, true, 1, 0, Vec::new());
        for i in 1..=(STREAM_BUFFER as u64 + 1) {
            hub.notify(&ev(Action::Set, "/k", i), None);
        }
        assert_eq!(hub.count(), 0, "overflowed watcher is unregistered");
        assert!(w.overflowed());
        let mut n = 0;
        while w.next_blocking().is_some() {
            n += 1;
        }
        assert_eq!(n, STREAM_BUFFER);
    }

    #[test]
    fn drop_unregisters() {
        let hub = Arc::new(Hub::default());
        let w1 = hub.register("/k".into(), false, false, 1, 0, Vec::new());
        let w2 = hub.register("/k".into(), true, false, 1, 0, Vec::new());
        assert_eq!(hub.count(), 2);
        drop(w1);
        assert_eq!(hub.count(), 1);
        drop(w2);
        assert_eq!(hub.count(), 0);
        assert!(hub.inner.lock().by_key.is_empty());
    }
}
