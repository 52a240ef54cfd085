//! The etcd v2 keys model as a deterministic, replicated state machine.
//!
//! [`Store`] is what every member of the cluster applies, in log order, to answer the v2
//! keys API exactly as etcd 3.4 (`--enable-v2`) does. The Raft node applies
//! [`Command`]s with [`Store::apply`]; the HTTP server reads with [`Store::get_at`],
//! registers watches with [`Store::watch`] and renders [`Event`] / [`StoreError`] as the
//! JSON bodies etcd sends.
//!
//! # Data model
//!
//! A tree of *files* (a string value) and *directories*, addressed by absolute keys that
//! are cleaned as etcd cleans them (`/a//b/` is `/a/b`, see [`path`]). The root `/` is a
//! directory that cannot be written or deleted. Writing `/a/b/c` creates missing `/a` and
//! `/a/b` as permanent directories stamped with that write's index. A segment starting
//! with `_` is hidden from listings and from recursive watches on ancestors. Nodes are
//! compact (48 bytes, plus the name — inline up to 22 bytes — and the value) and
//! directories keep children in a `BTreeMap`, so listings come out in byte order. At 1M
//! keys with 64-byte values the store takes ~2.4x the raw data size (etcd v2: 22-72x).
//!
//! # The index
//!
//! One counter, the *etcd index* ([`Store::index`], `X-Etcd-Index`), increases by exactly
//! one for every successful mutation — set, create (also in-order), update,
//! compare-and-swap, delete, compare-and-delete, a TTL refresh, and each expired node —
//! and by nothing else (failed writes and reads consume nothing). A write's event
//! reports the new index as `node.modifiedIndex`. `createdIndex` is the index of the write
//! that created the node: kept by update, compare-and-swap and deletes, but reset by a
//! plain set on an existing key and by a refresh through set (etcd quirks, kept). A
//! directory's stored `modifiedIndex` never changes (etcd quirk: an update of its TTL
//! reports a new index in the event but does not store it).
//!
//! # Time
//!
//! Apply never reads a clock. Every write command carries the proposer's wall-clock time
//! (`now`), so `expiration = now + ttl` is the same on every member, and a write without
//! `ttl` makes the node permanent (removing a TTL). Keys expire only when a
//! [`Command::Sync`] is applied: the leader proposes one periodically carrying its clock
//! (as etcd v2's `SYNC`), and every node with `expiration <= now` is removed in
//! (expiration, key) order, each removal consuming an index and emitting an `expire`
//! event, so all members expire the same keys at the same index. Until then an expired
//! node is still readable, showing `expiration` without `ttl`. `ttl` in a response is the
//! time left rounded up to seconds, computed against the command's clock for writes and
//! against the caller's clock for reads ([`Store::get_at`]; [`Store::get`] uses the latest
//! applied clock). [`Store::next_expiration`] tells the leader when a sync is due.
//!
//! # Watches
//!
//! A watcher waits for the next event on a key (or below it, `recursive`), or reaches
//! into the last 1000 events with a `waitIndex`; a too-old `waitIndex` is error 401 exactly
//! as etcd answers. Deletes and expiries of a directory reach the watchers of keys inside
//! it. Watchers are local, not replicated: a [`Watcher`] is an async (runtime-agnostic) or
//! blocking receiver that unregisters itself when dropped; a stream watcher is closed
//! when 100 undelivered events pile up, bounding the memory a slow client can hold. See
//! [`watch`] for the exact matching rules.
//!
//! # Snapshots
//!
//! [`Store::snapshot`] streams the tree, index, clock and event history in a compact,
//! versioned bincode format (documented in `snapshot.rs` above the type that encodes it);
//! [`Store::restore`] rebuilds a store from it and [`Store::restore_from`] replaces the
//! state in place keeping the registered watchers. [`Store::hash`] digests the tree and
//! index to compare members.
//!
//! # Caveats and deliberate differences from etcd 3.4
//!
//! - Listings are always in byte order (etcd's unsorted order is random; sorted is ours).
//! - A stream watcher receives each event once (etcd delivers a delete twice to a stream
//!   watcher on the deleted key itself), and a stream watch from a `waitIndex` replays
//!   every matching retained event before going live (etcd answers only the first and
//!   then stalls).
//! - "Is below a deleted directory" is decided per path segment (etcd's history scan
//!   compares raw string prefixes, so a delete of `/d` could match a watch on `/dx`).
//! - Keys deeper than [`path::MAX_KEY_DEPTH`] segments are refused (209).
//! - Stats are per member and not part of snapshots. etcd's own bookkeeping writes
//!   (member attributes under `/0`) are not modelled here; the first user write of a new
//!   store gets index 1.

mod command;
mod error;
mod event;
mod name;
pub mod path;
mod snapshot;
mod state;
mod stats;
mod tree;
pub mod watch;

pub use command::{Command, DeleteRequest, PutRequest, COMMAND_VERSION};
pub use error::{ErrorCode, StoreError};
pub use event::{Action, Event, NodeExtern, UnixNanos};
pub use snapshot::{FrozenStore, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
pub use state::Store;
pub use stats::StoreStats;
pub use watch::{TryNext, Watcher, HISTORY_CAPACITY, STREAM_BUFFER};
