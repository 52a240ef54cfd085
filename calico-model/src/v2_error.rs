//! etcd v2 error answers (`errorCode`, `cause`, `index`) as the crate's [`Error`]
//! variants: shared by the datastores that speak to a v2 store, over HTTP
//! (`crate::etcd`) or in process (`crate::embedded`).

use crate::datastore::Index;
use crate::error::Error;

/// etcd's 401 cause is `the requested history has been cleared [oldest/requested]`.
pub(crate) fn parse_cleared(cause: &str) -> Option<(Index, Index)> {
    let inner = cause.rsplit_once('[')?.1.strip_suffix(']')?;
    let (oldest, requested) = inner.split_once('/')?;
    Some((oldest.trim().parse().ok()?, requested.trim().parse().ok()?))
}

/// The model's variant for an etcd v2 error answer on `key`, or `None` when the code is
/// not a datastore answer (300 raft internal, 400 bad request, ...): the caller then
/// reports the request as unavailable or invalid.
pub(crate) fn from_code(
    code: u32,
    message: &str,
    cause: &str,
    index: Index,
    key: &str,
) -> Option<Error> {
    let cause_key = if cause.is_empty() {
        key.to_string()
    } else {
        cause.to_string()
    };
    Some(match code {
        100 => Error::KeyNotFound {
            key: cause_key,
            index,
        },
        101 => Error::CompareFailed {
            key: key.to_string(),
            cause: cause.to_string(),
            index,
        },
        102 => Error::NotAFile { key: cause_key },
        104 => Error::NotADirectory { key: cause_key },
        105 => Error::AlreadyExists {
            key: cause_key,
            index,
        },
        108 => Error::DirectoryNotEmpty { key: cause_key },
        401 => {
            let (oldest, requested) = parse_cleared(cause)
                .or_else(|| parse_cleared(message))
                .unwrap_or((index, 0));
            Error::EventIndexCleared { requested, oldest }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleared_cause_parses() {
        assert_eq!(
            parse_cleared("the requested history has been cleared [1008/7]"),
            Some((1008, 7))
        );
        assert_eq!(parse_cleared("no brackets"), None);
        assert_eq!(parse_cleared("[x/7]"), None);
    }

    #[test]
    fn codes_round_trip_through_etcd_code() {
        for code in [100, 101, 102, 104, 105, 108, 401] {
            let e = from_code(code, "", "/k", 3, "/k").expect("a datastore answer");
            assert_eq!(e.etcd_code(), Some(code));
        }
        assert_eq!(from_code(300, "raft", "", 0, "/k"), None);
        assert_eq!(from_code(400, "bad", "", 0, "/k"), None);
    }
}
