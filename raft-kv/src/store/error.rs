//! etcd v2 error codes and the store's error type.
//!
//! [`StoreError`] is an *answer*, not a malfunction: every failure the store returns is a
//! deterministic consequence of the command and the state (the key is missing, a compare
//! failed, ...), so every member returns the same error for the same log entry and the
//! server sends it to the client as etcd's JSON error body:
//!
//! ```json
//! {"errorCode":100,"message":"Key not found","cause":"/foo","index":12}
//! ```
//!
//! `cause` is omitted when empty. `index` is the store's current etcd index for store
//! errors and `0` for request-validation errors (the 2xx codes, built by the server with
//! [`StoreError::validation`]) and for consensus errors (3xx).
//!
//! The HTTP status for each code is etcd's ([`ErrorCode::http_status`]): 404 for 100,
//! 412 for 101 and 105, 403 for 102 and 108, 401 for 110, 500 for 300 and 301, and 400 for
//! every other code.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// The etcd v2 error codes the store and the v2 HTTP API produce.
///
/// The numeric value is etcd's `errorCode`; [`ErrorCode::message`] is etcd's message text,
/// byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// 100: the key (or a directory on its path) does not exist.
    KeyNotFound = 100,
    /// 101: `prevValue` / `prevIndex` did not match.
    TestFailed = 101,
    /// 102: a file operation on a directory (or a directory delete without `dir=true`).
    NotFile = 102,
    /// 104: a file is used as a directory on the way to the key.
    NotDir = 104,
    /// 105: `prevExist=false` on an existing key.
    NodeExist = 105,
    /// 107: a write to the root.
    RootReadOnly = 107,
    /// 108: a non-recursive delete of a non-empty directory.
    DirNotEmpty = 108,
    /// 110: v2 auth (not produced by this store).
    Unauthorized = 110,
    /// 201: `prevValue=` present but empty.
    PrevValueRequired = 201,
    /// 202: `ttl` is not an unsigned integer.
    TtlNaN = 202,
    /// 203: `prevIndex` / `waitIndex` is not an unsigned integer.
    IndexNaN = 203,
    /// 209: a malformed field (booleans, `wait` on a write, a key nested too deeply).
    InvalidField = 209,
    /// 210: an undecodable or oversized form.
    InvalidForm = 210,
    /// 211: `refresh=true` with a value.
    RefreshValue = 211,
    /// 212: `refresh=true` without a TTL.
    RefreshTtlRequired = 212,
    /// 300: the consensus layer failed (timeout, no quorum, undecodable command).
    RaftInternal = 300,
    /// 301: no leader.
    LeaderElect = 301,
    /// 400: the watcher was cleared because the store was restored.
    WatcherCleared = 400,
    /// 401: a `waitIndex` older than the retained event history.
    EventIndexCleared = 401,
}

impl ErrorCode {
    /// etcd's message text for the code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::KeyNotFound => "Key not found",
            ErrorCode::TestFailed => "Compare failed",
            ErrorCode::NotFile => "Not a file",
            ErrorCode::NotDir => "Not a directory",
            ErrorCode::NodeExist => "Key already exists",
            ErrorCode::RootReadOnly => "Root is read only",
            ErrorCode::DirNotEmpty => "Directory not empty",
            ErrorCode::Unauthorized => "The request requires user authentication",
            ErrorCode::PrevValueRequired => "PrevValue is Required in POST form",
            ErrorCode::TtlNaN => "The given TTL in POST form is not a number",
            ErrorCode::IndexNaN => "The given index in POST form is not a number",
            ErrorCode::InvalidField => "Invalid field",
            ErrorCode::InvalidForm => "Invalid POST form",
            ErrorCode::RefreshValue => "Value provided on refresh",
            ErrorCode::RefreshTtlRequired => "A TTL must be provided on refresh",
            ErrorCode::RaftInternal => "Raft Internal Error",
            ErrorCode::LeaderElect => "During Leader Election",
            ErrorCode::WatcherCleared => "watcher is cleared due to etcd recovery",
            ErrorCode::EventIndexCleared => "The event in requested index is outdated and cleared",
        }
    }

    /// The HTTP status etcd answers with for this code.
    pub fn http_status(self) -> u16 {
        status_of(self as u32)
    }

    /// The numeric `errorCode`.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The code with this number, if it is one of the codes above.
    pub fn from_u32(code: u32) -> Option<ErrorCode> {
        const ALL: [ErrorCode; 19] = [
            ErrorCode::KeyNotFound,
            ErrorCode::TestFailed,
            ErrorCode::NotFile,
            ErrorCode::NotDir,
            ErrorCode::NodeExist,
            ErrorCode::RootReadOnly,
            ErrorCode::DirNotEmpty,
            ErrorCode::Unauthorized,
            ErrorCode::PrevValueRequired,
            ErrorCode::TtlNaN,
            ErrorCode::IndexNaN,
            ErrorCode::InvalidField,
            ErrorCode::InvalidForm,
            ErrorCode::RefreshValue,
            ErrorCode::RefreshTtlRequired,
            ErrorCode::RaftInternal,
            ErrorCode::LeaderElect,
            ErrorCode::WatcherCleared,
            ErrorCode::EventIndexCleared,
        ];
        ALL.into_iter().find(|c| c.as_u32() == code)
    }
}

