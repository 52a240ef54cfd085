//! The concurrent client workload and its recorder: clients that read (quorum and
//! serializable), set, compare-and-swap, create and delete a few keys under `/robust` on
//! random members, and watchers that follow `/robust` recursively; every operation is
//! recorded with its invoke and complete times and its outcome, in the form the checkers
//! of `raft_kv::check` take.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raft_kv::check::etcd::{
    AckedWrite, CasResult, CreateResult, DeleteResult, History, IndexObservation, KeyOp, KeyOpKind,
    LocalRead,
};
use raft_kv::check::watch::{WatchEvent, WatchItem, WatchStream};
use raft_kv::check::Operation;
use raft_kv::node::rng::SplitMix64;
use serde_json::Value;

use super::http::{encode, request, HttpResult};

/// The prefix every key lives under.
pub const PREFIX: &str = "/robust";

/// Client request timeout (the server's own is 7 s; a paused member makes us wait this).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);

/// Everything recorded during a run.
#[derive(Default)]
pub struct Recorded {
    /// The history for `check_history`.
    pub history: History,
    /// Acknowledged writes as the events they must produce.
    pub acked_events: Vec<WatchEvent>,
    /// Watch streams.
    pub streams: Vec<WatchStream>,
    /// Operations by kind and outcome, for the report.
    pub counts: HashMap<&'static str, u64>,
}

/// The shared recorder.
pub struct Recorder {
    start: Instant,
    /// What was recorded.
    pub data: Mutex<Recorded>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            data: Mutex::new(Recorded::default()),
        })
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn count(&self, what: &'static str) {
        *self.data.lock().counts.entry(what).or_default() += 1;
    }
}

fn node_value(node: &Value) -> Option<(String, u64)> {
    Some((
        node["value"].as_str()?.to_string(),
        node["modifiedIndex"].as_u64()?,
    ))
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// A workload client's settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// Client number (values are `c<id>-<seq>`).
    pub id: u64,
    /// Seed of its choices.
    pub seed: u64,
    /// Number of keys.
    pub keys: usize,
    /// Members' client ports.
    pub ports: Vec<u16>,
}

