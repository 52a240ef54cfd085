//! Property test: the store against a deliberately simple model.
//!
//! The model keeps every node in one flat `BTreeMap` keyed by full path and implements
//! etcd's rules in the most direct way (linear scans, no TTL index, no tree). Random
//! operations — every kind of PUT (through etcd's selection table), POST, DELETE, clock
//! advances, syncs, snapshot/restore round trips and reads — are applied to both; after
//! each step the answers, every node, the index, the hash/snapshot round trip, and the
//! events seen by a recursive stream watcher on `/` must agree.
//!
//! Cases: `PROPTEST_CASES` (default 96) sequences of up to 60 operations.

mod store_support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use raft_kv::store::{
    Action, Command, DeleteRequest, Event, NodeExtern, PutRequest, Store, StoreError, TryNext,
    UnixNanos,
};
use store_support::T0;

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct MNode {
    dir: bool,
    value: String,
    created: u64,
    modified: u64,
    expiration: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    nodes: BTreeMap<String, MNode>,
    index: u64,
}

type Answer = Result<Event, (u32, String)>;

fn parent(key: &str) -> &str {
    match key.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &key[..i],
    }
}

/// Proper ancestors of a key, root excluded, from the top: `/a/b/c` → `/a`, `/a/b`.
fn ancestors(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in key.char_indices().skip(1) {
        if c == '/' {
            out.push(key[..i].to_owned());
        }
    }
    out
}

fn is_below(key: &str, dir: &str) -> bool {
    key.len() > dir.len() && key.starts_with(dir) && key.as_bytes()[dir.len()] == b'/'
}

impl Model {
    fn ext(&self, key: &str, n: &MNode, now: u64) -> NodeExtern {
        NodeExtern {
            key: key.to_owned(),
            value: if n.dir { None } else { Some(n.value.clone()) },
            dir: n.dir,
            expiration: n.expiration.map(UnixNanos),
            ttl: n
                .expiration
                .map_or(0, |e| UnixNanos(e).ttl_from(UnixNanos(now)).max(0)),
            nodes: Vec::new(),
            modified_index: n.modified,
            created_index: n.created,
        }
    }

    /// etcd's internalGet: Ok(Some(node)), Ok(None) for the root, or the walk error.
    fn walk(&self, key: &str) -> Result<Option<&MNode>, (u32, String)> {
        if key == "/" {
            return Ok(None);
        }
        let mut path = ancestors(key);
        path.push(key.to_owned());
        for (i, p) in path.iter().enumerate() {
            match self.nodes.get(p) {
                None => return Err((100, p.clone())),
                Some(n) if !n.dir && i + 1 < path.len() => return Err((104, p.clone())),
                Some(_) => {}
            }
        }
        Ok(self.nodes.get(key))
    }

    fn exp(ttl: Option<u64>, now: u64) -> Option<u64> {
        ttl.map(|t| now.saturating_add(t.saturating_mul(1_000_000_000)).max(1))
    }

    fn ensure_parents(&mut self, key: &str, index: u64) {
        for a in ancestors(key) {
            self.nodes.entry(a).or_insert(MNode {
                dir: true,
                value: String::new(),
                created: index,
                modified: index,
                expiration: None,
            });
        }
    }

    fn remove_subtree(&mut self, key: &str) {
        self.nodes.retain(|k, _| k != key && !is_below(k, key));
    }

    fn err(&self, code: u32, cause: impl Into<String>) -> Answer {
        Err((code, cause.into()))
    }

    fn ok(&mut self, action: Action, node: NodeExtern, prev: Option<NodeExtern>) -> Answer {
        self.index += 1;
        Ok(Event {
            action,
            node,
            prev_node: prev,
            etcd_index: self.index,
        })
    }

    fn put_file_or_dir(
        &mut self,
        key: &str,
        dir: bool,
        value: &str,
        exp: Option<u64>,
        next: u64,
    ) -> MNode {
        self.ensure_parents(key, next);
        let n = MNode {
            dir,
            value: if dir { String::new() } else { value.to_owned() },
            created: next,
            modified: next,
            expiration: exp,
        };
        self.nodes.insert(key.to_owned(), n.clone());
        n
    }

