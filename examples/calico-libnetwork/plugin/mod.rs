//! Calico's Docker plugin: a remote network driver and a remote IPAM driver served on one
//! unix socket (spec/libnetwork.md), backed by the Calico datastore (spec/calico.md).
//!
//! # How a `docker run --net=mynet --ip 192.168.0.10` flows through it
//!
//! ```text
//! dockerd ──POST /IpamDriver.RequestAddress──▶ server ──Call──▶ driver ──▶ Allocator (Calico IPAM)
//!         ──POST /NetworkDriver.CreateEndpoint─▶                       ──▶ Datastore: endpoint JSON
//!         ──POST /NetworkDriver.Join───────────▶                       ──▶ HostLinks: veth, route, proxy ARP
//! calico-node (felix) watches the datastore and programs policy for the new endpoint.
//! ```
//!
//! | module | what it owns |
//! |---|---|
//! | [`protocol`] | the JSON of every request and answer, and method names |
//! | [`server`] | HTTP/1.1 on the unix socket, dispatch, error bodies, the call log hook |
//! | [`client`] | Docker's framing, for tests and `calico-libnetwork call` |
//! | [`driver`] | what each call does to the datastore, IPAM and the host |
//! | [`addresses`] | the IPAM seam (`Allocator`) and its test double |
//! | [`links`] | veths, host routes and proxy ARP (`HostLinks`), real and fake |
//! | [`error`] | the one error type and its HTTP statuses |
//!
//! Invariant: the plugin keeps no state of its own between calls. Everything it knows is
//! in the datastore (networks, endpoints, allocations) or in the kernel (veths), so it can
//! be restarted at any time, and several hosts' plugins can share one etcd.

pub mod addresses;
pub mod client;
pub mod driver;
pub mod error;
pub mod links;
pub mod protocol;
pub mod server;
