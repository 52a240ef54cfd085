//! The crate's one error type, grouped by what the caller must do about it.
//!
//! | group | variants | what the caller does |
//! |---|---|---|
//! | bad input | [`Error::Invalid`] | fix the input; nothing was written |
//! | missing referent | [`Error::NotFound`] | create the referent first (or report it) |
//! | datastore answers (etcd v2 error codes) | [`Error::KeyNotFound`] (100), [`Error::CompareFailed`] (101), [`Error::NotAFile`] (102), [`Error::NotADirectory`] (104), [`Error::AlreadyExists`] (105), [`Error::DirectoryNotEmpty`] (108), [`Error::EventIndexCleared`] (401) | deterministic answers: re-read and retry a compare-and-swap, treat "exists" as done, resync a watch |
//! | data in the store is unreadable | [`Error::Corrupt`] | report it; the key names what to repair |
//! | infrastructure | [`Error::Unavailable`], [`Error::RetriesExhausted`] | retry later or surface to an operator |
//! | the machine cannot do it | [`Error::Unsupported`] | choose another mode (e.g. VXLAN instead of IP-in-IP) |
//! | applying a plan to the kernel failed | [`Error::Command`] | report; the previous dataplane state is still in place where the step was atomic |
//!
//! Datastore implementations outside this crate (an etcd v2 HTTP client, an embedded
//! raft store) map their answers onto the same variants; [`Error::etcd_code`] gives the
//! etcd v2 `errorCode` of each answer so the mapping is checkable both ways.

use crate::datastore::Index;

/// Everything that can go wrong in this crate. See the module docs for the grouping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Input failed validation (bad CIDR, bad name, rule field out of range, ...).
    /// Nothing was written.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was being validated, e.g. "pool CIDR" or "rule field icmp_type".
        what: String,
        /// The offending value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A model object referenced by the request does not exist (e.g. an unknown profile).
    #[error("{what} {name:?} not found")]
    NotFound {
        /// The kind of object, e.g. "profile".
        what: &'static str,
        /// Its name or id.
        name: String,
    },

    /// etcd errorCode 100: the key does not exist.
    #[error("key not found: {key} (index {index})")]
    KeyNotFound {
        /// The key asked for.
        key: String,
        /// The store's index when it answered.
        index: Index,
    },

    /// etcd errorCode 101: a `prevIndex` / `prevValue` condition did not hold.
    #[error("compare failed on {key}: {cause} (index {index})")]
    CompareFailed {
        /// The key whose condition failed.
        key: String,
        /// etcd's cause text, e.g. `[12 != 15]`.
        cause: String,
        /// The store's index when it answered.
        index: Index,
    },

    /// etcd errorCode 102: the key is a directory where a value was expected.
    #[error("not a file: {key}")]
    NotAFile {
        /// The directory key.
        key: String,
    },

    /// etcd errorCode 104: a path component is a value where a directory was expected.
    #[error("not a directory: {key}")]
    NotADirectory {
        /// The key that is not a directory.
        key: String,
    },

    /// etcd errorCode 105: `prevExist=false` and the key exists.
    #[error("key already exists: {key} (index {index})")]
    AlreadyExists {
        /// The existing key.
        key: String,
        /// The store's index when it answered.
        index: Index,
    },

    /// etcd errorCode 108: deleting a non-empty directory without `recursive`.
    #[error("directory not empty: {key}")]
    DirectoryNotEmpty {
        /// The directory key.
        key: String,
    },

    /// etcd errorCode 401: a watch asked for an index older than the retained history;
    /// the watcher must re-read a snapshot and watch from its index.
    #[error("event index cleared: asked for {requested}, oldest retained is {oldest}")]
    EventIndexCleared {
        /// The index the watcher asked for.
        requested: Index,
        /// The oldest index still in the history.
        oldest: Index,
    },

    /// A stored value does not parse as what its key says it holds.
    #[error("corrupt value at {key}: {reason}")]
    Corrupt {
        /// The key holding the bad value.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The datastore could not be reached or failed internally; retry later.
    #[error("datastore unavailable during {context}: {message}")]
    Unavailable {
        /// The operation that failed, e.g. `get /calico/v1/host`.
        context: String,
        /// The underlying failure.
        message: String,
    },

    /// A compare-and-swap loop lost every attempt to concurrent writers.
    #[error("gave up after {attempts} conflicting attempts on {key}")]
    RetriesExhausted {
        /// The contended key.
        key: String,
        /// How many attempts were made.
        attempts: u32,
    },

    /// This machine cannot do what the plan asks (e.g. IP-in-IP without CONFIG_NET_IPIP).
    #[error("{feature} is not supported here: {reason}")]
    Unsupported {
        /// The missing capability.
        feature: String,
        /// Evidence, e.g. the kernel's answer.
        reason: String,
    },

    /// An external command used to apply a plan failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line (with the network namespace it ran in).
        command: String,
        /// Exit status or spawn failure.
        status: String,
        /// Its standard error (trimmed).
        stderr: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(
        what: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The etcd v2 `errorCode` this answer corresponds to, if it is a datastore answer.
    pub fn etcd_code(&self) -> Option<u32> {
        match self {
            Error::KeyNotFound { .. } => Some(100),
            Error::CompareFailed { .. } => Some(101),
            Error::NotAFile { .. } => Some(102),
            Error::NotADirectory { .. } => Some(104),
            Error::AlreadyExists { .. } => Some(105),
            Error::DirectoryNotEmpty { .. } => Some(108),
            Error::EventIndexCleared { .. } => Some(401),
            _ => None,
        }
    }

    /// True when re-reading and retrying the same operation can succeed (a lost
    /// compare-and-swap race, or an unavailable datastore).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::CompareFailed { .. } | Error::AlreadyExists { .. } | Error::Unavailable { .. }
        )
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_codes_match_the_v2_api() {
        let key = "/k".to_string();
        assert_eq!(
            Error::KeyNotFound {
                key: key.clone(),
                index: 1
            }
            .etcd_code(),
            Some(100)
        );
        let cf = Error::CompareFailed {
            key: key.clone(),
            cause: "[1 != 2]".into(),
            index: 2,
        };
        assert_eq!(cf.etcd_code(), Some(101));
        assert_eq!(Error::NotAFile { key: key.clone() }.etcd_code(), Some(102));
        assert_eq!(
            Error::NotADirectory { key: key.clone() }.etcd_code(),
            Some(104)
        );
        assert_eq!(
            Error::AlreadyExists {
                key: key.clone(),
                index: 3
            }
            .etcd_code(),
            Some(105)
        );
        assert_eq!(Error::DirectoryNotEmpty { key }.etcd_code(), Some(108));
        assert_eq!(
            Error::EventIndexCleared {
                requested: 1,
                oldest: 5
            }
            .etcd_code(),
            Some(401)
        );
        assert_eq!(Error::invalid("x", "y", "z").etcd_code(), None);
    }

    #[test]
    fn messages_carry_context() {
        let e = Error::invalid("pool CIDR", "10.0.0.0/33", "prefix longer than 32");
        assert_eq!(
            e.to_string(),
            "invalid pool CIDR \"10.0.0.0/33\": prefix longer than 32"
        );
        assert!(cf_retryable());
    }

    fn cf_retryable() -> bool {
        Error::CompareFailed {
            key: "/a".into(),
            cause: String::new(),
            index: 0,
        }
        .is_retryable()
            && !Error::NotFound {
                what: "profile",
                name: "p".into(),
            }
            .is_retryable()
    }
}
