//! A tiny golden-script runner for `raft_kv::store` (shared by the `store_*` tests).
//!
//! A script is a list of commands, each a line starting with `> `, followed by the exact
//! lines it must print. Requests print `<HTTP status> <JSON body>`, as the v2 server would
//! answer them. Commands:
//!
//! ```text
//! > put KEY [VALUE] [dir] [refresh] [ttl=N|ttl=] [prevExist=B] [prevValue=V] [prevIndex=N]
//! > post KEY [VALUE] [dir] [ttl=N]
//! > delete KEY [dir] [recursive] [prevValue=V] [prevIndex=N]
//! > get KEY [recursive]
//! > clock +SECONDS          advance the proposer/reader clock (fractions allowed)
//! > sync                    apply Sync{now: clock}, prints the expire events
//! > watch NAME KEY [recursive] [stream] [waitIndex=N]
//! > events NAME             print queued events, then (pending) or (closed)
//! > drop NAME               drop a watcher
//! > stats                   the /v2/stats/store JSON
//! > index                   the etcd index
//! > snapshot-restore        replace the store with Store::restore(snapshot), check hash
//! ```
//!
//! Tokens may be JSON string literals (`"a b"`, `prevValue="x y"`). The clock starts at
//! 2026-01-01T00:00:00Z. Set `STORE_BLESS=1` to print the actual transcript of a failing
//! script instead of only the diff.

#![allow(dead_code)] // reason: each test binary uses a different subset of the helpers

use std::collections::HashMap;

use raft_kv::store::{
    Command, DeleteRequest, Event, PutRequest, Store, StoreError, TryNext, UnixNanos, Watcher,
};

/// 2026-01-01T00:00:00Z.
pub const T0: UnixNanos = UnixNanos(1_767_225_600 * UnixNanos::SECOND);

/// The script interpreter's state.
pub struct Runner {
    pub store: Store,
    pub clock: UnixNanos,
    watchers: HashMap<String, Watcher>,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            store: Store::new(),
            clock: T0,
            watchers: HashMap::new(),
        }
    }
}

fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut tok = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            if c == '"' {
                // A JSON string literal (possibly after `name=`).
                let mut lit = String::new();
                lit.push(chars.next().unwrap());
                let mut escaped = false;
                for c in chars.by_ref() {
                    lit.push(c);
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                let s: String = serde_json::from_str(&lit).expect("bad string literal in script");
                tok.push_str(&s);
            } else {
                tok.push(c);
                chars.next();
            }
        }
        out.push(tok);
    }
    out
}

fn answer(r: Result<Event, StoreError>) -> String {
    match r {
        Ok(e) => format!(
            "{} {}",
            e.http_status(),
            String::from_utf8(e.to_json_line()).unwrap().trim_end()
        ),
        Err(e) => format!(
            "{} {}",
            e.http_status(),
            String::from_utf8(e.to_json_line()).unwrap().trim_end()
        ),
    }
}

