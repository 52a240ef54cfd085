//! The plugin's one error type, grouped by what the caller (Docker, and behind it the
//! operator) must do about it, and how each group is put on the wire.
//!
//! | group | variant | HTTP status | what to do |
//! |---|---|---|---|
//! | unparseable request | [`PluginError::Protocol`] | 400 (404 for an unknown method) | fix the caller |
//! | bad input | [`PluginError::Invalid`], [`PluginError::Unsupported`] | 400 | change the `docker` command |
//! | state conflict | [`PluginError::Conflict`] | 409 | pick another address / remove the user first |
//! | missing referent | [`PluginError::Missing`] | 409 | create it first (a Calico pool, the network) |
//! | out of resources | [`PluginError::Exhausted`] | 507 | add a pool |
//! | datastore trouble | [`PluginError::Datastore`] | 503 | retry; check etcd |
//! | kernel refused | [`PluginError::Dataplane`] | 500 | read the command and its stderr |
//!
//! Every failure is answered as `{"Err": "<Display>"}` (see `protocol::ErrorBody`); the
//! status only matters to humans reading logs — Docker treats every non-200 alike, except
//! 404, which it takes as "method not implemented".

use hyper::StatusCode;

use super::protocol::ProtocolError;

/// Everything a plugin call can fail with. See the module docs for the grouping.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The request could not be parsed (or names an unknown method).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),

    /// A field failed validation; nothing was changed.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// The field, e.g. `RequestAddress.Address`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Valid but not something this driver does (sub-pools, several pools per family).
    #[error("{0}")]
    Unsupported(String),

    /// The request contradicts current state (an address already in use).
    #[error("{0}")]
    Conflict(String),

    /// Something the request refers to does not exist (a deleted pool, an unknown network).
    #[error("{0}")]
    Missing(String),

    /// No address left in the configured pools.
    #[error("{0}")]
    Exhausted(String),

    /// The datastore failed or answered something unreadable.
    #[error("datastore error during {context}: {message}")]
    Datastore {
        /// What the plugin was doing, e.g. `write endpoint <key>`.
        context: String,
        /// The underlying error.
        message: String,
    },

    /// A command programming the host failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Dataplane {
        /// The command line.
        command: String,
        /// Exit status or spawn failure.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

impl PluginError {
    /// Shorthand for [`PluginError::Invalid`].
    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> PluginError {
        PluginError::Invalid {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`PluginError::Datastore`].
    pub fn datastore(context: impl Into<String>, message: impl ToString) -> PluginError {
        PluginError::Datastore {
            context: context.into(),
            message: message.to_string(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            PluginError::Protocol(ProtocolError::UnknownMethod(_)) => StatusCode::NOT_FOUND,
            PluginError::Protocol(ProtocolError::Malformed { .. })
            | PluginError::Invalid { .. }
            | PluginError::Unsupported(_) => StatusCode::BAD_REQUEST,
            PluginError::Conflict(_) | PluginError::Missing(_) => StatusCode::CONFLICT,
            PluginError::Exhausted(_) => StatusCode::INSUFFICIENT_STORAGE,
            PluginError::Datastore { .. } => StatusCode::SERVICE_UNAVAILABLE,
            PluginError::Dataplane { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The plugin's result type.
pub type Result<T, E = PluginError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_methods_answer_404() {
        let unknown = PluginError::Protocol(ProtocolError::UnknownMethod("X.Y".into()));
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        let others = [
            PluginError::invalid("f", "v", "r"),
            PluginError::Unsupported("u".into()),
            PluginError::Conflict("c".into()),
            PluginError::Missing("m".into()),
            PluginError::Exhausted("e".into()),
            PluginError::datastore("ctx", "boom"),
            PluginError::Dataplane {
                command: "ip".into(),
                status: "1".into(),
                stderr: "no".into(),
            },
        ];
        for e in others {
            assert_ne!(e.status(), StatusCode::NOT_FOUND, "{e}");
            assert!(!e.status().is_success(), "{e}");
        }
    }

    #[test]
    fn messages_carry_their_context() {
        let e = PluginError::invalid("RequestAddress.Address", "10.0.0.300", "not an IP address");
        assert_eq!(
            e.to_string(),
            "invalid RequestAddress.Address \"10.0.0.300\": not an IP address"
        );
        let e = PluginError::datastore("write /calico/v1/x", "connection refused");
        assert_eq!(
            e.to_string(),
            "datastore error during write /calico/v1/x: connection refused"
        );
    }
}