    fn apply(&mut self, cmd: &Command) -> Answer {
        let next = self.index + 1;
        match cmd.clone() {
            Command::Set {
                key,
                value,
                dir,
                ttl,
                refresh,
                now,
            } => {
                let now = now.0;
                let existing = match self.walk(&key) {
                    Ok(n) => n.cloned(),
                    Err((100, cause)) => {
                        if refresh {
                            return self.err(100, cause);
                        }
                        None
                    }
                    Err((code, cause)) => return self.err(code, cause),
                };
                if key == "/" {
                    return self.err(107, "/");
                }
                let mut value = value;
                if let Some(n) = &existing {
                    if n.dir {
                        return self.err(102, key);
                    }
                    if refresh {
                        value = n.value.clone();
                    }
                }
                let prev = existing.as_ref().map(|n| self.ext(&key, n, now));
                let n = self.put_file_or_dir(&key, dir, &value, Self::exp(ttl, now), next);
                let shown = self.ext(&key, &n, now);
                self.ok(Action::Set, shown, prev)
            }
            Command::Create {
                key,
                value,
                dir,
                ttl,
                now,
            } => self.create(key, &value, dir, ttl, now.0),
            Command::CreateInOrder {
                dir_key,
                value,
                dir,
                ttl,
                now,
            } => {
                let key = if dir_key == "/" {
                    format!("/{next:020}")
                } else {
                    format!("{dir_key}/{next:020}")
                };
                self.create(key, &value, dir, ttl, now.0)
            }
            Command::Update {
                key,
                value,
                ttl,
                refresh,
                now,
            } => {
                let now = now.0;
                if key == "/" {
                    return self.err(107, "/");
                }
                let n = match self.walk(&key) {
                    Ok(Some(n)) => n.clone(),
                    Ok(None) => unreachable!(),
                    Err((code, cause)) => return self.err(code, cause),
                };
                if n.dir && !value.is_empty() {
                    return self.err(102, key);
                }
                let prev = self.ext(&key, &n, now);
                let mut new = n.clone();
                if !n.dir {
                    if !refresh {
                        new.value = value;
                    }
                    new.modified = next;
                }
                new.expiration = Self::exp(ttl, now);
                self.nodes.insert(key.clone(), new.clone());
                let mut shown = self.ext(&key, &new, now);
                shown.modified_index = next;
                self.ok(Action::Update, shown, Some(prev))
            }
            Command::CompareAndSwap {
                key,
                value,
                prev_value,
                prev_index,
                ttl,
                refresh,
                now,
            } => {
                let now = now.0;
                if key == "/" {
                    return self.err(107, "/");
                }
                let n = match self.walk(&key) {
                    Ok(Some(n)) => n.clone(),
                    Ok(None) => unreachable!(),
                    Err((code, cause)) => return self.err(code, cause),
                };
                if n.dir {
                    return self.err(102, key);
                }
                if let Some(cause) = compare_cause(&n, prev_value.as_deref(), prev_index) {
                    return self.err(101, cause);
                }
                let prev = self.ext(&key, &n, now);
                let mut new = n.clone();
                if !refresh {
                    new.value = value;
                }
                new.modified = next;
                new.expiration = Self::exp(ttl, now);
                self.nodes.insert(key.clone(), new.clone());
                let shown = self.ext(&key, &new, now);
                self.ok(Action::CompareAndSwap, shown, Some(prev))
            }
            Command::Delete {
                key,
                dir,
                recursive,
                now,
            } => {
                if key == "/" {
                    return self.err(107, "/");
                }
                let n = match self.walk(&key) {
                    Ok(Some(n)) => n.clone(),
                    Ok(None) => unreachable!(),
                    Err((code, cause)) => return self.err(code, cause),
                };
                let dir = dir || recursive;
                if n.dir {
                    if !dir {
                        return self.err(102, key);
                    }
                    let has_children = self.nodes.keys().any(|k| parent(k) == key);
                    if has_children && !recursive {
                        return self.err(108, key);
                    }
                }
                self.removal(Action::Delete, &key, &n, now.0)
            }
            Command::CompareAndDelete {
                key,
                prev_value,
                prev_index,
                now,
            } => {
                let n = match self.walk(&key) {
                    Ok(Some(n)) => n.clone(),
                    Ok(None) => return self.err(102, ""),
                    Err((code, cause)) => return self.err(code, cause),
                };
                if n.dir {
                    return self.err(102, key);
                }
                if let Some(cause) = compare_cause(&n, prev_value.as_deref(), prev_index) {
                    return self.err(101, cause);
                }
                self.removal(Action::CompareAndDelete, &key, &n, now.0)
            }
            Command::Sync { now } => {
                let _ = self.expire(now.0);
                Ok(Event {
                    action: Action::Sync,
                    node: NodeExtern {
                        dir: true,
                        ..NodeExtern::default()
                    },
                    prev_node: None,
                    etcd_index: self.index,
                })
            }
        }
    }

