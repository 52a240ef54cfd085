//! `raft_kv`: the etcd v2 key/value model as a deterministic state machine, replicated with
//! Raft (tikv's raft-rs 0.7) over the [`wal`] crate, plus an etcd-2-compatible HTTP server
//! and client behind features.
//!
//! The layers, bottom up:
//!
//! - [`store`]: the v2 keys model (files, directories, TTLs, CAS, in-order keys, the
//!   watcher hub, snapshots, stats) as a pure state machine: the same commands in the same
//!   order give the same answers and the same indexes on every member.
//! - [`storage`]: `raft::Storage` over a WAL and a snapshot store (or memory, in tests).
//! - [`node`]: drives raft-rs's `RawNode`: proposals, the Ready loop with one fsync per
//!   Ready, batched linearizable reads (ReadIndex), membership changes, snapshots.
//! - [`transport`]: how messages leave a member; [`sim`]: a deterministic, seeded simulated
//!   cluster for tests.
//! - `client` (feature `client`): a blocking v2 HTTP client that behaves like etcd's Go
//!   client (endpoint failover, timeouts, watches); `examples/etcdctl` is built on it.
//! - `server` (feature `server`): an etcd member — flags, ids, data dir, the v2 HTTP API,
//!   the TCP peer port, backups; `examples/etcd.rs` is its command line.
//!
//! - [`check`]: history checkers for robustness tests (linearizability of etcd key
//!   operations, watch-stream completeness), used by `tests/robust.rs`.
//!
//! Embedding a replicated store without HTTP uses [`node::NodeHandle`] (the
//! [`store::Store`] is a [`node::StateMachine`]) and [`transport::LocalNetwork`] or your own
//! transport.
pub mod check;
#[cfg(feature = "client")]
pub mod client;
pub mod node;
#[cfg(feature = "server")]
pub mod server;
pub mod sim;
pub mod storage;
pub mod store;
pub mod transport;
