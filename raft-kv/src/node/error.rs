//! The one error type of the Raft layer, grouped by what the caller must do.
//!
//! | variant | was the request applied? | what the caller does |
//! |---|---|---|
//! | [`NodeError::Dropped`] | no, never | retry (on this member later, or on the leader) |
//! | [`NodeError::OutcomeUnknown`] | maybe | read back to find out before retrying a non-idempotent write |
//! | [`NodeError::TimedOut`] | maybe (proposals), no (reads) | as above; a read can simply be retried |
//! | [`NodeError::InvalidRequest`] | no, rejected deterministically | fix the request |
//! | [`NodeError::Stopped`] | maybe | use another member; this one is gone |
//! | [`NodeError::PeerRemoved`] | — (transport level) | tell the sender it was removed |
//! | [`NodeError::Storage`], [`NodeError::Corrupt`] | — | fatal: the member stops; an operator must look |
//! | [`NodeError::Config`] | — | fix the configuration |

use std::sync::Arc;

/// A shareable, cloneable boxed error used as the source of storage failures.
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the Raft layer (storage, node, driver).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The request was definitely not applied and never will be: there was no leader, raft
    /// refused the proposal, a different entry was committed at its log position, or a
    /// membership change was already in progress. Safe to retry.
    #[error("request dropped (it was not applied and never will be): {reason}")]
    Dropped {
        /// Why the request was dropped.
        reason: String,
    },
    /// The request may or may not have been applied: leadership changed before the proposal
    /// reached the log, or a snapshot replaced the log around it. Read back before retrying
    /// a request that is not idempotent.
    #[error("outcome unknown (the request may or may not have been applied): {reason}")]
    OutcomeUnknown {
        /// Why the outcome cannot be known.
        reason: String,
    },
    /// The request did not complete in time. A proposal may still be applied later; a read
    /// was not served and can be retried.
    #[error("timed out waiting for {what}")]
    TimedOut {
        /// What was being waited for.
        what: String,
    },
    /// The request was rejected deterministically (every member rejects it the same way),
    /// or its arguments are invalid.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// Why the request is invalid.
        reason: String,
    },
    /// The member is not running: it was removed from the cluster, it failed, or it was shut
    /// down. Use another member.
    #[error("member {id:x} is stopped: {reason}")]
    Stopped {
        /// The stopped member.
        id: u64,
        /// Why it stopped.
        reason: String,
    },
    /// A raft message came from a member that has been removed from the cluster. The
    /// transport should tell the sender (it then stops, see `RaftNode::notify_removed`).
    #[error("message from member {from:x}, which was removed from the cluster")]
    PeerRemoved {
        /// The removed member that sent the message.
        from: u64,
    },
    /// Persisting or reading raft state failed (I/O error, failed fsync). Fatal: the member
    /// stops and never retries a failed fsync.
    #[error("storage failure during {op}: {source}")]
    Storage {
        /// The operation that failed, with its context (record index, snapshot index).
        op: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The persisted raft state is inconsistent (a gap in the log, a marker without its
    /// snapshot, an undecodable record). Fatal: an operator must look.
    #[error("corrupt raft state: {detail}")]
    Corrupt {
        /// What is inconsistent, with the WAL record index or raft index.
        detail: String,
    },
    /// The node configuration is invalid.
    #[error("invalid node configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl NodeError {
    /// True when the request certainly had no effect, so retrying cannot apply it twice.
    pub fn certainly_not_applied(&self) -> bool {
        matches!(
            self,
            NodeError::Dropped { .. } | NodeError::InvalidRequest { .. }
        )
    }

    /// True for errors that stop the member (storage failure, corruption).
    pub fn is_fatal(&self) -> bool {
        matches!(self, NodeError::Storage { .. } | NodeError::Corrupt { .. })
    }

    pub(crate) fn storage(
        op: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        NodeError::Storage {
            op: op.into(),
            source: Arc::from(source.into()),
        }
    }

    pub(crate) fn corrupt(detail: impl Into<String>) -> Self {
        NodeError::Corrupt {
            detail: detail.into(),
        }
    }

    pub(crate) fn dropped(reason: impl Into<String>) -> Self {
        NodeError::Dropped {
            reason: reason.into(),
        }
    }

    pub(crate) fn unknown(reason: impl Into<String>) -> Self {
        NodeError::OutcomeUnknown {
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        NodeError::InvalidRequest {
            reason: reason.into(),
        }
    }
}
