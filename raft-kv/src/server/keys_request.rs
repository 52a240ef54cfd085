//! A `/v2/keys` HTTP request, validated exactly in etcd's order, as a typed request.
//!
//! etcd checks a keys request before it does anything else, in a fixed order, and the
//! first failure is the answer (with etcd index 0): `prevIndex`, `waitIndex` (203), the
//! booleans `recursive sorted wait dir quorum stream` (209), `wait` on a non-GET (209),
//! an empty `prevValue` (201), `noValueOnSuccess` (209), `ttl` (202), `prevExist` (209),
//! `refresh` (209, 211, 212). Only then is the operation chosen. This module keeps that
//! order so that a request with several faults gets etcd's error, not another valid one.
//!
//! The key is the decoded URL path after `/v2/keys`, cleaned to an absolute path without
//! a trailing slash (`/` is the root).

use super::form::{parse_go_uint, Form};

/// The parameters of a write that creates or replaces a node (`PUT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRequest {
    /// Absolute key (`/a/b`).
    pub key: String,
    /// `value` (`""` when absent).
    pub value: String,
    /// `dir=true`.
    pub dir: bool,
    /// `ttl` in seconds; `None` makes the node permanent.
    pub ttl: Option<u64>,
    /// `prevExist` when given.
    pub prev_exist: Option<bool>,
    /// `prevValue` (`""` means no condition).
    pub prev_value: String,
    /// `prevIndex` (0 means no condition).
    pub prev_index: u64,
    /// `refresh=true`: reset the TTL, keep the value.
    pub refresh: bool,
}

/// Which store operation a `PUT` performs (etcd's selection table, first match wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOperation {
    /// `prevExist=true` without other conditions.
    Update,
    /// `prevValue` and/or `prevIndex` (with or without `prevExist=true`).
    CompareAndSwap,
    /// `prevExist=false`.
    Create,
    /// Everything else.
    Set,
}

impl PutRequest {
    /// The operation etcd selects for these parameters.
    pub fn operation(&self) -> PutOperation {
        match self.prev_exist {
            Some(true) if self.prev_index == 0 && self.prev_value.is_empty() => {
                PutOperation::Update
            }
            Some(true) => PutOperation::CompareAndSwap,
            Some(false) => PutOperation::Create,
            None if self.prev_index > 0 || !self.prev_value.is_empty() => {
                PutOperation::CompareAndSwap
            }
            None => PutOperation::Set,
        }
    }
}

/// One validated keys request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysRequest {
    /// `GET`/`HEAD` without `wait`.
    Get {
        /// Absolute key.
        key: String,
        /// `recursive=true`.
        recursive: bool,
        /// `sorted=true`.
        sorted: bool,
        /// `quorum=true`: a linearizable read.
        quorum: bool,
    },
    /// `GET …?wait=true`.
    Watch {
        /// Absolute key.
        key: String,
        /// `recursive=true`.
        recursive: bool,
        /// `stream=true`: keep sending events.
        stream: bool,
        /// `waitIndex` (0 = the next change).
        wait_index: u64,
    },
    /// `PUT`.
    Put(PutRequest),
    /// `POST`: create an in-order child of `key`.
    Post {
        /// The directory that receives the child.
        key: String,
        /// `value`.
        value: String,
        /// `dir=true`.
        dir: bool,
        /// `ttl`.
        ttl: Option<u64>,
    },
    /// `DELETE`.
    Delete {
        /// Absolute key.
        key: String,
        /// `dir=true`.
        dir: bool,
        /// `recursive=true`.
        recursive: bool,
        /// `prevValue` (`""` = no condition).
        prev_value: String,
        /// `prevIndex` (0 = no condition).
        prev_index: u64,
    },
}

/// A request that failed validation: etcd's error code and cause (index is always 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// etcd error code (201, 202, 203, 209, 210, 211, 212).
    pub code: u32,
    /// The cause text.
    pub cause: String,
}

fn fail(code: u32, cause: &str) -> RequestError {
    RequestError {
        code,
        cause: cause.to_string(),
    }
}

