//! The crate's one error type, grouped by what the caller must do about it.
//!
//! | group ([`ErrorKind`]) | meaning | what the caller does |
//! |---|---|---|
//! | `InvalidInput` | the request itself is malformed (bad CIDR, bad name, bad size) | fix the input; retrying cannot help |
//! | `Conflict` | the request is well-formed but the datastore's state refuses it (address taken, no pool, affinity owned by another host) | choose something else, or change the state first |
//! | `Contention` | optimistic concurrency lost every one of its bounded retries | retry later; other writers were busy on the same key |
//! | `Datastore` | the store behind the [`BlockStore`](crate::BlockStore) failed | propagate; the request may or may not have been applied |
//! | `Corrupt` | a stored value breaks the format or its invariants | stop and repair the datastore; nothing was written |
//!
//! Every variant carries the context needed to act on it: the CIDR, address, key or host.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::IpFamily;

/// What the caller must do about an [`IpamError`]; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed: fix it.
    InvalidInput,
    /// The datastore's current state refuses the request: choose differently.
    Conflict,
    /// Bounded retries ran out under contention: retry later.
    Contention,
    /// The datastore failed: propagate.
    Datastore,
    /// A stored value is malformed or inconsistent: repair the datastore.
    Corrupt,
}

/// Every failure of this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    // ----- InvalidInput ---------------------------------------------------------------
    /// A CIDR or address could not be parsed.
    #[error("invalid CIDR {input:?}: {reason}")]
    InvalidCidr {
        /// The text as given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A pool (or affinity range) CIDR has bits set below its prefix.
    #[error("{given} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// The CIDR as given.
        given: IpNetwork,
        /// The same prefix with the host bits cleared.
        network: IpNetwork,
    },
    /// A pool is smaller than one allocation block, so no block could ever be claimed in it.
    #[error(
        "an {family} pool must have a prefix length of {block_prefix} or lower (one block); given {cidr}"
    )]
    PoolTooSmall {
        /// The rejected pool.
        cidr: IpNetwork,
        /// The family's block prefix.
        block_prefix: u8,
        /// The pool's family.
        family: IpFamily,
    },
    /// A new pool overlaps a configured one (an identical CIDR is an update, not an overlap).
    #[error("cannot add pool {cidr}: it overlaps the existing pool {existing}")]
    PoolOverlap {
        /// The rejected pool.
        cidr: IpNetwork,
        /// The configured pool it overlaps.
        existing: IpNetwork,
    },
    /// IP-in-IP was requested for an IPv6 pool.
    #[error("IP in IP is not supported for IPv6 pools ({cidr})")]
    IpipOnIpv6 {
        /// The rejected pool.
        cidr: IpNetwork,
    },
    /// A host name or handle id cannot be used as a datastore key segment.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// "host name" or "handle id".
        what: &'static str,
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Addresses, pools or blocks of different IP families were mixed in one request.
    #[error("{context}: expected {expected}, got {got}")]
    FamilyMismatch {
        /// What was being checked.
        context: String,
        /// The family the request needed.
        expected: IpFamily,
        /// The family that was given.
        got: IpFamily,
    },
    /// A block size outside what the crate supports.
    #[error("invalid {family} block prefix /{prefix}: {reason}")]
    InvalidBlockSize {
        /// The family the size was for.
        family: IpFamily,
        /// The rejected prefix length.
        prefix: u8,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An address was given to a block that does not contain it.
    #[error("{addr} is not inside block {block}")]
    AddressNotInBlock {
        /// The address.
        addr: IpAddr,
        /// The block.
        block: IpNetwork,
    },
    /// A rejected IPAM configuration value.
    #[error("invalid IPAM configuration: {reason}")]
    InvalidConfig {
        /// Why it was rejected.
        reason: &'static str,
    },

    // ----- Conflict -------------------------------------------------------------------
    /// The address is already allocated.
    #[error("{addr} is already assigned in block {block}")]
    AlreadyAssigned {
        /// The requested address.
        addr: IpAddr,
        /// The block holding it.
        block: IpNetwork,
    },
    /// The address lies in no pool that allows IPAM assignment.
    #[error("{addr} is not in any configured pool")]
    NotInPool {
        /// The requested address.
        addr: IpAddr,
    },
    /// The address lies in a pool that is disabled (being removed) or not managed by IPAM.
    #[error("{addr} is in pool {pool}, which is {state}")]
    PoolNotUsable {
        /// The requested address.
        addr: IpAddr,
        /// The pool containing it.
        pool: IpNetwork,
        /// "disabled" or "not an IPAM pool".
        state: &'static str,
    },
    /// A requested pool is not configured, or is disabled / not an IPAM pool.
    #[error("requested pool {cidr} is not configured or has wrong attributes")]
    PoolNotFound {
        /// The requested pool.
        cidr: IpNetwork,
    },
    /// The block is affine to another host (or none) and its affinity is strict.
    #[error("block {block} is not affine to host {host:?} (affinity: {owner:?})")]
    NoHostAffinity {
        /// The block.
        block: IpNetwork,
        /// The host that asked.
        host: String,
        /// The block's affine host, if any.
        owner: Option<String>,
    },
    /// The IPAM configuration cannot change while allocation blocks exist.
    #[error("unable to change the global IPAM configuration: {blocks} allocation block(s) exist")]
    ConfigLocked {
        /// How many blocks exist.
        blocks: usize,
    },

    // ----- Contention -----------------------------------------------------------------
    /// Every compare-and-swap attempt on a key conflicted with another writer.
    #[error("{op} on {key}: gave up after {attempts} conflicting attempts")]
    RetriesExhausted {
        /// The operation that was retried.
        op: &'static str,
        /// The contended datastore key.
        key: String,
        /// How many attempts were made.
        attempts: u32,
    },

    // ----- Datastore / Corrupt --------------------------------------------------------
    /// The store failed (unreachable, timed out, refused).
    #[error("datastore error on {key}: {message}")]
    Store {
        /// The key (or prefix) being accessed.
        key: String,
        /// The store's description of the failure.
        message: String,
    },
    /// A stored value is malformed or breaks an invariant.
    #[error("corrupt value at {key}: {reason}")]
    Corrupt {
        /// The key holding the value.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl IpamError {
    /// The group this error belongs to: what the caller must do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            IpamError::InvalidCidr { .. }
            | IpamError::HostBitsSet { .. }
            | IpamError::PoolTooSmall { .. }
            | IpamError::PoolOverlap { .. }
            | IpamError::IpipOnIpv6 { .. }
            | IpamError::InvalidName { .. }
            | IpamError::FamilyMismatch { .. }
            | IpamError::InvalidBlockSize { .. }
            | IpamError::AddressNotInBlock { .. }
            | IpamError::InvalidConfig { .. } => ErrorKind::InvalidInput,
            IpamError::AlreadyAssigned { .. }
            | IpamError::NotInPool { .. }
            | IpamError::PoolNotUsable { .. }
            | IpamError::PoolNotFound { .. }
            | IpamError::NoHostAffinity { .. }
            | IpamError::ConfigLocked { .. } => ErrorKind::Conflict,
            IpamError::RetriesExhausted { .. } => ErrorKind::Contention,
            IpamError::Store { .. } => ErrorKind::Datastore,
            IpamError::Corrupt { .. } => ErrorKind::Corrupt,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = IpamError> = std::result::Result<T, E>;