    fn create(
        &mut self,
        key: String,
        value: &str,
        dir: bool,
        ttl: Option<u64>,
        now: u64,
    ) -> Answer {
        let next = self.index + 1;
        if key == "/" {
            return self.err(107, "/");
        }
        if let Some(file) = ancestors(&key)
            .into_iter()
            .find(|a| self.nodes.get(a).is_some_and(|n| !n.dir))
        {
            return self.err(104, file);
        }
        if self.nodes.contains_key(&key) {
            return self.err(105, key);
        }
        let n = self.put_file_or_dir(&key, dir, value, Self::exp(ttl, now), next);
        let shown = self.ext(&key, &n, now);
        self.ok(Action::Create, shown, None)
    }

    fn removal(&mut self, action: Action, key: &str, n: &MNode, now: u64) -> Answer {
        let next = self.index + 1;
        let prev = self.ext(key, n, now);
        self.remove_subtree(key);
        let node = NodeExtern {
            key: key.to_owned(),
            dir: n.dir,
            modified_index: next,
            created_index: n.created,
            ..NodeExtern::default()
        };
        self.ok(action, node, Some(prev))
    }

    fn expire(&mut self, now: u64) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let due = self
                .nodes
                .iter()
                .filter_map(|(k, n)| n.expiration.filter(|e| *e <= now).map(|e| (e, k.clone())))
                .min();
            let Some((_, key)) = due else { break };
            let n = self.nodes[&key].clone();
            if let Ok(ev) = self.removal(Action::Expire, &key, &n, now) {
                out.push(ev);
            }
        }
        out
    }

    /// What a GET answers (children listed one level, visible ones only).
    fn get(&self, key: &str, now: u64) -> Answer {
        let n = self.walk(key)?;
        let mut node = match n {
            Some(n) => self.ext(key, n, now),
            None => NodeExtern {
                dir: true,
                ..NodeExtern::default()
            },
        };
        if node.dir {
            node.nodes = self
                .nodes
                .iter()
                .filter(|(k, _)| {
                    parent(k) == key && !k.rsplit('/').next().unwrap_or("").starts_with('_')
                })
                .map(|(k, c)| self.ext(k, c, now))
                .collect();
        }
        Ok(Event {
            action: Action::Get,
            node,
            prev_node: None,
            etcd_index: self.index,
        })
    }
}

fn compare_cause(n: &MNode, prev_value: Option<&str>, prev_index: Option<u64>) -> Option<String> {
    let pv = prev_value.filter(|v| !v.is_empty());
    let pi = prev_index.filter(|i| *i > 0);
    let v_ok = pv.is_none_or(|v| v == n.value);
    let i_ok = pi.is_none_or(|i| i == n.modified);
    match (v_ok, i_ok) {
        (true, true) => None,
        (false, true) => Some(format!("[{} != {}]", pv.unwrap_or(""), n.value)),
        (true, false) => Some(format!("[{} != {}]", pi.unwrap_or(0), n.modified)),
        (false, false) => Some(format!(
            "[{} != {}] [{} != {}]",
            pv.unwrap_or(""),
            n.value,
            pi.unwrap_or(0),
            n.modified
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Put(PutRequest),
    Post {
        dir_key: String,
        value: String,
        dir: bool,
        ttl: Option<u64>,
    },
    Delete(DeleteRequest),
    Get(String),
    Advance(u64),
    Sync,
    SnapshotRestore,
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "_h"]), 0..4).prop_map(|segs| {
        if segs.is_empty() {
            "/".to_owned()
        } else {
            format!("/{}", segs.join("/"))
        }
    })
}