/// Runs one client until `stop`.
pub fn run_client(config: ClientConfig, recorder: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let mut rng = SplitMix64::new(config.seed);
    let mut seq = 0u64;
    let mut last_seen: HashMap<String, String> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{PREFIX}/k{}", rng.range(0, config.keys as u64));
        let port = config.ports[rng.range(0, config.ports.len() as u64) as usize];
        let path = format!("/v2/keys{key}");
        seq += 1;
        let value = format!("c{}-{}", config.id, seq);
        let roll = rng.range(0, 100);
        let call = recorder.now();
        if roll < 25 {
            let result = request(
                port,
                "GET",
                &format!("{path}?quorum=true"),
                None,
                CLIENT_TIMEOUT,
            );
            let ret = recorder.now();
            let observed = match result {
                HttpResult::Answer {
                    status: 200, body, ..
                } => node_value(&parse(&body)["node"]).map(Some),
                HttpResult::Answer {
                    status: 404, body, ..
                } if parse(&body)["errorCode"] == 100 => Some(None),
                _ => None,
            };
            let Some(observed) = observed else {
                recorder.count("get quorum failed");
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            recorder.count("get quorum");
            let mut data = recorder.data.lock();
            if let Some((v, index)) = &observed {
                last_seen.insert(key.clone(), v.clone());
                data.history.indexes.push(IndexObservation {
                    key: key.clone(),
                    value: v.clone(),
                    index: *index,
                    source: format!("quorum read by c{}", config.id),
                });
            }
            data.history.ops.push(Operation {
                client: config.id,
                call,
                ret: Some(ret),
                op: KeyOp {
                    key,
                    kind: KeyOpKind::Get {
                        value: observed.map(|(v, _)| v),
                    },
                },
            });
        } else if roll < 40 {
            let result = request(port, "GET", &path, None, CLIENT_TIMEOUT);
            let ret = recorder.now();
            let observed = match result {
                HttpResult::Answer {
                    status: 200, body, ..
                } => node_value(&parse(&body)["node"]).map(Some),
                HttpResult::Answer {
                    status: 404, body, ..
                } if parse(&body)["errorCode"] == 100 => Some(None),
                _ => None,
            };
            let Some(observed) = observed else {
                recorder.count("get local failed");
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            recorder.count("get local");
            recorder.data.lock().history.local_reads.push(LocalRead {
                key,
                ret,
                value: observed,
            });
        } else {
            // A write.
            let (kind_name, form, method) = if roll < 65 {
                ("set", format!("value={}", encode(&value)), "PUT")
            } else if roll < 85 {
                let expect = last_seen
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| format!("c{}-{}", config.id, seq / 2));
                (
                    "cas",
                    format!("value={}&prevValue={}", encode(&value), encode(&expect)),
                    "PUT",
                )
            } else if roll < 93 {
                (
                    "create",
                    format!("value={}&prevExist=false", encode(&value)),
                    "PUT",
                )
            } else {
                ("delete", String::new(), "DELETE")
            };
            let expect = form
                .split('&')
                .find_map(|kv| kv.strip_prefix("prevValue="))
                .map(|_| {
                    last_seen
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| format!("c{}-{}", config.id, seq / 2))
                });
            let result = if method == "DELETE" {
                request(port, "DELETE", &path, None, CLIENT_TIMEOUT)
            } else {
                request(port, "PUT", &path, Some(&form), CLIENT_TIMEOUT)
            };
            let ret = recorder.now();
            let (status, body) = match result {
                HttpResult::NotSent(_) => {
                    recorder.count("write not sent");
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                HttpResult::NoAnswer(_) => (0, Value::Null),
                HttpResult::Answer { status, body, .. } => (status, parse(&body)),
            };
            let code = body["errorCode"].as_u64();
            let ok = (200..300).contains(&status);
            let mut data = recorder.data.lock();
            let mut acked: Option<(u64, &'static str, Option<String>)> = None;
            let kind = match kind_name {
                "set" => {
                    if ok {
                        let prev = node_value(&body["prevNode"]);
                        acked = Some((
                            body["node"]["modifiedIndex"].as_u64().unwrap_or(0),
                            "set",
                            Some(value.clone()),
                        ));
                        if let Some((p, i)) = &prev {
                            data.history.indexes.push(IndexObservation {
                                key: key.clone(),
                                value: p.clone(),
                                index: *i,
                                source: format!("prevNode of c{}'s set", config.id),
                            });
                        }
                        KeyOpKind::Set {
                            value: value.clone(),
                            prev: Some(prev.map(|(v, _)| v)),
                        }
                    } else {
                        KeyOpKind::Set {
                            value: value.clone(),
                            prev: None,
                        }
                    }
                }
                "cas" => {
                    let expect = expect.clone().unwrap_or_default();
                    let result = if ok {
                        acked = Some((
                            body["node"]["modifiedIndex"].as_u64().unwrap_or(0),
                            "compareAndSwap",
                            Some(value.clone()),
                        ));
                        CasResult::Swapped
                    } else if code == Some(101) {
                        let cause = body["cause"].as_str().unwrap_or("");
                        let actual = cause
                            .strip_prefix('[')
                            .and_then(|c| c.strip_suffix(']'))
                            .and_then(|c| c.split_once(" != "))
                            .map(|(_, a)| a.to_string());
                        CasResult::CompareFailed { actual }
                    } else if code == Some(100) {
                        CasResult::NotFound
                    } else {
                        CasResult::Unknown
                    };
                    KeyOpKind::Cas {
                        expect,
                        value: value.clone(),
                        result,
                    }
                }
                "create" => {
                    let result = if ok {
                        acked = Some((
                            body["node"]["modifiedIndex"].as_u64().unwrap_or(0),
                            "create",
                            Some(value.clone()),
                        ));
                        CreateResult::Created
                    } else if code == Some(105) {
                        CreateResult::Exists
                    } else {
                        CreateResult::Unknown
                    };
                    KeyOpKind::Create {
                        value: value.clone(),
                        result,
                    }
                }
                _ => {
                    let result = if ok {
                        acked = Some((
                            body["node"]["modifiedIndex"].as_u64().unwrap_or(0),
                            "delete",
                            None,
                        ));
                        DeleteResult::Deleted {
                            prev: node_value(&body["prevNode"]).map(|(v, _)| v),
                        }
                    } else if code == Some(100) {
                        DeleteResult::NotFound
                    } else {
                        DeleteResult::Unknown
                    };
                    KeyOpKind::Delete { result }
                }
            };
            let outcome = if kind.is_unknown() {
                "unknown"
            } else if acked.is_some() {
                "ok"
            } else {
                "refused"
            };
            *data
                .counts
                .entry(match (kind_name, outcome) {
                    ("set", "ok") => "set ok",
                    ("set", _) => "set unknown",
                    ("cas", "ok") => "cas ok",
                    ("cas", "refused") => "cas failed",
                    ("cas", _) => "cas unknown",
                    ("create", "ok") => "create ok",
                    ("create", "refused") => "create exists",
                    ("create", _) => "create unknown",
                    (_, "ok") => "delete ok",
                    (_, "refused") => "delete not found",
                    _ => "delete unknown",
                })
                .or_default() += 1;
            match &kind {
                KeyOpKind::Set { .. }
                | KeyOpKind::Cas {
                    result: CasResult::Swapped,
                    ..
                }
                | KeyOpKind::Create {
                    result: CreateResult::Created,
                    ..
                } if ok => {
                    last_seen.insert(key.clone(), value.clone());
                }
                KeyOpKind::Cas {
                    result: CasResult::CompareFailed { actual: Some(a) },
                    ..
                } => {
                    last_seen.insert(key.clone(), a.clone());
                }
                _ => {}
            }
            if let Some((index, action, new_value)) = acked {
                if let Some(v) = &new_value {
                    data.history.indexes.push(IndexObservation {
                        key: key.clone(),
                        value: v.clone(),
                        index,
                        source: format!("c{}'s {kind_name}", config.id),
                    });
                }
                data.history.acked_writes.push(AckedWrite {
                    call,
                    ret,
                    index,
                    key: key.clone(),
                });
                data.acked_events.push(WatchEvent {
                    index,
                    key: key.clone(),
                    action: action.to_string(),
                    value: new_value,
                });
            }
            data.history.ops.push(Operation {
                client: config.id,
                call,
                ret: if kind.is_unknown() { None } else { Some(ret) },
                op: KeyOp { key, kind },
            });
        }
    }
}

/// A watcher: follows `PREFIX` recursively from index 1, moving to another member when
/// its member fails; stops once `stop` is set and it has seen `until` (if set) or after
/// `stop` has been set for 45 s (a slow CI machine).
pub fn run_watcher(
    name: String,
    seed: u64,
    ports: Vec<u16>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    until: Arc<AtomicU64>,
) -> WatchStream {
    let mut rng = SplitMix64::new(seed);
    let mut items = Vec::new();
    let mut next = 1u64;
    let mut port = ports[rng.range(0, ports.len() as u64) as usize];
    let mut stop_since: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let since = *stop_since.get_or_insert_with(Instant::now);
            let target = until.load(Ordering::Relaxed);
            if (target != 0 && next > target) || since.elapsed() > Duration::from_secs(45) {
                break;
            }
        }
        let path = format!("/v2/keys{PREFIX}?wait=true&recursive=true&waitIndex={next}");
        match request(port, "GET", &path, None, Duration::from_secs(2)) {
            HttpResult::Answer {
                status: 200, body, ..
            } => {
                let json = parse(&body);
                let node = &json["node"];
                let (Some(index), Some(key)) =
                    (node["modifiedIndex"].as_u64(), node["key"].as_str())
                else {
                    continue;
                };
                let value = node["value"].as_str().map(String::from);
                let event = WatchEvent {
                    index,
                    key: key.to_string(),
                    action: json["action"].as_str().unwrap_or("").to_string(),
                    value: value.clone(),
                };
                let now = recorder.now();
                let mut data = recorder.data.lock();
                if let Some(v) = &value {
                    let at = data.history.extra_observed.entry(v.clone()).or_insert(now);
                    *at = (*at).min(now);
                    data.history.indexes.push(IndexObservation {
                        key: key.to_string(),
                        value: v.clone(),
                        index,
                        source: format!("watcher {name}"),
                    });
                }
                drop(data);
                items.push(WatchItem::Event(event));
                next = index + 1;
            }
            HttpResult::Answer { body, .. } if parse(&body)["errorCode"] == 401 => {
                let current = parse(&body)["index"].as_u64().unwrap_or(next);
                items.push(WatchItem::Resync);
                next = current + 1;
            }
            HttpResult::Answer { .. } | HttpResult::NotSent(_) => {
                port = ports[rng.range(0, ports.len() as u64) as usize];
                thread::sleep(Duration::from_millis(50));
            }
            HttpResult::NoAnswer(_) => {
                // A long poll that timed out (no event yet) or a member that failed.
                if rng.chance(1, 3) {
                    port = ports[rng.range(0, ports.len() as u64) as usize];
                }
            }
        }
    }
    WatchStream {
        name,
        prefix: PREFIX.to_string(),
        items,
    }
}

/// A member's view of `PREFIX` (serializable read): its `X-Etcd-Index` and the body.
pub fn local_tree(port: u16) -> Option<(u64, String)> {
    match request(
        port,
        "GET",
        &format!("/v2/keys{PREFIX}?recursive=true&sorted=true"),
        None,
        Duration::from_secs(3),
    ) {
        HttpResult::Answer {
            status,
            etcd_index,
            body,
        } if status == 200 || status == 404 => Some((etcd_index.unwrap_or(0), body)),
        _ => None,
    }
}
