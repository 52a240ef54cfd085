//! An etcd-2-compatible member: what `etcd --enable-v2` is to its clients, built from this
//! crate's store, raft node and WAL.
//!
//! # What a member is made of
//!
//! ```text
//!   clients ──HTTP/1.1──▶ api (hyper)  ──▶ Member ──▶ KeySpace (the v2 store: reads, watches)
//!                                            │
//!                                            └──▶ Consensus = RaftConsensus ──▶ node thread
//!                                                                   ▲   │  (RawNode, WAL, snapshots)
//!   peers ◀──TCP frames── peer::PeerSender ◀── TcpTransport ◀───────┘   │
//!   peers ──TCP frames──▶ peer::serve_peers ──▶ step ──────────────────▶┘
//! ```
//!
//! * [`config`] parses etcd's flags and `ETCD_*` variables with Go's habits and etcd's
//!   messages; [`bootstrap`] decides whether this start founds a cluster, joins one,
//!   restarts, or forces a new one; [`id`] derives member and cluster ids exactly as etcd.
//! * [`api`] is the client port (routing, validation in etcd's order via [`keys_request`]
//!   and [`form`], headers, CORS, errors, chunked watches) over the [`api::Backend`] trait,
//!   which [`member::Member`] implements from two seams: [`member::Consensus`] (the log)
//!   and [`member::KeySpace`] (the store).
//! * [`raft`] implements `Consensus` over the node and [`peer`], the TCP peer port.
//! * [`membership`] holds etcd's membership rules and answers (409/404/410, strict
//!   reconfiguration); the replicated member list itself lives in the node.
//! * [`run`] is a member's life: bind, plan, open, serve, stop. [`backup`] copies a data
//!   dir consistently while the member runs.
//!
//! # Request flow
//!
//! * **Write**: validated → a store command stamped with this member's clock → proposed to
//!   raft (on a follower raft forwards it to the leader: no HTTP redirect) → committed by a
//!   quorum, each member's WAL fsynced (one fsync per raft `Ready`, shared by every
//!   request in it) → applied on every member → answered by the contacted member once
//!   *it* has applied it, so a read there right after sees it.
//! * **Read**: from the contacted member's store; `quorum=true` first waits for a
//!   ReadIndex barrier (linearizable, no log entry).
//! * **Watch**: registered on the contacted member's store; headers go out at once,
//!   events as the member applies them.
//! * **Membership**: checked here, then a raft configuration change carrying the member's
//!   URLs; names and client URLs are published by each member through the log once it
//!   runs.
//!
//! # What is durable where
//!
//! ```text
//! <data-dir>/member/identity   member id + cluster id (written once, atomically, checksummed)
//! <data-dir>/member/wal/       raft log + hard state (or --wal-dir)
//! <data-dir>/member/snap/      snapshots: store + membership + raft ConfState
//! ```
//!
//! A write is acknowledged only after it is in a quorum's WAL (fsynced) and applied here.
//! The store and the membership are rebuilt on restart from the newest snapshot plus the
//! log after it.
//!
//! # Caveats
//!
//! * TLS, discovery, proxying, v2 auth and the v3 API are not implemented; their flags are
//!   unknown flags.
//! * The strict reconfiguration check counts members that are started and connected now
//!   (etcd also wants them connected for 5 s).
//! * A restored backup records the member's advertised peer URL (etcd records
//!   `http://localhost:2380` until `member update`).

mod error;

pub mod api;
pub mod backup;
pub mod form;
pub mod keys_request;
pub mod keyspace;
pub mod member;
pub mod membership;
pub mod peer;
pub mod raft;
pub mod run;
pub mod stats;

pub mod bootstrap;
pub mod config;
pub mod datadir;
pub mod id;
pub mod url;

pub use error::ServerError;
pub use run::run_until_signal;

/// The etcd server version this member reports on `/version` (the API it implements).
pub const ETCD_VERSION: &str = "3.4.23";

#[cfg(test)]
mod api_tests;

#[cfg(test)]
mod cluster_tests;
