//! Node configuration, in ticks (the driver decides how long a tick is).

use super::error::NodeError;

/// How a member starts when its storage is empty. A member whose storage holds raft state
/// always restarts from it and ignores this (as etcd ignores `--initial-cluster` then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterStart {
    /// Found a new cluster with these members (all voters), each given with its metadata.
    /// Every founding member must be given the same list.
    New(Vec<(u64, super::MemberInfo)>),
    /// Join an existing cluster: wait for the leader to add this member (with
    /// `add_member`/`add_learner`) and send a snapshot.
    Join,
}

/// Tunables of one member.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The member id (raft id); never 0.
    pub id: u64,
    /// Ticks without hearing from a leader before a follower campaigns. The actual timeout
    /// is drawn in `(election_ticks, 2 * election_ticks]`.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats; less than `election_ticks`.
    pub heartbeat_ticks: usize,
    /// Take a snapshot (and compact the log) every this many applied entries.
    pub snapshot_interval: u64,
    /// Entries kept in the log before a snapshot so slow followers can catch up from the
    /// log instead of a snapshot (as long as their records are still in the WAL).
    pub snapshot_catchup_entries: u64,
    /// Entries of the log kept in memory (unapplied ones always are); older applied ones
    /// are read back from the WAL when a follower that fell behind needs them (see
    /// [`crate::storage`]).
    pub log_cache_entries: usize,
    /// A request (proposal or read) not answered after this many ticks fails with
    /// [`NodeError::TimedOut`].
    pub request_timeout_ticks: u64,
    /// A ReadIndex round not answered after this many ticks is retried with a new round.
    pub read_retry_ticks: u64,
    /// The leader proposes the state machine's sync command every this many ticks; 0
    /// disables it.
    pub sync_interval_ticks: u64,
    /// Maximum bytes of entries in one append message.
    pub max_size_per_msg: u64,
    /// Maximum in-flight append messages per follower.
    pub max_inflight_msgs: usize,
    /// Group commit on the leader: it appends a new batch of proposals only while fewer
    /// than this many of its earlier batches are uncommitted. Proposals that arrive
    /// meanwhile (its own clients' and those forwarded by followers) wait and then go into
    /// the log together, as one append, one fsync per member and one append message per
    /// follower. A batch still uncommitted after two ticks stops holding anything back, so
    /// a leader that has lost its quorum appends (and times out requests) as without the
    /// limit. 0 = no limit (every `Ready` appends what has arrived).
    pub max_uncommitted_batches: usize,
    /// Pre-vote (raft thesis 9.6): a partitioned member rejoining does not disrupt the
    /// leader.
    pub pre_vote: bool,
    /// Check quorum: a leader that cannot hear a quorum steps down.
    pub check_quorum: bool,
    /// Seed of the member's random choices (election timeouts, boot id). `None` draws one.
    pub seed: Option<u64>,
    /// Write local snapshots on a thread of their own when the disk can
    /// ([`crate::storage::Disk::snapshot_saver`]): the raft loop keeps committing while a
    /// large snapshot file is written and synced; the log is compacted once it is durable.
    /// Off by default (snapshots are then saved inline, deterministically).
    pub background_snapshots: bool,
}

impl NodeConfig {
    /// Defaults for member `id`: election 10 ticks, heartbeat 1 tick, snapshot every 10,000
    /// entries.
    pub fn new(id: u64) -> Self {
        NodeConfig {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_interval: 10_000,
            snapshot_catchup_entries: 5_000,
            log_cache_entries: crate::storage::DEFAULT_CACHE_ENTRIES,
            request_timeout_ticks: 50,
            read_retry_ticks: 5,
            sync_interval_ticks: 5,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_batches: 1,
            pre_vote: true,
            check_quorum: true,
            seed: None,
            background_snapshots: false,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), NodeError> {
        let fail = |reason: &str| {
            Err(NodeError::Config {
                reason: reason.to_string(),
            })
        };
        if self.id == 0 {
            return fail("member id must not be 0");
        }
        if self.heartbeat_ticks == 0 {
            return fail("heartbeat_ticks must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return fail("election_ticks must be greater than heartbeat_ticks");
        }
        if self.snapshot_interval == 0 {
            return fail("snapshot_interval must be at least 1");
        }
        if self.request_timeout_ticks == 0 || self.read_retry_ticks == 0 {
            return fail("request_timeout_ticks and read_retry_ticks must be at least 1");
        }
        if self.max_inflight_msgs == 0 {
            return fail("max_inflight_msgs must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_bad_values() {
        assert!(NodeConfig::new(1).validate().is_ok());
        assert!(NodeConfig::new(0).validate().is_err());
        let mut config = NodeConfig::new(1);
        config.election_ticks = 1;
        assert!(config.validate().is_err());
        let mut config = NodeConfig::new(1);
        config.heartbeat_ticks = 0;
        assert!(config.validate().is_err());
        let mut config = NodeConfig::new(1);
        config.snapshot_interval = 0;
        assert!(config.validate().is_err());
    }
}
