//! tabby: an etcd-style Raft key/value store and Calico-style container networking, as
//! embeddable Rust libraries.
//!
//! This facade crate re-exports the workspace's crates so that one dependency brings them
//! all; each crate is also usable on its own:
//!
//! - [`wal`]: segmented write-ahead log and snapshot files.
//! - [`raft_kv`]: the etcd v2 data model replicated with Raft.
//! - [`ipam`]: Calico-style IP address management.
//! - [`calico_model`]: hosts, endpoints, profiles, policy and the Linux dataplane plan.

pub use calico_model;
pub use ipam;
pub use raft_kv;
pub use wal;