impl Runner {
    /// Runs one command line, returning what it prints.
    pub fn exec(&mut self, line: &str) -> Vec<String> {
        let toks = tokenize(line);
        let (cmd, args) = toks.split_first().expect("empty command");
        let positional: Vec<&String> = args
            .iter()
            .filter(|a| !is_option(a) && !is_flag(a))
            .collect();
        let flag = |name: &str| args.iter().any(|a| a == name);
        let opt = |name: &str| -> Option<String> {
            args.iter()
                .find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_owned))
        };
        let key = || {
            positional
                .first()
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        let value = || positional.get(1).map(|s| s.to_string()).unwrap_or_default();
        match cmd.as_str() {
            "put" => {
                let req = PutRequest {
                    key: key(),
                    value: value(),
                    dir: flag("dir"),
                    ttl: opt("ttl").and_then(|t| {
                        if t.is_empty() {
                            None
                        } else {
                            Some(t.parse().unwrap())
                        }
                    }),
                    prev_exist: opt("prevExist").map(|b| b == "true"),
                    prev_value: opt("prevValue"),
                    prev_index: opt("prevIndex").map(|i| i.parse().unwrap()),
                    refresh: flag("refresh"),
                };
                vec![self.apply(req.into_command(self.clock))]
            }
            "post" => {
                let cmd = Command::CreateInOrder {
                    dir_key: key(),
                    value: value(),
                    dir: flag("dir"),
                    ttl: opt("ttl").map(|t| t.parse().unwrap()),
                    now: self.clock,
                };
                vec![self.apply(cmd)]
            }
            "delete" => {
                let req = DeleteRequest {
                    key: key(),
                    dir: flag("dir"),
                    recursive: flag("recursive"),
                    prev_value: opt("prevValue"),
                    prev_index: opt("prevIndex").map(|i| i.parse().unwrap()),
                };
                vec![self.apply(req.into_command(self.clock))]
            }
            "get" => vec![answer(self.store.get_at(
                &key(),
                flag("recursive"),
                true,
                self.clock,
            ))],
            "clock" => {
                let secs: f64 = positional[0].trim_start_matches('+').parse().unwrap();
                self.clock = UnixNanos(self.clock.0 + (secs * 1e9).round() as u64);
                vec![]
            }
            "sync" => {
                let cmd = Command::Sync { now: self.clock };
                let before = self.store.index();
                // Expire events are also observable through a history scan.
                let r = self.store.apply(&cmd).unwrap();
                assert_eq!(r.etcd_index, self.store.index());
                let mut out = Vec::new();
                for i in before + 1..=self.store.index() {
                    let mut w = self.store.watch("/", true, false, Some(i)).unwrap();
                    match w.try_next() {
                        TryNext::Event(e) => out.push(format!(
                            "expired {}",
                            String::from_utf8(e.to_json_line()).unwrap().trim_end()
                        )),
                        other => panic!("no history event at {i}: {other:?}"),
                    }
                }
                if out.is_empty() {
                    out.push("(nothing expired)".into());
                }
                self.check();
                out
            }
            "watch" => {
                let name = positional[0].to_string();
                let wkey = positional[1].to_string();
                let since = opt("waitIndex").map(|i| i.parse().unwrap());
                match self
                    .store
                    .watch(&wkey, flag("recursive"), flag("stream"), since)
                {
                    Ok(w) => {
                        let line = format!("watching (X-Etcd-Index: {})", w.start_index());
                        self.watchers.insert(name, w);
                        vec![line]
                    }
                    Err(e) => vec![answer(Err(e))],
                }
            }
            "events" => {
                let w = self
                    .watchers
                    .get_mut(positional[0].as_str())
                    .expect("no such watcher");
                let mut out = Vec::new();
                loop {
                    match w.try_next() {
                        TryNext::Event(e) => out.push(
                            String::from_utf8(e.to_json_line())
                                .unwrap()
                                .trim_end()
                                .to_owned(),
                        ),
                        TryNext::Pending => {
                            out.push("(pending)".into());
                            break;
                        }
                        TryNext::Closed => {
                            out.push("(closed)".into());
                            break;
                        }
                    }
                }
                out
            }
            "drop" => {
                self.watchers
                    .remove(positional[0].as_str())
                    .expect("no such watcher");
                vec![]
            }
            "stats" => vec![serde_json::to_string(&self.store.stats()).unwrap()],
            "index" => vec![self.store.index().to_string()],
            "snapshot-restore" => {
                let bytes = self.store.snapshot();
                let restored = Store::restore(&bytes).expect("restore");
                assert_eq!(restored.hash(), self.store.hash(), "hash after restore");
                assert_eq!(restored.snapshot(), bytes, "snapshot of the restored store");
                self.store = restored;
                self.check();
                vec![]
            }
            other => panic!("unknown script command {other:?}"),
        }
    }

    fn apply(&mut self, cmd: Command) -> String {
        // Every command goes through its wire encoding, as it would through the log.
        let decoded = Command::decode(&cmd.encode()).expect("decode");
        assert_eq!(decoded, cmd);
        let before = self.store.index();
        let r = self.store.apply(&decoded);
        match &r {
            Ok(e) => {
                assert_eq!(
                    self.store.index(),
                    before + 1,
                    "a successful write consumes one index"
                );
                assert_eq!(e.etcd_index, self.store.index(), "X-Etcd-Index of a write");
                assert_eq!(e.node.modified_index, self.store.index(), "event index");
            }
            Err(e) => {
                assert_eq!(
                    self.store.index(),
                    before,
                    "a failed write consumes nothing"
                );
                assert_eq!(e.index, before, "error index is the current index");
            }
        }
        self.check();
        answer(r)
    }

    fn check(&self) {
        if let Err(e) = self.store.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }
}

/// `name=value` with an alphabetic name.
fn is_option(a: &str) -> bool {
    a.split_once('=')
        .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic()))
}

fn is_flag(a: &str) -> bool {
    matches!(a, "dir" | "refresh" | "recursive" | "stream")
}

/// Runs a script and compares its transcript with the expected lines.
pub fn run(script: &str) {
    let mut runner = Runner::default();
    let mut expected: Vec<String> = Vec::new();
    let mut actual: Vec<String> = Vec::new();
    for raw in script.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("> ") {
            expected.push(line.to_owned());
            actual.push(line.to_owned());
            actual.extend(runner.exec(cmd));
        } else {
            expected.push(line.to_owned());
        }
    }
    if expected != actual {
        let mut diff = String::new();
        for i in 0..expected.len().max(actual.len()) {
            let e = expected.get(i).map(String::as_str).unwrap_or("<none>");
            let a = actual.get(i).map(String::as_str).unwrap_or("<none>");
            if e != a {
                diff.push_str(&format!("line {i}:\n  expected: {e}\n  actual:   {a}\n"));
            }
        }
        if std::env::var_os("STORE_BLESS").is_some() {
            eprintln!("---- actual transcript ----\n{}\n----", actual.join("\n"));
        }
        panic!("script transcript differs:\n{diff}");
    }
}