fn value_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "x", "y"]).prop_map(str::to_owned)
}

fn ttl_strategy() -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.3, prop::sample::select(vec![0u64, 1, 2, 5]))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let put = (
        key_strategy(),
        value_strategy(),
        any::<bool>(),
        ttl_strategy(),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.2, value_strategy()),
        prop::option::weighted(0.2, 0u64..12),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(key, value, dir, ttl, prev_exist, prev_value, prev_index, refresh)| {
                Op::Put(PutRequest {
                    key,
                    value: if refresh { String::new() } else { value },
                    dir: dir && prev_exist.is_none(),
                    ttl: if refresh { Some(ttl.unwrap_or(3)) } else { ttl },
                    prev_exist,
                    prev_value: prev_value.filter(|v| !v.is_empty()),
                    prev_index,
                    refresh,
                })
            },
        );
    let post = (
        key_strategy(),
        value_strategy(),
        prop::bool::weighted(0.2),
        ttl_strategy(),
    )
        .prop_map(|(dir_key, value, dir, ttl)| Op::Post {
            dir_key,
            value,
            dir,
            ttl,
        });
    let delete = (
        key_strategy(),
        any::<bool>(),
        any::<bool>(),
        prop::option::weighted(0.2, value_strategy()),
        prop::option::weighted(0.2, 0u64..12),
    )
        .prop_map(|(key, dir, recursive, prev_value, prev_index)| {
            Op::Delete(DeleteRequest {
                key,
                dir,
                recursive,
                prev_value,
                prev_index,
            })
        });
    prop_oneof![
        6 => put,
        1 => post,
        3 => delete,
        2 => key_strategy().prop_map(Op::Get),
        2 => (0u64..3_000).prop_map(Op::Advance),
        2 => Just(Op::Sync),
        1 => Just(Op::SnapshotRestore),
    ]
}

// ---------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------

fn store_answer(r: Result<Event, StoreError>) -> Answer {
    r.map_err(|e| (e.code, e.cause))
}

fn is_refresh(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Set { refresh: true, .. }
            | Command::Update { refresh: true, .. }
            | Command::CompareAndSwap { refresh: true, .. }
    )
}

fn visible_to_root_watcher(e: &Event) -> bool {
    !e.node.key.split('/').any(|s| s.starts_with('_'))
}

fn drain(w: &mut raft_kv::store::Watcher) -> Vec<Event> {
    let mut out = Vec::new();
    while let TryNext::Event(e) = w.try_next() {
        out.push(*e);
    }
    out
}

