//! The etcd v2 key model for [`check_linearizable`], and the
//! checks of etcd's global `modifiedIndex` that a per-key register cannot express.
//!
//! Each key is a register holding `Option<value>` (absent, or a file's value). A history
//! is a list of [`KeyOp`]s, each for one key, with invoke/complete times; [`check_history`]
//! splits it by key and checks each key alone (linearizability is local: a history is
//! linearizable iff each object's sub-history is), then checks indexes across keys:
//!
//! - **one index per value**: every observation of a value (the write's own answer, a
//!   read, a `prevNode`, a watch event) carries the same `modifiedIndex`;
//! - **distinct indexes**: two different written values never share an index;
//! - **indexes grow in real time**: a write invoked after another write completed has a
//!   larger index.
//!
//! Serializable (non-quorum) reads may be stale, so they are not part of the
//! linearizability check; [`check_history`] checks only that they return a value that some
//! write invoked before the read completed wrote, with that write's index (no phantom,
//! no future, no torn values).
//!
//! Values must be unique per write. An unknown-outcome write whose value no one ever
//! observed is dropped before the search when that is sound (it cannot be told apart from
//! a write that never happened), and one whose value was observed gets the time of that
//! observation as its completion; see [`resolve_unknown`].

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{check_linearizable, Counterexample, Model, Operation, Verdict};

/// What one operation on one key asked and answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyOpKind {
    /// A linearizable read (`quorum=true`): the value, or `None` for "key not found"
    /// (error 100).
    Get {
        /// What it returned.
        value: Option<String>,
    },
    /// `PUT value=v`. `prev` is the answer's `prevNode` value (`Some(None)`: the answer
    /// had no `prevNode`), or `None` when the outcome is unknown.
    Set {
        /// The value written.
        value: String,
        /// What the answer said was there before.
        prev: Option<Option<String>>,
    },
    /// `PUT value=v&prevValue=e`.
    Cas {
        /// `prevValue`.
        expect: String,
        /// The value written on success.
        value: String,
        /// The answer.
        result: CasResult,
    },
    /// `PUT value=v&prevExist=false`.
    Create {
        /// The value written on success.
        value: String,
        /// The answer.
        result: CreateResult,
    },
    /// `DELETE`.
    Delete {
        /// The answer.
        result: DeleteResult,
    },
}

/// The answer to a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CasResult {
    /// It swapped.
    Swapped,
    /// Error 101 (compare failed); `actual` is the current value when the error's cause
    /// (`[expect != actual]`) named it.
    CompareFailed {
        /// The value the cause named.
        actual: Option<String>,
    },
    /// Error 100: the key did not exist.
    NotFound,
    /// No definite answer.
    Unknown,
}

/// The answer to a create (`prevExist=false`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CreateResult {
    /// Created.
    Created,
    /// Error 105: the key already existed.
    Exists,
    /// No definite answer.
    Unknown,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeleteResult {
    /// Deleted; the `prevNode` value.
    Deleted {
        /// What was there.
        prev: Option<String>,
    },
    /// Error 100.
    NotFound,
    /// No definite answer.
    Unknown,
}

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyOp {
    /// The key.
    pub key: String,
    /// What it did.
    pub kind: KeyOpKind,
}

/// The per-key register model (state: the key's value, or `None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdKeyModel;

