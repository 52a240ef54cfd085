//! The watch-stream checker: did every watcher see every modification under its prefix,
//! once each, in index order, and the same modification at each index as everyone else?
//!
//! Input: each watcher's stream, as a list of [`WatchItem`]s — events, and
//! [`WatchItem::Resync`] markers where the watcher had to start again without continuity
//! (etcd error 401, "the event in requested index is outdated and cleared": the watcher
//! fell more than 1000 events behind). The reference history is the union of all streams
//! plus the acknowledged writes (their answers carry the same index, key, action and
//! value as the event).
//!
//! Anomalies:
//! - **conflict**: two sources disagree on what happened at an index;
//! - **misorder / duplicate**: a watcher's indexes do not strictly increase;
//! - **gap**: between two consecutive events of one watcher (with no resync between
//!   them), the reference history holds a modification under the watcher's prefix that
//!   the watcher did not see;
//! - **missing acknowledged write**: an acknowledged write under the prefix of a watcher
//!   that covered its index (saw events before and after it) is absent from the stream —
//!   the same as a gap, but caught even if no other watcher saw it.

use std::collections::BTreeMap;

/// One modification as a watcher (or a write's answer) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// `modifiedIndex` of the event's node.
    pub index: u64,
    /// The node's key.
    pub key: String,
    /// The action (`set`, `compareAndSwap`, `create`, `delete`, `expire`, ...).
    pub action: String,
    /// The node's value (`None` for deletions and directories).
    pub value: Option<String>,
}

/// One item of a watcher's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// An event.
    Event(WatchEvent),
    /// The watcher restarted without continuity (after error 401).
    Resync,
}

/// A watcher's whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchStream {
    /// A name for reports.
    pub name: String,
    /// The prefix it watched recursively (e.g. `/robust`).
    pub prefix: String,
    /// What it received, in order.
    pub items: Vec<WatchItem>,
}

/// What [`check_watches`] found.
#[derive(Debug, Clone, Default)]
pub struct WatchReport {
    /// Events checked.
    pub events: usize,
    /// Distinct indexes in the reference history.
    pub reference_len: usize,
    /// Resync markers seen.
    pub resyncs: usize,
    /// Anomalies, one line each.
    pub anomalies: Vec<String>,
}

fn under(key: &str, prefix: &str) -> bool {
    key == prefix
        || (key.starts_with(prefix) && key[prefix.len()..].starts_with('/'))
        || prefix == "/"
}

/// Checks `streams` against each other and against `acked` (acknowledged writes, as the
/// events they must have produced).
pub fn check_watches(streams: &[WatchStream], acked: &[WatchEvent]) -> WatchReport {
    let mut report = WatchReport::default();
    let mut reference: BTreeMap<u64, (WatchEvent, String)> = BTreeMap::new();
    let mut add = |event: &WatchEvent, source: &str, report: &mut WatchReport| {
        match reference.get(&event.index) {
            Some((known, known_source)) => {
                // Actions may legitimately differ in name only for the same effect when
                // one source is a write answer (e.g. `update` vs `set`); compare effects.
                if known.key != event.key || known.value != event.value {
                    report.anomalies.push(format!(
                        "conflict at index {}: {} says {:?}, {} says {:?}",
                        event.index, known_source, known, source, event
                    ));
                }
            }
            None => {
                reference.insert(event.index, (event.clone(), source.to_string()));
            }
        }
    };
    for write in acked {
        add(write, "acknowledged write", &mut report);
    }
    for stream in streams {
        for item in &stream.items {
            if let WatchItem::Event(event) = item {
                report.events += 1;
                add(event, &stream.name, &mut report);
            }
        }
    }
    report.reference_len = reference.len();

    for stream in streams {
        let mut last: Option<u64> = None;
        for item in &stream.items {
            match item {
                WatchItem::Resync => {
                    report.resyncs += 1;
                    last = None;
                }
                WatchItem::Event(event) => {
                    if !under(&event.key, &stream.prefix) {
                        report.anomalies.push(format!(
                            "{}: event for {} outside its prefix {}",
                            stream.name, event.key, stream.prefix
                        ));
                    }
                    if let Some(previous) = last {
                        if event.index <= previous {
                            report.anomalies.push(format!(
                                "{}: index {} after {} ({})",
                                stream.name,
                                event.index,
                                previous,
                                if event.index == previous {
                                    "duplicate"
                                } else {
                                    "misordered"
                                }
                            ));
                        } else {
                            for (index, (missed, source)) in
                                reference.range(previous + 1..event.index)
                            {
                                if under(&missed.key, &stream.prefix) {
                                    report.anomalies.push(format!(
                                        "{}: gap, saw {} then {} but missed {} ({:?}, from {})",
                                        stream.name, previous, event.index, index, missed, source
                                    ));
                                }
                            }
                        }
                    }
                    last = Some(event.index.max(last.unwrap_or(0)));
                }
            }
        }
    }
    report
}