/// The etcd message of an error code (the `message` field), for codes the server itself
/// produces; store errors carry their own.
pub fn error_message(code: u32) -> &'static str {
    match code {
        100 => "Key not found",
        101 => "Compare failed",
        102 => "Not a file",
        104 => "Not a directory",
        105 => "Key already exists",
        107 => "Root is read only",
        108 => "Directory not empty",
        201 => "PrevValue is Required in POST form",
        202 => "The given TTL in POST form is not a number",
        203 => "The given index in POST form is not a number",
        209 => "Invalid field",
        210 => "Invalid POST form",
        211 => "Value provided on refresh",
        212 => "A TTL must be provided on refresh",
        300 => "Raft Internal Error",
        301 => "During Leader Election",
        401 => "The event in requested index is outdated and cleared",
        _ => "Unknown error",
    }
}

/// The HTTP status etcd gives an error code.
pub fn error_status(code: u32) -> u16 {
    match code {
        100 => 404,
        101 | 105 => 412,
        102 | 108 => 403,
        110 => 401,
        300 | 301 => 500,
        _ => 400,
    }
}

/// Cleans a decoded key path: absolute, no empty/`.` segments, `..` resolved, no trailing
/// slash (Go's `path.Join("/", key)`).
pub fn clean_key(raw: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in raw.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut key = String::with_capacity(raw.len() + 1);
    for part in &parts {
        key.push('/');
        key.push_str(part);
    }
    if key.is_empty() {
        key.push('/');
    }
    key
}

fn uint_param(form: &Form, name: &str, code: u32) -> Result<u64, RequestError> {
    match form.first(name) {
        None => Ok(0),
        Some(text) => {
            parse_go_uint(text).ok_or_else(|| fail(code, &format!("invalid value for \"{name}\"")))
        }
    }
}

fn bool_param(form: &Form, name: &str) -> Result<bool, RequestError> {
    match form.first(name) {
        None => Ok(false),
        Some(text) => super::config::parse_go_bool(text)
            .ok_or_else(|| fail(209, &format!("invalid value for \"{name}\""))),
    }
}

/// Validates a keys request. `method` is the HTTP method (already one of HEAD, GET, PUT,
/// POST, DELETE), `raw_key` the decoded path after `/v2/keys`, `form` the merged
/// parameters (body first, then query).
pub fn parse_keys_request(
    method: &str,
    raw_key: &str,
    form: &Form,
) -> Result<KeysRequest, RequestError> {
    let key = clean_key(raw_key);
    let prev_index = uint_param(form, "prevIndex", 203)?;
    let wait_index = uint_param(form, "waitIndex", 203)?;
    let recursive = bool_param(form, "recursive")?;
    let sorted = bool_param(form, "sorted")?;
    let wait = bool_param(form, "wait")?;
    let dir = bool_param(form, "dir")?;
    let quorum = bool_param(form, "quorum")?;
    let stream = bool_param(form, "stream")?;
    if wait && method != "GET" {
        return Err(fail(209, "\"wait\" can only be used with GET requests"));
    }
    let prev_value = form.value("prevValue").to_string();
    if form.has("prevValue") && prev_value.is_empty() {
        return Err(fail(201, "\"prevValue\" cannot be empty"));
    }
    // Validated (etcd rejects a bad value) but applied by the caller from the raw form.
    bool_param(form, "noValueOnSuccess")?;
    let ttl = match form.value("ttl") {
        "" => None,
        text => Some(parse_go_uint(text).ok_or_else(|| fail(202, "invalid value for \"ttl\""))?),
    };
    let prev_exist = match form.first("prevExist") {
        None => None,
        Some(text) => Some(
            super::config::parse_go_bool(text)
                .ok_or_else(|| fail(209, "invalid value for prevExist"))?,
        ),
    };
    let mut refresh = false;
    if let Some(text) = form.first("refresh") {
        refresh = super::config::parse_go_bool(text)
            .ok_or_else(|| fail(209, "invalid value for refresh"))?;
        if refresh {
            if !form.value("value").is_empty() {
                return Err(fail(211, "A value was provided on a refresh"));
            }
            if ttl.is_none() {
                return Err(fail(212, "No TTL value set"));
            }
        }
    }
    let value = form.value("value").to_string();
    Ok(match method {
        "GET" | "HEAD" if wait => KeysRequest::Watch {
            key,
            recursive,
            stream,
            wait_index,
        },
        "GET" | "HEAD" => KeysRequest::Get {
            key,
            recursive,
            sorted,
            quorum,
        },
        "POST" => KeysRequest::Post {
            key,
            value,
            dir,
            ttl,
        },
        "DELETE" => KeysRequest::Delete {
            key,
            dir,
            recursive,
            prev_value,
            prev_index,
        },
        _ => KeysRequest::Put(PutRequest {
            key,
            value,
            dir,
            ttl,
            prev_exist,
            prev_value,
            prev_index,
            refresh,
        }),
    })
}

