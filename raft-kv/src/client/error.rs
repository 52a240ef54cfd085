//! Errors of the v2 client, grouped by what the caller must do.
//!
//! * **An answer** — the cluster processed the request and said no:
//!   [`ClientError::Etcd`] (key not found, compare failed, …; carries the etcd
//!   `errorCode`, message, cause and index) and [`ClientError::Member`] (a members-API
//!   refusal such as `membership: peerURL exists`). Retrying the same request gets the
//!   same answer.
//! * **Try again later** — no endpoint gave an answer: [`ClientError::ClusterUnavailable`]
//!   (every endpoint failed; one [`EndpointError`] per attempt),
//!   [`ClientError::DeadlineExceeded`] (the operation's total timeout passed), and
//!   [`ClientError::Endpoint`] (a request that must not be blindly retried — a create, an
//!   in-order POST, a delete — failed after it may have reached the server: read the key
//!   before retrying).
//! * **Fix the configuration** — [`ClientError::NoEndpoints`], [`ClientError::InvalidArgument`],
//!   and the endpoint answering something that is not etcd ([`ClientError::InvalidResponse`],
//!   [`ClientError::UnexpectedStatus`]).
//!
//! The `Display` texts are those of etcd's Go client, because etcdctl prints them:
//! `100: Key not found (/foo) [12]`,
//! `client: etcd cluster is unavailable or misconfigured; error #0: dial tcp …`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::http::{status_text, TransportError, TransportErrorKind};

/// An etcd keys-API error body: `{"errorCode":100,"message":"Key not found","cause":"/foo","index":12}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdError {
    /// The etcd error code (see the `ERR_*` constants).
    #[serde(rename = "errorCode")]
    pub error_code: u32,
    /// The fixed message of the code.
    #[serde(default)]
    pub message: String,
    /// Details: usually the key concerned (`""` when absent).
    #[serde(default)]
    pub cause: String,
    /// The etcd index when the error happened (0 for request-validation errors).
    #[serde(default)]
    pub index: u64,
}

/// `100` Key not found.
pub const ERR_KEY_NOT_FOUND: u32 = 100;
/// `101` Compare failed.
pub const ERR_TEST_FAILED: u32 = 101;
/// `102` Not a file.
pub const ERR_NOT_FILE: u32 = 102;
/// `104` Not a directory.
pub const ERR_NOT_DIR: u32 = 104;
/// `105` Key already exists.
pub const ERR_NODE_EXIST: u32 = 105;
/// `107` Root is read only.
pub const ERR_ROOT_READ_ONLY: u32 = 107;
/// `108` Directory not empty.
pub const ERR_DIR_NOT_EMPTY: u32 = 108;
/// `300` Raft internal error (e.g. a request timed out without quorum).
pub const ERR_RAFT_INTERNAL: u32 = 300;
/// `401` The event in requested index is outdated and cleared.
pub const ERR_EVENT_INDEX_CLEARED: u32 = 401;

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({}) [{}]",
            self.error_code, self.message, self.cause, self.index
        )
    }
}

impl std::error::Error for EtcdError {}

/// Why one attempt on one endpoint failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// No HTTP response (connection refused, reset, timeout while connecting, …).
    Transport {
        /// The endpoint tried.
        endpoint: String,
        /// What went wrong (Go `net` error text).
        error: TransportError,
    },
    /// No response within the per-request timeout.
    HeaderTimeout {
        /// The endpoint tried.
        endpoint: String,
    },
    /// HTTP 500 or 503: etcd's client reads these as "member has no leader".
    NoLeader {
        /// The endpoint tried.
        endpoint: String,
        /// The status received.
        status: u16,
    },
    /// Another 5xx status.
    ServerError {
        /// The endpoint tried.
        endpoint: String,
        /// The status received.
        status: u16,
    },
}

