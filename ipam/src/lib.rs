//! Calico-style IP address management: the allocator behind `calicoctl container add`
//! and Docker's `--ip`, as a library with no I/O.
//!
//! The algorithm is Calico's own (libcalico v0.17, `spec/ipam.md`), and its data is
//! Calico's data: the same etcd keys and the same JSON, so Calico's tools can read what
//! this crate writes. Where Calico's users reported leaks, races, fragmentation or slow
//! allocation, this crate keeps the data model and fixes the behaviour (see
//! [Differences from Calico](#differences-from-calico)).
//!
//! # The allocation model
//!
//! **Pools** ([`Pool`]) are the address space: IPv4 and IPv6 CIDRs, host bits clear, at
//! least one block large, never overlapping. A pool is *usable* when it is an IPAM pool
//! and not disabled; only usable pools receive new blocks and new allocations.
//!
//! **Blocks** ([`Block`]) cut pools into power-of-two ranges (a /26 of 64 addresses for
//! IPv4 and a /122 for IPv6 by default; [`IpamOptions`] allows 1 to 4096 addresses). A
//! block holds a bitmap of its allocations, each allocation's attributes (a handle and a
//! free-form map, deduplicated per block), and the order in which its free addresses will
//! be handed out. One block is one datastore key, so every allocation or release is a
//! single compare-and-swap, and hosts working in different blocks never contend. Blocks
//! are created lazily and deleted when they are empty *and* have no affinity.
//!
//! **Affinity**: a block may be affine to one host. The host advertises the block as one
//! route, so each host allocates from its own blocks first. The block's `affinity` field is
//! the truth; a per-host index key (`/calico/ipam/v2/host/<host>/ipv4/block/<cidr>`) lets
//! a host find its blocks with one listing, and may be stale.
//!
//! **Handles** ([`Handle`]) group allocations (one per container, say): a handle record
//! counts its addresses per block, so [`Ipam::release_by_handle`] visits only those blocks,
//! and [`Ipam::check`] can name every allocation whose owner is gone.
//!
//! **Auto-assignment** ([`Ipam::auto_assign`]) takes addresses
//! 1. from the host's affine blocks, in CIDR order;
//! 2. then from blocks it claims: candidates are walked in a pseudo-random order seeded by
//!    the host name (processes of one host converge on the same block, different hosts
//!    start in different places); a claim writes the host's index key, then creates the
//!    block with `prevExist=false`; a lost race removes the index key again (or, if the
//!    winner is the same host, shares the block);
//! 3. then, unless strict affinity is configured, by borrowing from other hosts' blocks.
//!
//! Inside a block, addresses go lowest-never-used first and recently freed last (Calico's
//! `unallocated` order). [`Ipam::assign_ip`] takes one specific address, claiming its
//! block for the host if the block does not exist yet.
//!
//! # The compare-and-swap loop and its bound
//!
//! Every write is optimistic: read the key and its version, compute the new value,
//! compare-and-swap on the version, and on a conflict re-read and recompute. Each loop
//! makes at most [`IpamOptions::max_retries`] attempts (100, like Calico) and then fails
//! with [`IpamError::RetriesExhausted`] naming the operation and the key: contention is
//! reported, never spun on forever. Handle counts move *before* the block write and are
//! undone after a failed one, so an interruption can leave a handle over-counting (safe:
//! the release path decrements by what it actually freed) but never under-counting.
//!
//! # The store seam
//!
//! [`BlockStore`] is a versioned key/value store with `get`, `list`, create-only,
//! compare-and-swap, compare-and-delete, `put` and `delete` over typed keys ([`Key`]) and
//! values ([`Value`]). Each call maps onto one etcd v2 request (version = `modifiedIndex`,
//! compare = `prevIndex`, create = `prevExist=false`); [`Key::path`] and
//! [`Value::to_json`] give the exact key and JSON. Blocks change through
//! [`BlockStore::update_block`], a provided read-modify-write that is one `get` plus one
//! compare-and-swap unless a store can do better. [`MemStore`] is the in-memory
//! implementation: thread-safe, shareable behind an `Arc`, free of JSON, updating blocks in
//! place under a sharded lock (or, for tests of the retry paths, by get and
//! compare-and-swap), with a write hook to inject conflicts and failures.
//!
//! ```
//! use std::sync::Arc;
//! use ipam::{Attrs, Ipam, MemStore, Pool, PoolChoice};
//!
//! let store = Arc::new(MemStore::new());
//! let ipam = Ipam::new(Arc::clone(&store));
//! ipam.add_pool(Pool::new("10.20.0.0/16".parse()?))?;
//! // Two hosts (two clients, as two processes would be) share the store.
//! let other = Ipam::new(Arc::clone(&store));
//! let a = ipam.auto_assign("host-a", 2, Some("container-1"), &Attrs::empty(), &PoolChoice::v4())?;
//! let b = other.auto_assign("host-b", 1, Some("container-2"), &Attrs::empty(), &PoolChoice::v4())?;
//! assert_eq!(a.len(), 2);
//! assert_ne!(ipam.block_cidr(a[0]), ipam.block_cidr(b[0]), "each host has its own block");
//! assert_eq!(ipam.release_by_handle("container-1")?, 2);
//! assert!(ipam.release_ips(&b)?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Differences from Calico
//!
//! Deliberate, each for a reported problem (`spec/ipam.md` §9):
//!
//! * **No allocation in disabled or removed pools.** Calico keeps allocating from a
//!   host's affine blocks while their pool is being removed, and (before a fix) after
//!   (libcalico #55/#56/#169). Here every affine block is checked against its pool.
//! * **Missing blocks are skipped everywhere** (Calico's borrowing stage raised on them),
//!   and a stale index entry found during pool removal is deleted instead of failing the
//!   removal forever.
//! * **Finding a free block costs one listing, not one read per used block**
//!   (libcalico #72: 1284 reads, 74 s). A client remembers its position in the host's
//!   block order and the set of existing blocks, and restarts the walk only when it runs
//!   out; borrowing picks candidates with room from one listing of all blocks, in a
//!   host-specific order.
//! * **The host's affine blocks are cached** with a "may have room" hint, so the common
//!   allocation is one block read and one compare-and-swap. The hint only reorders: a
//!   host never claims a new block before re-listing its index and re-reading every
//!   affine block.
//! * **A failed auto-assignment releases what it took**, and a failed block create
//!   removes its index key, so errors leave nothing behind.
//! * **Pools smaller than a block are refused** (calicoctl #505), with the errors of
//!   [`IpamError`] grouped by what the caller must do ([`ErrorKind`]).
//! * **Leak checking** ([`Ipam::check`]): allocations whose handle is not live, handle
//!   records that disagree with blocks, stale or missing index entries, blocks outside
//!   every pool. Calico 0.22 had none (calicoctl #519, #896, libnetwork-plugin #49).
//!
//! Not reproduced: Calico's Python RNG (the order is deterministic per host, covers every
//! block once and interleaves pools, which is what matters) and the 3-second sleep of
//! `calicoctl pool remove` ([`Ipam::remove_pool`] documents the window instead).
//!
//! # Performance
//!
//! `cargo bench -p ipam` (see `benches/ipam.rs`; `IPAM_BENCH_OPS=N` adds a plain loop that
//! also reports the rate per CPU-second, which does not depend on what else the machine
//! runs). The hot path (one address from a cached affine block, then its release) takes
//! one shard lock and one version number per store update, counts its reads and writes
//! under that lock rather than in shared atomics, reuses the block's attribute list, and
//! skips the pool-usable read while [`BlockStore::pools_generation`] shows no pool write. On the project's shared 2-vCPU VM (load 12-15 from other work):
//! auto-assign + release, one address, no handle, 7.7-10.4M operations per CPU-second
//! (96-129 ns each), 2.5-4.1M/s wall; with a handle (two more store updates) 4.0-4.4M per
//! CPU-second.
//!
//! Memory, with [`MemStore`]: 1M addresses allocated in 16,384 /26 blocks take 1.89 heap
//! bytes per address all in (a [`Block`] is 64 bytes, 1.0 byte per address; the store adds
//! its version and a 4-byte index slot per block, and the affinity index 16 bytes per
//! block). Allocations share attribute entries: a block whose addresses all carry the same
//! handle and attributes holds one pointer to a list shared by every block filled by the
//! same call, and handle ids and host names are shared pointers. A block that sees
//! releases keeps a free-order ring (4 bytes per address) while freed addresses wait.
//!
//! # Caveats
//!
//! * All clients of one datastore must use the same block sizes.
//! * Adding overlapping pools from two clients at the same instant can succeed twice:
//!   etcd v2 has no multi-key transactions (Calico has the same window).
//! * [`Ipam::check`] is not atomic across keys; concurrent operations can appear as
//!   transient mismatches.

mod attrs;
mod bits;
pub mod block;
pub mod error;
pub mod handle;
pub mod ipam;
pub mod mem;
pub mod net;
mod order;
pub mod pool;
pub mod store;

pub use attrs::{Attribute, Attrs};
pub use block::{Block, BlockRelease, MAX_BLOCK_HOST_BITS};
pub use error::{ErrorKind, IpamError, Result};
pub use handle::Handle;
pub use ipam::{
    AffinityClaim, AffinityRelease, Allocation, CheckReport, HandleMismatch, Ipam, IpamOptions,
    PoolChoice,
};
pub use mem::{Injected, MemStore, StoreStats, WriteKind};
pub use net::{parse_network, parse_network_strict, HandleId, HostName, IpFamily};
pub use pool::{IpamConfig, Pool};
pub use store::{
    update_block_with_cas, update_handle_with_cas, BlockStore, CasOutcome, Change, Key, Prefix,
    UpdateOutcome, Value, Version, Versioned,
};