/// Whether the request asked for `noValueOnSuccess=true` (validated by
/// [`parse_keys_request`] already).
pub fn no_value_on_success(form: &Form) -> bool {
    matches!(
        form.first("noValueOnSuccess")
            .and_then(super::config::parse_go_bool),
        Some(true)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(query: &str) -> Form {
        let mut form = Form::new();
        form.append_encoded(query).unwrap();
        form
    }

    fn parse(method: &str, key: &str, query: &str) -> Result<KeysRequest, RequestError> {
        parse_keys_request(method, key, &form(query))
    }

    fn put(query: &str) -> PutRequest {
        match parse("PUT", "/k", query).unwrap() {
            KeysRequest::Put(put) => put,
            other => panic!("not a put: {other:?}"),
        }
    }

    /// etcd's validation table (spec §4.3), including which error wins when several apply.
    #[test]
    fn validation_errors_in_etcd_order() {
        let table: &[(&str, &str, u32, &str)] = &[
            ("PUT", "ttl=abc", 202, "invalid value for \"ttl\""),
            ("PUT", "ttl=-1", 202, "invalid value for \"ttl\""),
            ("PUT", "ttl=1.5", 202, "invalid value for \"ttl\""),
            ("PUT", "ttl=%2B5", 202, "invalid value for \"ttl\""),
            (
                "PUT",
                "prevIndex=0x10",
                203,
                "invalid value for \"prevIndex\"",
            ),
            (
                "DELETE",
                "prevIndex=abc",
                203,
                "invalid value for \"prevIndex\"",
            ),
            ("PUT", "prevIndex=", 203, "invalid value for \"prevIndex\""),
            (
                "GET",
                "wait=true&waitIndex=soon",
                203,
                "invalid value for \"waitIndex\"",
            ),
            (
                "GET",
                "recursive=yes",
                209,
                "invalid value for \"recursive\"",
            ),
            ("GET", "sorted=", 209, "invalid value for \"sorted\""),
            ("GET", "quorum=2", 209, "invalid value for \"quorum\""),
            ("GET", "stream=x", 209, "invalid value for \"stream\""),
            ("PUT", "dir=maybe", 209, "invalid value for \"dir\""),
            (
                "PUT",
                "wait=true",
                209,
                "\"wait\" can only be used with GET requests",
            ),
            (
                "DELETE",
                "wait=true",
                209,
                "\"wait\" can only be used with GET requests",
            ),
            ("PUT", "prevValue=", 201, "\"prevValue\" cannot be empty"),
            (
                "PUT",
                "noValueOnSuccess=x",
                209,
                "invalid value for \"noValueOnSuccess\"",
            ),
            ("PUT", "prevExist=maybe", 209, "invalid value for prevExist"),
            ("PUT", "refresh=maybe", 209, "invalid value for refresh"),
            (
                "PUT",
                "refresh=true&ttl=5&value=v",
                211,
                "A value was provided on a refresh",
            ),
            ("PUT", "refresh=true", 212, "No TTL value set"),
            ("PUT", "refresh=true&ttl=", 212, "No TTL value set"),
            // the first failing check wins
            (
                "PUT",
                "ttl=x&prevIndex=y",
                203,
                "invalid value for \"prevIndex\"",
            ),
            (
                "PUT",
                "ttl=x&recursive=y",
                209,
                "invalid value for \"recursive\"",
            ),
            (
                "PUT",
                "ttl=x&prevValue=",
                201,
                "\"prevValue\" cannot be empty",
            ),
        ];
        for (method, query, code, cause) in table {
            let err = parse(method, "/k", query).unwrap_err();
            assert_eq!(
                (err.code, err.cause.as_str()),
                (*code, *cause),
                "{method} {query}"
            );
        }
    }

    #[test]
    fn operation_selection() {
        assert_eq!(put("value=v").operation(), PutOperation::Set);
        assert_eq!(put("prevExist=true").operation(), PutOperation::Update);
        assert_eq!(
            put("prevExist=true&prevValue=a").operation(),
            PutOperation::CompareAndSwap
        );
        assert_eq!(
            put("prevExist=true&prevIndex=3").operation(),
            PutOperation::CompareAndSwap
        );
        assert_eq!(
            put("prevExist=true&prevIndex=0").operation(),
            PutOperation::Update
        );
        assert_eq!(
            put("prevExist=false&prevValue=a").operation(),
            PutOperation::Create
        );
        assert_eq!(put("prevValue=a").operation(), PutOperation::CompareAndSwap);
        assert_eq!(put("prevIndex=7").operation(), PutOperation::CompareAndSwap);
        assert_eq!(put("prevIndex=0").operation(), PutOperation::Set);
    }

    #[test]
    fn ttl_empty_means_permanent_and_refresh() {
        assert_eq!(put("ttl=").ttl, None);
        assert_eq!(put("ttl=0").ttl, Some(0));
        let refresh = put("refresh=true&ttl=5");
        assert!(refresh.refresh);
        assert_eq!(refresh.ttl, Some(5));
        assert!(!put("refresh=false").refresh);
    }

    #[test]
    fn methods_map_to_requests() {
        assert_eq!(
            parse("GET", "/a/b/", "recursive=true&sorted=1&quorum=T").unwrap(),
            KeysRequest::Get {
                key: "/a/b".into(),
                recursive: true,
                sorted: true,
                quorum: true
            }
        );
        assert_eq!(
            parse("HEAD", "", "").unwrap(),
            KeysRequest::Get {
                key: "/".into(),
                recursive: false,
                sorted: false,
                quorum: false
            }
        );
        assert_eq!(
            parse("GET", "/w", "wait=true&waitIndex=12&stream=true").unwrap(),
            KeysRequest::Watch {
                key: "/w".into(),
                recursive: false,
                stream: true,
                wait_index: 12
            }
        );
        assert_eq!(
            parse("POST", "/q", "value=job&ttl=30").unwrap(),
            KeysRequest::Post {
                key: "/q".into(),
                value: "job".into(),
                dir: false,
                ttl: Some(30)
            }
        );
        assert_eq!(
            parse(
                "DELETE",
                "/d",
                "dir=true&recursive=true&prevValue=x&prevIndex=4"
            )
            .unwrap(),
            KeysRequest::Delete {
                key: "/d".into(),
                dir: true,
                recursive: true,
                prev_value: "x".into(),
                prev_index: 4
            }
        );
    }

    #[test]
    fn keys_are_cleaned() {
        assert_eq!(clean_key(""), "/");
        assert_eq!(clean_key("/"), "/");
        assert_eq!(clean_key("/a/b/"), "/a/b");
        assert_eq!(clean_key("a//b/./c/../d"), "/a/b/d");
        assert_eq!(clean_key("/../.."), "/");
    }

    #[test]
    fn no_value_flag() {
        assert!(no_value_on_success(&form("noValueOnSuccess=true")));
        assert!(!no_value_on_success(&form("noValueOnSuccess=false")));
        assert!(!no_value_on_success(&form("")));
    }

    proptest::proptest! {
        /// Any query string either parses or yields one of the validation codes; never a
        /// panic, never another code.
        #[test]
        fn arbitrary_parameters(query in "([a-zA-Z]{1,12}=[-+.0-9a-zA-Z%]{0,6}&){0,6}",
                                method in "(GET|HEAD|PUT|POST|DELETE)") {
            let mut form = Form::new();
            if form.append_encoded(&query).is_ok() {
                if let Err(err) = parse_keys_request(&method, "/k", &form) {
                    proptest::prop_assert!([201, 202, 203, 209, 211, 212].contains(&err.code));
                }
            }
        }

        /// Cleaned keys are absolute, have no empty segments and no trailing slash.
        #[test]
        fn cleaned_keys_are_canonical(raw in "[a-z./]{0,30}") {
            let key = clean_key(&raw);
            proptest::prop_assert!(key.starts_with('/'));
            proptest::prop_assert!(key == "/" || !key.ends_with('/'));
            proptest::prop_assert!(!key.contains("//"));
            proptest::prop_assert_eq!(clean_key(&key), key.clone());
        }
    }
}
