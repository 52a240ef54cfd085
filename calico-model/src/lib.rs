//! Calico 0.22's data model, policy and host dataplane, as a library.
//!
//! This crate is what calicoctl, calico-node (felix + confd + BIRD) and the Docker
//! plugin of the calico-containers 0.22 era *mean*, reimplemented so that the data we
//! write is the data Calico 0.22's own tools read (spec/calico.md), and the packets the
//! rendered kernel rules let through are exactly the ones the model says may pass.
//!
//! # The pieces, in data-flow order
//!
//! ```text
//!  calicoctl / plugin ──► store::CalicoStore ──► datastore::Datastore (etcd v2 shape)
//!                                                     │  snapshot + watch
//!                                                     ▼
//!                                           state::ClusterState  ──► policy (reference)
//!                                                     │
//!                         dataplane::render_host / incremental::HostDataplane
//!                                                     │  HostPlan / PlanDelta
//!                                                     ▼
//!                                  linux::Applier (ip, ipset, iptables-restore, sysctl)
//! ```
//!
//! * [`model`], [`rule`]: hosts, pools, workload endpoints, profiles (tags + inbound /
//!   outbound rules with the 0.22 fields), felix and BGP configuration; their JSON and
//!   validation, with errors that name the field (bad CIDR, unknown profile, rule field
//!   out of range...).
//! * [`layout`]: the keys. `/calico/v1/config/<Param>`, `/calico/v1/host/<h>/bird_ip`,
//!   `/calico/v1/host/<h>/config/<Param>`,
//!   `/calico/v1/host/<h>/workload/<orch>/<workload>/endpoint/<id>` (endpoint JSON),
//!   `/calico/v1/ipam/v4/pool/<a.b.c.d-nn>` (pool JSON),
//!   `/calico/v1/policy/profile/<p>/{tags,rules,labels}`, `/calico/bgp/v1/...`,
//!   `/calico/ipam/v2/{assignment,host,handle,config}`.
//! * [`datastore`]: the seam. [`datastore::Datastore`] is etcd v2 without HTTP — string
//!   values, a `modifiedIndex` per key, `prevExist`/`prevIndex`/`prevValue` conditions,
//!   recursive reads and deletes, watch from an index, etcd's error codes — so an etcd v2
//!   client and an embedded raft store implement it one request per method.
//!   [`datastore::MemoryDatastore`] is the embedded default. With feature `etcd`,
//!   `etcd::EtcdDatastore` speaks to any etcd v2 endpoint (ours or etcd 3.4 with
//!   `--enable-v2`); with feature `embedded`, `embedded::EmbeddedDatastore` embeds a
//!   single-member raft-kv node persisted in a data directory.
//! * [`store`]: calicoctl's and calico-node's writes as typed operations (validate
//!   first, compare-and-swap read-modify-write). [`ipam_store`] runs the `ipam` crate's
//!   allocator over any `Datastore`, on Calico's IPAM keys.
//! * [`state`]: felix's in-memory view, from one recursive read plus watch events;
//!   invalid values are recorded as problems and ignored, never fatal.
//! * [`policy`]: the reference semantics — profiles in order, first allow wins, deny is
//!   final, tags are cluster-wide address sets, a missing profile drops everything,
//!   no profile → nothing allowed — and a compiled form for speed.
//! * [`dataplane`]: one host's plan — `cali` + 11-character veths with proxy ARP for
//!   169.254.1.1, `/32` routes, felix 1.4's iptables layout (dispatch →
//!   per-endpoint → per-profile chains, accept mark, default DROP) as `iptables-restore`
//!   text, one ipset per tag, MASQUERADE for nat-outgoing pools, routes to other hosts'
//!   blocks (static, from IPAM affinities) or a BIRD `bird.conf` (full iBGP mesh),
//!   IP-in-IP (`tunl0`) or VXLAN (`vxlan.calico`). [`dataplane::sim`] interprets the
//!   rendered text; [`dataplane::incremental`] keeps a plan current from watch events.
//! * [`linux`]: applies plans and deltas inside a named network namespace or the one
//!   the process runs in ([`linux::Netns::current`], how `examples/calico-node` programs
//!   its host), idempotently and one atomic `iptables-restore` per table, and removes
//!   what it owns.
//! * [`scenario`]: concise cluster states (the tutorial's topology) for tests and demos.
//!
//! # What is Calico-0.22-compatible, and what deliberately differs
//!
//! Compatible: every key and JSON value above (read and write); the profile defaults of
//! `calicoctl profile add`; pool validation (block-sized, overlap, `IpInIpEnabled`);
//! felix's chain/ipset names and structure, marks (`IptablesMarkMask` 0xff000000, accept
//! bit 0x1000000), name shortening (`_` + SHA-256 prefix), stub chains for missing
//! profiles, ICMP type 255 → DROP, `DefaultEndpointToHostAction` handling; confd's BIRD
//! mesh, blackholed own blocks and export filter.
//!
//! Deliberately different:
//! * read-modify-writes use `prevIndex` rather than `prevValue` (same guarantee);
//! * block ownership is read from the block's own `affinity` field, the host index only
//!   as a fallback (Calico trusted the index);
//! * `bird.conf` is BIRD 2 syntax; encapsulated routes use `onlink` + `ifname` instead of
//!   the patched-BIRD `krt_tunnel`;
//! * VXLAN is an extension (`"vxlan": "vxlan.calico"` in a pool, or IP-in-IP pools
//!   rendered as VXLAN with [`dataplane::RenderOptions::ipip_as_vxlan`]) because kernels
//!   without `CONFIG_NET_IPIP` cannot do IP-in-IP; applying an IP-in-IP plan there is
//!   [`Error::Unsupported`];
//! * routes this crate installs carry `proto 80` so they can be found and removed;
//! * felix-only rule extensions (negations, selectors, tiers) are rejected as invalid.
//!
//! Errors: one [`Error`] enum, grouped by what the caller must do (see [`error`]).

pub mod dataplane;
pub mod datastore;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod ipam_store;
pub mod layout;
pub mod linux;
pub mod model;
pub mod names;
pub mod policy;
pub mod rule;
pub mod scenario;
pub mod state;
pub mod store;
#[cfg(any(feature = "etcd", feature = "embedded"))]
mod v2_error;

pub use error::{Error, Result};