impl EndpointError {
    /// The endpoint this attempt went to.
    pub fn endpoint(&self) -> &str {
        match self {
            EndpointError::Transport { endpoint, .. }
            | EndpointError::HeaderTimeout { endpoint }
            | EndpointError::NoLeader { endpoint, .. }
            | EndpointError::ServerError { endpoint, .. } => endpoint,
        }
    }

    /// Whether nothing was sent (so any request may safely go to another endpoint).
    pub fn nothing_sent(&self) -> bool {
        matches!(self, EndpointError::Transport { error, .. } if error.is_connect())
    }

    /// etcdctl's `isConnectionError`: a network-level failure (dial, read, timeout).
    pub fn is_connection_error(&self) -> bool {
        match self {
            EndpointError::Transport { error, .. } => error.kind() != TransportErrorKind::Protocol,
            _ => false,
        }
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Transport { error, .. } => write!(f, "{error}"),
            EndpointError::HeaderTimeout { endpoint } => {
                write!(f, "client: endpoint {endpoint} exceeded header timeout")
            }
            EndpointError::NoLeader { endpoint, .. } => {
                write!(f, "client: etcd member {endpoint} has no leader")
            }
            EndpointError::ServerError { endpoint, status } => write!(
                f,
                "client: etcd member {endpoint} returns server error [{}]",
                status_text(*status)
            ),
        }
    }
}

/// The client's error type. See the module documentation for the grouping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an etcd keys-API error.
    #[error("{0}")]
    Etcd(EtcdError),
    /// The members API refused the request (`{"message":"…"}`).
    #[error("{message}")]
    Member {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// Every endpoint failed; one entry per attempt, in the order tried.
    #[error("{}", cluster_error_text(.errors))]
    ClusterUnavailable {
        /// Why each endpoint failed.
        errors: Vec<EndpointError>,
    },
    /// A request that is not retried on another endpoint failed on one; it may or may not
    /// have taken effect.
    #[error("{0}")]
    Endpoint(EndpointError),
    /// The operation's total timeout passed.
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    /// The client has no endpoints (e.g. the cluster published no client URLs).
    #[error("client: no endpoints available")]
    NoEndpoints,
    /// A caller-supplied argument is unusable (endpoint URL, peer URL).
    #[error("{0}")]
    InvalidArgument(String),
    /// The endpoint's answer is not what an etcd server sends (bad JSON, bad header).
    #[error("{message}")]
    InvalidResponse {
        /// The endpoint that answered.
        endpoint: String,
        /// What was wrong, in etcd's client's words.
        message: String,
    },
    /// The endpoint answered with a status this request never gets from etcd.
    #[error("unexpected status code {status}")]
    UnexpectedStatus {
        /// The endpoint that answered.
        endpoint: String,
        /// The status.
        status: u16,
        /// The body (lossily decoded), for diagnosis.
        body: String,
    },
}

/// Go's `ClusterError.Error()`: each error is followed by a newline (a quirk etcdctl shows).
fn cluster_error_text(errors: &[EndpointError]) -> String {
    let mut s = String::from("client: etcd cluster is unavailable or misconfigured");
    for (i, e) in errors.iter().enumerate() {
        s.push_str(&format!("; error #{i}: {e}\n"));
    }
    s
}