fn run_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut store = Store::new();
    let mut model = Model::default();
    let mut now = T0.0;
    let mut watcher = store.watch("/", true, true, None).unwrap();
    for (step, op) in ops.iter().enumerate() {
        let mut expected_events: Vec<Event> = Vec::new();
        match op {
            Op::Put(req) => {
                let cmd = req.clone().into_command(UnixNanos(now));
                let want = model.apply(&cmd);
                let got = store_answer(store.apply(&cmd));
                prop_assert_eq!(&got, &want, "step {}: {:?}", step, cmd);
                if !is_refresh(&cmd) {
                    expected_events.extend(want.ok());
                }
            }
            Op::Post {
                dir_key,
                value,
                dir,
                ttl,
            } => {
                let cmd = Command::CreateInOrder {
                    dir_key: dir_key.clone(),
                    value: value.clone(),
                    dir: *dir,
                    ttl: *ttl,
                    now: UnixNanos(now),
                };
                let want = model.apply(&cmd);
                let got = store_answer(store.apply(&cmd));
                prop_assert_eq!(&got, &want, "step {}: {:?}", step, cmd);
                expected_events.extend(want.ok());
            }
            Op::Delete(req) => {
                let cmd = req.clone().into_command(UnixNanos(now));
                let want = model.apply(&cmd);
                let got = store_answer(store.apply(&cmd));
                prop_assert_eq!(&got, &want, "step {}: {:?}", step, cmd);
                expected_events.extend(want.ok());
            }
            Op::Get(key) => {
                let got = store_answer(store.get_at(key, false, true, UnixNanos(now)));
                prop_assert_eq!(got, model.get(key, now), "step {}: get {}", step, key);
            }
            Op::Advance(ms) => now += ms * 1_000_000,
            Op::Sync => {
                let want = model.expire(now);
                let got = store.expire(UnixNanos(now));
                prop_assert_eq!(&got, &want, "step {}: sync", step);
                expected_events.extend(want);
            }
            Op::SnapshotRestore => {
                let bytes = store.snapshot();
                let fresh =
                    Store::restore(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(fresh.hash(), store.hash());
                prop_assert_eq!(fresh.snapshot(), bytes.clone());
                // In-place restore keeps the stream watcher registered.
                store
                    .restore_from(&bytes)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(store.watcher_count(), 1);
            }
        }
        prop_assert_eq!(store.index(), model.index, "step {}: index", step);
        if let Err(e) = store.check_invariants() {
            return Err(TestCaseError::fail(format!("step {step}: {e}")));
        }
        // Every node of the model, and nothing else, is in the store.
        prop_assert_eq!(
            store.node_count(),
            model.nodes.len() as u64,
            "step {}: node count",
            step
        );
        for key in model.nodes.keys() {
            let got = store_answer(store.get_at(key, false, true, UnixNanos(now)));
            prop_assert_eq!(got, model.get(key, now), "step {}: node {}", step, key);
        }
        // The root stream watcher saw exactly the visible, non-refresh events.
        let want: Vec<Event> = expected_events
            .into_iter()
            .filter(visible_to_root_watcher)
            .collect();
        let got = drain(&mut watcher);
        prop_assert_eq!(got, want, "step {}: watcher events", step);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        run_ops(&ops)?;
    }
}

// ---------------------------------------------------------------------------------------
// Named regressions and hand-picked sequences
// ---------------------------------------------------------------------------------------

fn put(key: &str, value: &str) -> Op {
    Op::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    })
}

#[test]
fn model_agrees_on_dir_ttl_expiry_with_ttl_children() {
    let ops = vec![
        Op::Put(PutRequest {
            key: "/a".into(),
            dir: true,
            ttl: Some(1),
            ..PutRequest::default()
        }),
        Op::Put(PutRequest {
            key: "/a/b".into(),
            value: "x".into(),
            ttl: Some(2),
            ..PutRequest::default()
        }),
        Op::Put(PutRequest {
            key: "/a/_h".into(),
            value: "x".into(),
            ttl: Some(0),
            ..PutRequest::default()
        }),
        Op::Advance(1_000),
        Op::Sync,
        Op::SnapshotRestore,
        Op::Advance(5_000),
        Op::Sync,
        Op::Get("/".into()),
    ];
    run_ops(&ops).unwrap();
}

#[test]
fn model_agrees_on_replacing_a_ttl_file_with_a_directory() {
    let ops = vec![
        Op::Put(PutRequest {
            key: "/a".into(),
            value: "x".into(),
            ttl: Some(1),
            ..PutRequest::default()
        }),
        Op::Put(PutRequest {
            key: "/a".into(),
            dir: true,
            ..PutRequest::default()
        }),
        put("/a/b", "y"),
        Op::Advance(2_000),
        Op::Sync,
        Op::Get("/a".into()),
    ];
    run_ops(&ops).unwrap();
}

#[test]
fn model_agrees_on_in_order_keys_under_root_and_files() {
    let ops = vec![
        Op::Post {
            dir_key: "/".into(),
            value: "x".into(),
            dir: false,
            ttl: None,
        },
        put("/a", "file"),
        Op::Post {
            dir_key: "/a".into(),
            value: "x".into(),
            dir: false,
            ttl: None,
        },
        Op::Post {
            dir_key: "/b/_h".into(),
            value: "x".into(),
            dir: true,
            ttl: Some(1),
        },
        Op::Advance(1_000),
        Op::Sync,
    ];
    run_ops(&ops).unwrap();
}