impl Model for EtcdKeyModel {
    type State = Option<String>;
    type Op = KeyOpKind;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(&self, state: &Option<String>, op: &KeyOpKind) -> Vec<Option<String>> {
        let same = || vec![state.clone()];
        match op {
            KeyOpKind::Get { value } => {
                if value == state {
                    same()
                } else {
                    vec![]
                }
            }
            KeyOpKind::Set { value, prev } => match prev {
                Some(prev) if prev != state => vec![],
                Some(_) => vec![Some(value.clone())],
                None => vec![Some(value.clone()), state.clone()],
            },
            KeyOpKind::Cas {
                expect,
                value,
                result,
            } => {
                let matches = state.as_deref() == Some(expect.as_str());
                match result {
                    CasResult::Swapped if matches => vec![Some(value.clone())],
                    CasResult::Swapped => vec![],
                    CasResult::CompareFailed { actual } => {
                        let ok = state.is_some()
                            && !matches
                            && actual.as_ref().is_none_or(|a| Some(a) == state.as_ref());
                        if ok {
                            same()
                        } else {
                            vec![]
                        }
                    }
                    CasResult::NotFound if state.is_none() => same(),
                    CasResult::NotFound => vec![],
                    CasResult::Unknown if matches => vec![Some(value.clone()), state.clone()],
                    CasResult::Unknown => same(),
                }
            }
            KeyOpKind::Create { value, result } => match result {
                CreateResult::Created if state.is_none() => vec![Some(value.clone())],
                CreateResult::Created => vec![],
                CreateResult::Exists if state.is_some() => same(),
                CreateResult::Exists => vec![],
                CreateResult::Unknown if state.is_none() => vec![Some(value.clone()), None],
                CreateResult::Unknown => same(),
            },
            KeyOpKind::Delete { result } => match result {
                DeleteResult::Deleted { prev } if state.is_some() && prev == state => {
                    vec![None]
                }
                DeleteResult::Deleted { .. } => vec![],
                DeleteResult::NotFound if state.is_none() => same(),
                DeleteResult::NotFound => vec![],
                DeleteResult::Unknown if state.is_some() => vec![None, state.clone()],
                DeleteResult::Unknown => same(),
            },
        }
    }
}