impl ClientError {
    /// The etcd error, if the server answered with one.
    pub fn etcd(&self) -> Option<&EtcdError> {
        match self {
            ClientError::Etcd(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is etcd error `code`.
    pub fn is_etcd_code(&self, code: u32) -> bool {
        self.etcd().is_some_and(|e| e.error_code == code)
    }

    /// Whether the key was not found (errorCode 100).
    pub fn is_key_not_found(&self) -> bool {
        self.is_etcd_code(ERR_KEY_NOT_FOUND)
    }

    /// Whether a compare-and-swap/delete condition failed (errorCode 101).
    pub fn is_compare_failed(&self) -> bool {
        self.is_etcd_code(ERR_TEST_FAILED)
    }

    /// Whether a create found the key existing (errorCode 105).
    pub fn is_already_exists(&self) -> bool {
        self.is_etcd_code(ERR_NODE_EXIST)
    }

    /// etcdctl's `isConnectionError`: every attempt failed at the network level (so the
    /// cluster is unreachable rather than misbehaving).
    pub fn is_connection_error(&self) -> bool {
        match self {
            ClientError::ClusterUnavailable { errors } => {
                errors.iter().all(EndpointError::is_connection_error)
            }
            ClientError::Endpoint(e) => e.is_connection_error(),
            ClientError::DeadlineExceeded => true,
            _ => false,
        }
    }

    /// The per-endpoint errors of a [`ClientError::ClusterUnavailable`], in Go's
    /// `ClusterError.Detail()` form (`error #0: …\n` per attempt); `None` otherwise.
    pub fn cluster_detail(&self) -> Option<String> {
        match self {
            ClientError::ClusterUnavailable { errors } => Some(
                errors
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("error #{i}: {e}\n"))
                    .collect(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_error_text_is_etcdctls() {
        let e: EtcdError = serde_json::from_str(
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/foo\",\"index\":12}\n",
        )
        .unwrap();
        assert_eq!(e.to_string(), "100: Key not found (/foo) [12]");
        let no_cause: EtcdError =
            serde_json::from_str(r#"{"errorCode":300,"message":"Raft Internal Error","index":0}"#)
                .unwrap();
        assert_eq!(no_cause.to_string(), "300: Raft Internal Error () [0]");
    }

    #[test]
    fn cluster_error_text_and_detail_match_go() {
        let refused = |port: u16| EndpointError::Transport {
            endpoint: format!("http://127.0.0.1:{port}"),
            error: TransportError::new(
                TransportErrorKind::Connect,
                format!("dial tcp 127.0.0.1:{port}: connect: connection refused"),
            ),
        };
        let err = ClientError::ClusterUnavailable {
            errors: vec![refused(2), refused(1)],
        };
        assert_eq!(
            err.to_string(),
            "client: etcd cluster is unavailable or misconfigured; error #0: dial tcp 127.0.0.1:2: connect: connection refused\n; error #1: dial tcp 127.0.0.1:1: connect: connection refused\n"
        );
        assert_eq!(
            err.cluster_detail().unwrap(),
            "error #0: dial tcp 127.0.0.1:2: connect: connection refused\nerror #1: dial tcp 127.0.0.1:1: connect: connection refused\n"
        );
        assert!(err.is_connection_error());
        let mixed = ClientError::ClusterUnavailable {
            errors: vec![
                refused(1),
                EndpointError::NoLeader {
                    endpoint: "http://127.0.0.1:3".into(),
                    status: 500,
                },
            ],
        };
        assert!(!mixed.is_connection_error());
        assert!(mixed
            .to_string()
            .ends_with("; error #1: client: etcd member http://127.0.0.1:3 has no leader\n"));
    }

    #[test]
    fn endpoint_error_texts() {
        let e = EndpointError::ServerError {
            endpoint: "http://h:1".into(),
            status: 502,
        };
        assert_eq!(
            e.to_string(),
            "client: etcd member http://h:1 returns server error [Bad Gateway]"
        );
        let t = EndpointError::HeaderTimeout {
            endpoint: "http://h:1".into(),
        };
        assert_eq!(
            t.to_string(),
            "client: endpoint http://h:1 exceeded header timeout"
        );
        assert!(!t.is_connection_error());
    }

    #[test]
    fn predicates() {
        let e = ClientError::Etcd(EtcdError {
            error_code: 105,
            ..EtcdError::default()
        });
        assert!(e.is_already_exists() && !e.is_key_not_found() && !e.is_compare_failed());
        assert!(ClientError::DeadlineExceeded.is_connection_error());
        assert_eq!(
            ClientError::DeadlineExceeded.to_string(),
            "context deadline exceeded"
        );
    }
}