/// etcd's code → HTTP status table; unknown codes are 400.
fn status_of(code: u32) -> u16 {
    match code {
        100 => 404,
        101 | 105 => 412,
        102 | 108 => 403,
        110 => 401,
        300 | 301 => 500,
        _ => 400,
    }
}

/// A deterministic failure answered to the client (see the module documentation).
///
/// Serializes to etcd's error body `{"errorCode":N,"message":"…","cause":"…","index":N}`
/// (`cause` omitted when empty). The server sends it with [`StoreError::http_status`] and an
/// `X-Etcd-Index` header equal to `index`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message} ({cause}) [{index}]")]
pub struct StoreError {
    /// etcd's numeric `errorCode` (see [`ErrorCode`]).
    pub code: u32,
    /// etcd's message for the code.
    pub message: &'static str,
    /// What failed: usually a key, or a compare like `[old != cur]`.
    pub cause: String,
    /// The etcd index when the error happened (0 for validation and consensus errors).
    pub index: u64,
}

impl StoreError {
    /// An error with `code`, `cause` and the etcd `index` it happened at.
    pub fn new(code: ErrorCode, cause: impl Into<String>, index: u64) -> StoreError {
        StoreError {
            code: code.as_u32(),
            message: code.message(),
            cause: cause.into(),
            index,
        }
    }

    /// A request-validation error (index 0), e.g.
    /// `StoreError::validation(ErrorCode::TtlNaN, "invalid value for \"ttl\"")`.
    pub fn validation(code: ErrorCode, cause: impl Into<String>) -> StoreError {
        StoreError::new(code, cause, 0)
    }

    /// The typed code, if the numeric code is a known one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u32(self.code)
    }

    /// The HTTP status etcd answers with for this error (400 for unknown codes).
    pub fn http_status(&self) -> u16 {
        status_of(self.code)
    }

    /// The JSON body etcd sends, including the trailing newline.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

impl Serialize for StoreError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let n_fields = if self.cause.is_empty() { 3 } else { 4 };
        let mut s = serializer.serialize_struct("StoreError", n_fields)?;
        s.serialize_field("errorCode", &self.code)?;
        s.serialize_field("message", self.message)?;
        if !self.cause.is_empty() {
            s.serialize_field("cause", &self.cause)?;
        }
        s.serialize_field("index", &self.index)?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_matches_etcd() {
        let e = StoreError::new(ErrorCode::KeyNotFound, "/foo", 12);
        assert_eq!(
            String::from_utf8(e.to_json_line()).unwrap(),
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/foo\",\"index\":12}\n"
        );
        let e = StoreError::new(ErrorCode::NotFile, "", 7);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            "{\"errorCode\":102,\"message\":\"Not a file\",\"index\":7}"
        );
    }

    #[test]
    fn http_status_table() {
        let table = [
            (100, 404),
            (101, 412),
            (102, 403),
            (104, 400),
            (105, 412),
            (107, 400),
            (108, 403),
            (110, 401),
            (201, 400),
            (209, 400),
            (300, 500),
            (301, 500),
            (401, 400),
            (999, 400),
        ];
        for (code, status) in table {
            assert_eq!(status_of(code), status, "code {code}");
            if let Some(c) = ErrorCode::from_u32(code) {
                assert_eq!(c.http_status(), status);
                assert_eq!(c.as_u32(), code);
            }
        }
    }

    #[test]
    fn display_is_etcdctl_like() {
        let e = StoreError::new(ErrorCode::TestFailed, "[a != b]", 3);
        assert_eq!(e.to_string(), "101: Compare failed ([a != b]) [3]");
    }
}
