//! The server's error type, grouped by what the caller (usually `main`) must do.

use std::path::PathBuf;

/// Everything that stops a member from starting or running.
///
/// Request-level problems never appear here: a malformed or failing client request gets
/// an HTTP error response and the member carries on.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The command line is malformed (unknown flag, missing or unparsable value): print the
    /// message and the usage, exit 2 (Go's `flag` convention, which etcd follows).
    #[error("{message}")]
    Usage {
        /// etcd's text, e.g. `flag provided but not defined: -foo`.
        message: String,
    },
    /// The settings are inconsistent (or contradict the data dir): fix them, exit 1.
    #[error("{message}")]
    InvalidConfig {
        /// etcd's text, e.g. `couldn't find local name "a" in the initial cluster configuration`.
        message: String,
    },
    /// The operating system refused something (bind, create, read, fsync): check the
    /// environment (ports in use, permissions, disk), exit 1.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done (`listen on`, `create data dir`, …).
        what: &'static str,
        /// The path or address involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data dir holds something this server cannot use (corrupt identity, foreign
    /// format): repair or restore from a backup; nothing was changed.
    #[error("data dir {path}: {detail}")]
    DataDir {
        /// The file or directory at fault.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The cluster refused or could not be reached for an operation this member needs to
    /// start (joining a cluster that does not know it, a removed member restarting).
    #[error("{0}")]
    Cluster(String),
    /// The consensus layer failed in a way that is not an answer (WAL I/O, corruption):
    /// the member stops to protect the data.
    #[error("raft: {0}")]
    Raft(String),
}

impl ServerError {
    /// The process exit status etcd uses for this kind of failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServerError::Usage { .. } => 2,
            _ => 1,
        }
    }

    /// An I/O error with what was being done and where.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> ServerError {
        ServerError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
