//! The reliability harness of `tests/robust.rs`: real `etcd` example processes on
//! loopback behind per-member peer proxies ([`proxy`], [`cluster`]), a recorded concurrent
//! workload ([`workload`]), and the nemesis and checks ([`run`]). The checkers themselves
//! are `raft_kv::check`.

#![allow(dead_code)] // reason: the CI tests and the long campaign use different subsets

pub mod cluster;
pub mod http;
pub mod proxy;
pub mod run;
pub mod workload;