impl KeyOpKind {
    /// The value this operation writes (if it is a write that writes one).
    pub fn written_value(&self) -> Option<&str> {
        match self {
            KeyOpKind::Set { value, .. }
            | KeyOpKind::Cas { value, .. }
            | KeyOpKind::Create { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Whether the outcome is unknown.
    pub fn is_unknown(&self) -> bool {
        match self {
            KeyOpKind::Get { .. } => false,
            KeyOpKind::Set { prev, .. } => prev.is_none(),
            KeyOpKind::Cas { result, .. } => *result == CasResult::Unknown,
            KeyOpKind::Create { result, .. } => *result == CreateResult::Unknown,
            KeyOpKind::Delete { result } => *result == DeleteResult::Unknown,
        }
    }

    /// Values this operation's answer shows were present at some point.
    fn observed_values(&self) -> Vec<&str> {
        let mut out = Vec::new();
        match self {
            KeyOpKind::Get { value } => out.extend(value.as_deref()),
            KeyOpKind::Set { prev, .. } => out.extend(prev.as_ref().and_then(|p| p.as_deref())),
            KeyOpKind::Cas { expect, result, .. } => match result {
                CasResult::Swapped => out.push(expect.as_str()),
                CasResult::CompareFailed { actual } => out.extend(actual.as_deref()),
                _ => {}
            },
            KeyOpKind::Create { .. } => {}
            KeyOpKind::Delete { result } => {
                if let DeleteResult::Deleted { prev } = result {
                    out.extend(prev.as_deref());
                }
            }
        }
        out
    }
}

/// What [`resolve_unknown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Unknown-outcome writes dropped because no one ever observed their value.
    pub pruned: usize,
    /// Unknown-outcome writes whose completion was bounded by the first observation of
    /// their value.
    pub bounded: usize,
}

/// Narrows unknown-outcome writes before the search, where that cannot change the
/// verdict:
///
/// - **observed** values: the write took effect before the first operation that observed
///   its value completed (values are unique), so its open end becomes that time;
/// - **unobserved** values: the write is dropped. If it took effect, no later read,
///   `prevNode`, compare-and-swap or delete answer showed its value, so every operation up
///   to the next effective write on the key would have answered the same had it never
///   happened — *except* a create answered "exists" (error 105, which names no value) and
///   a failed compare (101) whose cause was not parsed. Keys with such answers keep their
///   unobserved unknown writes.
///
/// `extra_observed` maps values seen outside `ops` (watch events, final reads) to the
/// time they were first seen.
pub fn resolve_unknown(
    ops: &mut Vec<Operation<KeyOp>>,
    extra_observed: &HashMap<String, u64>,
) -> Resolved {
    resolve(ops, extra_observed, false)
}

/// Like [`resolve_unknown`], but drops *every* unknown-outcome write whose value no one
/// observed, even on keys with "exists" or unparsed compare-failed answers. A history
/// narrowed this way that is linearizable proves the original one is (each dropped write
/// simply did not take effect); one that is not must be checked again without the
/// extra pruning before it is called an anomaly ([`check_history`] does both).
pub fn resolve_unknown_aggressively(
    ops: &mut Vec<Operation<KeyOp>>,
    extra_observed: &HashMap<String, u64>,
) -> Resolved {
    resolve(ops, extra_observed, true)
}

fn resolve(
    ops: &mut Vec<Operation<KeyOp>>,
    extra_observed: &HashMap<String, u64>,
    aggressive: bool,
) -> Resolved {
    let mut observed: HashMap<String, u64> = extra_observed.clone();
    let mut keep_all_keys: HashSet<String> = HashSet::new();
    for op in ops.iter() {
        if let Some(ret) = op.ret {
            for value in op.op.kind.observed_values() {
                let at = observed.entry(value.to_string()).or_insert(ret);
                *at = (*at).min(ret);
            }
        }
        match &op.op.kind {
            KeyOpKind::Create {
                result: CreateResult::Exists,
                ..
            }
            | KeyOpKind::Cas {
                result: CasResult::CompareFailed { actual: None },
                ..
            } => {
                keep_all_keys.insert(op.op.key.clone());
            }
            _ => {}
        }
    }
    // An unknown-outcome compare-and-swap whose written value was observed took effect,
    // so its expected value was present before then: observed too (to a fixpoint, as
    // that may in turn prove another unknown compare-and-swap took effect).
    loop {
        let mut changed = false;
        for op in ops.iter() {
            if let KeyOpKind::Cas {
                expect,
                value,
                result: CasResult::Unknown,
            } = &op.op.kind
            {
                if let Some(&seen) = observed.get(value.as_str()) {
                    let at = observed.entry(expect.clone()).or_insert(u64::MAX);
                    if seen < *at {
                        *at = seen;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut resolved = Resolved::default();
    let mut keep = Vec::with_capacity(ops.len());
    for op in ops.iter_mut() {
        let mut kept = true;
        if op.op.kind.is_unknown() {
            if let Some(value) = op.op.kind.written_value() {
                match observed.get(value) {
                    Some(&seen) => {
                        op.ret = Some(seen.max(op.call));
                        resolved.bounded += 1;
                    }
                    None if aggressive || !keep_all_keys.contains(&op.op.key) => {
                        kept = false;
                        resolved.pruned += 1;
                    }
                    None => {}
                }
            }
        }
        keep.push(kept);
    }
    let mut i = 0;
    ops.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    resolved
}

/// One observation of a value with its `modifiedIndex` (from a write's answer, a read, a
/// `prevNode`, a watch event...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexObservation {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The `modifiedIndex` it was seen with.
    pub index: u64,
    /// Where it was seen (for reports).
    pub source: String,
}

/// An acknowledged write with its index and times, for the real-time index check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedWrite {
    /// When it was invoked.
    pub call: u64,
    /// When it completed.
    pub ret: u64,
    /// The `modifiedIndex` of the answer's node.
    pub index: u64,
    /// The key (for reports).
    pub key: String,
}

/// A serializable (non-quorum) read: may be stale, must not be invented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRead {
    /// The key.
    pub key: String,
    /// When it completed.
    pub ret: u64,
    /// What it returned: value and `modifiedIndex`, or `None` for "not found".
    pub value: Option<(String, u64)>,
}

/// Everything a robustness run recorded, ready to check.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Linearizable operations (quorum reads and all writes).
    pub ops: Vec<Operation<KeyOp>>,
    /// Every value-with-index observation.
    pub indexes: Vec<IndexObservation>,
    /// Acknowledged writes with their indexes.
    pub acked_writes: Vec<AckedWrite>,
    /// Serializable reads.
    pub local_reads: Vec<LocalRead>,
    /// Values observed outside `ops` (watch events, final reads), with the time each
    /// was first seen.
    pub extra_observed: HashMap<String, u64>,
}

/// What [`check_history`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Keys checked.
    pub keys: usize,
    /// Operations checked for linearizability (after pruning).
    pub ops_checked: usize,
    /// Unknown-outcome writes pruned as unobservable.
    pub pruned: usize,
    /// Unknown-outcome writes bounded by the first observation of their value.
    pub bounded: usize,
    /// Unknown-outcome operations that remained in the search.
    pub unknown_kept: usize,
    /// Serializable reads checked.
    pub local_reads_checked: usize,
    /// Anomalies, one line each (empty: the history is fine).
    pub anomalies: Vec<String>,
    /// Keys whose search ran out of budget.
    pub inconclusive: Vec<String>,
}

/// Checks a whole history: per-key linearizability, the index rules, serializable reads.
pub fn check_history(history: &History, budget_per_key: u64) -> Report {
    let mut report = Report::default();
    // Two narrowings of the history (see `resolve_unknown_aggressively`): the fast one is
    // checked first; only a key it cannot explain is checked again in full.
    let mut fast = history.ops.clone();
    let fast_resolved = resolve_unknown_aggressively(&mut fast, &history.extra_observed);
    let mut full = history.ops.clone();
    let full_resolved = resolve_unknown(&mut full, &history.extra_observed);
    report.pruned = fast_resolved.pruned;
    report.bounded = full_resolved.bounded;
    report.unknown_kept = fast.iter().filter(|o| o.op.kind.is_unknown()).count();
    report.ops_checked = fast.len();

    let by_key = |ops: Vec<Operation<KeyOp>>| {
        let mut by_key: BTreeMap<String, Vec<Operation<KeyOpKind>>> = BTreeMap::new();
        for op in ops {
            by_key
                .entry(op.op.key.clone())
                .or_default()
                .push(Operation {
                    client: op.client,
                    call: op.call,
                    ret: op.ret,
                    op: op.op.kind,
                });
        }
        by_key
    };
    let fast = by_key(fast);
    let mut full = by_key(full);
    report.keys = fast.len().max(full.len());
    for (key, key_ops) in &fast {
        let verdict = check_linearizable(&EtcdKeyModel, key_ops, budget_per_key);
        let Verdict::Linearizable = verdict else {
            let full_ops = full.remove(key).unwrap_or_default();
            let same = full_ops.len() == key_ops.len();
            let full_verdict = if same {
                verdict.clone()
            } else {
                check_linearizable(&EtcdKeyModel, &full_ops, budget_per_key)
            };
            match (full_verdict, verdict) {
                (Verdict::Linearizable, _) => {}
                (Verdict::NotLinearizable(counterexample), _) => {
                    report
                        .anomalies
                        .push(describe(key, &full_ops, &counterexample));
                }
                (Verdict::Inconclusive { steps }, Verdict::NotLinearizable(counterexample)) => {
                    report.anomalies.push(format!(
                        "{} (with the {} unobserved unknown-outcome writes of this key set \
                         aside; with them the search gave up after {steps} steps)",
                        describe(key, key_ops, &counterexample),
                        full_ops.len() - key_ops.len()
                    ));
                }
                (Verdict::Inconclusive { steps }, _) => {
                    report
                        .inconclusive
                        .push(format!("{key}: gave up after {steps} steps"));
                }
            }
            continue;
        };
    }

    // One index per value; distinct values, distinct indexes.
    let mut index_of: HashMap<(&str, &str), (u64, &str)> = HashMap::new();
    let mut value_at: HashMap<u64, (&str, &str, &str)> = HashMap::new();
    for obs in &history.indexes {
        let key_value = (obs.key.as_str(), obs.value.as_str());
        match index_of.get(&key_value) {
            Some(&(index, source)) if index != obs.index => report.anomalies.push(format!(
                "{}={:?} seen with modifiedIndex {} ({}) and {} ({})",
                obs.key, obs.value, index, source, obs.index, obs.source
            )),
            Some(_) => {}
            None => {
                index_of.insert(key_value, (obs.index, obs.source.as_str()));
            }
        }
        match value_at.get(&obs.index) {
            Some(&(key, value, source)) if (key, value) != key_value => {
                report.anomalies.push(format!(
                    "modifiedIndex {} holds {}={:?} ({}) and {}={:?} ({})",
                    obs.index, key, value, source, obs.key, obs.value, obs.source
                ))
            }
            Some(_) => {}
            None => {
                value_at.insert(obs.index, (&obs.key, &obs.value, &obs.source));
            }
        }
    }

    // Indexes grow in real time.
    let mut by_ret: Vec<&AckedWrite> = history.acked_writes.iter().collect();
    by_ret.sort_by_key(|w| w.ret);
    let mut by_call: Vec<&AckedWrite> = history.acked_writes.iter().collect();
    by_call.sort_by_key(|w| w.call);
    let mut done = 0;
    let mut max_done: Option<&AckedWrite> = None;
    for write in by_call {
        while done < by_ret.len() && by_ret[done].ret < write.call {
            if max_done.is_none_or(|m| by_ret[done].index > m.index) {
                max_done = Some(by_ret[done]);
            }
            done += 1;
        }
        if let Some(earlier) = max_done {
            if earlier.index >= write.index {
                report.anomalies.push(format!(
                    "write to {} completed with modifiedIndex {} before a write to {} was \
                     invoked, which got modifiedIndex {}",
                    earlier.key, earlier.index, write.key, write.index
                ));
            }
        }
    }

    // Quorum reads never go back in time: once a write to a key (or a quorum read of it)
    // completed with modifiedIndex i, a quorum read of the key invoked later returns a
    // node with modifiedIndex >= i. Values are unique, so a smaller index is a stale read
    // (a cheap, crisp witness of what the search would also reject).
    let mut events: Vec<(u64, bool, &str, u64, String)> = Vec::new(); // (time, is_call, key, index, what)
    for write in &history.acked_writes {
        events.push((write.ret, false, &write.key, write.index, "write".into()));
    }
    for op in &history.ops {
        let (KeyOpKind::Get { value: Some(value) }, Some(ret)) = (&op.op.kind, op.ret) else {
            continue;
        };
        let Some(&(index, _)) = index_of.get(&(op.op.key.as_str(), value.as_str())) else {
            continue;
        };
        let what = format!("quorum read by client {} of {:?}", op.client, value);
        events.push((op.call, true, &op.op.key, index, what.clone()));
        events.push((ret, false, &op.op.key, index, what));
    }
    // Completions strictly before a call count; at equal times the call goes first.
    events.sort_by_key(|a| (a.0, !a.1));
    let mut newest: HashMap<&str, (u64, String)> = HashMap::new();
    for (_, is_call, key, index, what) in events {
        if is_call {
            if let Some((seen, by)) = newest.get(key) {
                if index < *seen {
                    report.anomalies.push(format!(
                        "stale read of {key}: {what} returned modifiedIndex {index} after a {by} \
                         with modifiedIndex {seen} had completed"
                    ));
                }
            }
        } else {
            let entry = newest.entry(key).or_insert((0, String::new()));
            if index > entry.0 {
                *entry = (index, what);
            }
        }
    }

    // Serializable reads: a value some write (invoked before the read completed) wrote.
    let mut first_call: HashMap<(&str, &str), u64> = HashMap::new();
    for op in &history.ops {
        if let Some(value) = op.op.kind.written_value() {
            let entry = first_call
                .entry((op.op.key.as_str(), value))
                .or_insert(op.call);
            *entry = (*entry).min(op.call);
        }
    }
    for read in &history.local_reads {
        report.local_reads_checked += 1;
        let Some((value, index)) = &read.value else {
            continue;
        };
        let key_value = (read.key.as_str(), value.as_str());
        match first_call.get(&key_value) {
            None => report.anomalies.push(format!(
                "serializable read of {} returned {:?}, which no one wrote",
                read.key, value
            )),
            Some(&call) if call > read.ret => report.anomalies.push(format!(
                "serializable read of {} returned {:?} before its write was invoked",
                read.key, value
            )),
            Some(_) => {}
        }
        if let Some(&(expected, source)) = index_of.get(&key_value) {
            if expected != *index {
                report.anomalies.push(format!(
                    "serializable read of {} returned {:?} with modifiedIndex {}, elsewhere {} ({})",
                    read.key, value, index, expected, source
                ));
            }
        }
    }
    report
}

fn describe(key: &str, ops: &[Operation<KeyOpKind>], counterexample: &Counterexample) -> String {
    let mut text = format!(
        "key {key}: not linearizable ({} ops); longest linearizable prefix of {} ops ends in state {}",
        ops.len(),
        counterexample.longest_prefix.len(),
        counterexample.state
    );
    let tail = counterexample.longest_prefix.len().saturating_sub(5);
    for &i in &counterexample.longest_prefix[tail..] {
        text.push_str(&format!("\n    ... {}", render(&ops[i])));
    }
    if let Some(i) = counterexample.stuck_on {
        text.push_str(&format!("\n    cannot follow: {}", render(&ops[i])));
    }
    text
}

fn render(op: &Operation<KeyOpKind>) -> String {
    let ret = op
        .ret
        .map(|r| format!("{:.3}s", r as f64 / 1e9))
        .unwrap_or_else(|| "?".into());
    format!(
        "client {} [{:.3}s..{}] {:?}",
        op.client,
        op.call as f64 / 1e9,
        ret,
        op.op
    )
}
