//! etcdctl v2: the command set of etcd 3.4's `etcdctl` with `ETCDCTL_API=2`, on
//! `raft_kv::client`.
//!
//! [`run`] is the whole program as a function of its arguments, environment, stdin and
//! two output sinks, so tests can run it in-process; `main.rs` only wires it to the real
//! process. Every command reproduces etcdctl's requests (see `raft_kv::client`), its
//! output on stdout and stderr, and its exit statuses:
//! 0 ok, 1 bad arguments / member command errors / "is a directory", 2 cannot reach the
//! cluster while syncing, 3 unknown command, 4 server (or request) error, 5 cluster not
//! healthy.
//!
//! Order of work, as in etcdctl: a key command first builds its client (and, unless
//! `--no-sync`, syncs the endpoint list from `/v2/members`, exiting 2 when the cluster
//! cannot be reached), then checks its arguments; member commands check their arguments
//! first. `cluster-health` never syncs.
//!
//! Not supported (a clear error, exit 1): TLS client certificates and custom CAs
//! (`--cert-file`, `--key-file`, `--ca-file`), v2 auth (`--username`, `user`, `role`,
//! `auth`), DNS discovery (`--discovery-srv`). `backup` lives in `backup.rs`.

use std::io::{Read, Write};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_kv::client::{
    go_quote, Client, ClientBuilder, ClientError, DeleteOptions, GetOptions, KeysResponse, Node,
    PrevExist, SetOptions, WatchOptions, DEFAULT_ENDPOINTS,
};

use crate::backup;
use crate::flags::{self, Flag, Kind, Parsed};
use crate::format::print_response_key;
use crate::help;

/// The etcd version this etcdctl reproduces.
pub const VERSION: &str = "3.4.23";

const EXIT_BAD_ARGS: i32 = 1;
const EXIT_BAD_CONNECTION: i32 = 2;
const EXIT_SERVER_ERROR: i32 = 4;
const EXIT_CLUSTER_NOT_HEALTHY: i32 = 5;

/// A shareable output stream (stdout or stderr, or a buffer in tests).
#[derive(Clone)]
pub struct Sink(Arc<Mutex<dyn Write + Send>>);

impl Sink {
    /// Wraps a writer.
    pub fn new(w: impl Write + Send + 'static) -> Sink {
        Sink(Arc::new(Mutex::new(w)))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(buf)?;
        w.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// The process's streams.
pub struct Io {
    /// Standard output.
    pub out: Sink,
    /// Standard error.
    pub err: Sink,
    /// Standard input (values of `set`/`mk`/`update` when not given).
    pub stdin: Box<dyn Read + Send>,
}

/// Looks up an environment variable.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// An early exit with a status (everything was already printed).
struct Exit(i32);

type Outcome = Result<(), Exit>;

const HELP_FLAG: Flag = Flag {
    names: &["help", "h"],
    kind: Kind::Bool,
};

const GLOBAL_FLAGS: &[Flag] = &[
    Flag {
        names: &["debug"],
        kind: Kind::Bool,
    },
    Flag {
        names: &["no-sync"],
        kind: Kind::Bool,
    },
    Flag {
        names: &["output", "o"],
        kind: Kind::Str,
    },
    Flag {
        names: &["discovery-srv", "D"],
        kind: Kind::Str,
    },
    Flag {
        names: &["insecure-discovery"],
        kind: Kind::Bool,
    },
    Flag {
        names: &["peers", "C"],
        kind: Kind::Str,
    },
    Flag {
        names: &["endpoint"],
        kind: Kind::Str,
    },
    Flag {
        names: &["endpoints"],
        kind: Kind::Str,
    },
    Flag {
        names: &["cert-file"],
        kind: Kind::Str,
    },
    Flag {
        names: &["key-file"],
        kind: Kind::Str,
    },
    Flag {
        names: &["ca-file"],
        kind: Kind::Str,
    },
    Flag {
        names: &["username", "u"],
        kind: Kind::Str,
    },
    Flag {
        names: &["timeout"],
        kind: Kind::Duration,
    },
    Flag {
        names: &["total-timeout"],
        kind: Kind::Duration,
    },
    HELP_FLAG,
    Flag {
        names: &["version", "v"],
        kind: Kind::Bool,
    },
];

const TTL: Flag = Flag {
    names: &["ttl"],
    kind: Kind::Int,
};
const SORT: Flag = Flag {
    names: &["sort"],
    kind: Kind::Bool,
};
const QUORUM: Flag = Flag {
    names: &["quorum", "q"],
    kind: Kind::Bool,
};
const RECURSIVE: Flag = Flag {
    names: &["recursive", "r"],
    kind: Kind::Bool,
};
const AFTER_INDEX: Flag = Flag {
    names: &["after-index"],
    kind: Kind::Int,
};
const FOREVER: Flag = Flag {
    names: &["forever", "f"],
    kind: Kind::Bool,
};

/// The flags of each command (the help flag is added to all).
fn command_flags(name: &str) -> Option<Vec<Flag>> {
    let flags: Vec<Flag> = match name {
        "backup" => vec![
            Flag {
                names: &["data-dir"],
                kind: Kind::Str,
            },
            Flag {
                names: &["wal-dir"],
                kind: Kind::Str,
            },
            Flag {
                names: &["backup-dir"],
                kind: Kind::Str,
            },
            Flag {
                names: &["backup-wal-dir"],
                kind: Kind::Str,
            },
            Flag {
                names: &["with-v3"],
                kind: Kind::Bool,
            },
        ],
        "cluster-health" => vec![FOREVER],
        "mk" => vec![
            Flag {
                names: &["in-order"],
                kind: Kind::Bool,
            },
            TTL,
        ],
        "mkdir" | "setdir" | "update" | "updatedir" => vec![TTL],
        "rm" => vec![
            Flag {
                names: &["dir"],
                kind: Kind::Bool,
            },
            RECURSIVE,
            Flag {
                names: &["with-value"],
                kind: Kind::Str,
            },
            Flag {
                names: &["with-index"],
                kind: Kind::Int,
            },
        ],
        "rmdir" | "member list" | "member add" | "member remove" | "member update" => vec![],
        "get" => vec![SORT, QUORUM],
        "ls" => vec![
            SORT,
            RECURSIVE,
            Flag {
                names: &["p"],
                kind: Kind::Bool,
            },
            QUORUM,
        ],
        "set" => vec![
            TTL,
            Flag {
                names: &["swap-with-value"],
                kind: Kind::Str,
            },
            Flag {
                names: &["swap-with-index"],
                kind: Kind::Int,
            },
        ],
        "watch" => vec![FOREVER, AFTER_INDEX, RECURSIVE],
        "exec-watch" => vec![AFTER_INDEX, RECURSIVE],
        _ => return None,
    };
    let mut flags = flags;
    flags.push(HELP_FLAG);
    Some(flags)
}

/// The global options that commands use.
struct Global {
    debug: bool,
    no_sync: bool,
    output: String,
    endpoints: Vec<String>,
    timeout: Duration,
    total_timeout: Duration,
    unsupported: Option<&'static str>,
}

impl Global {
    fn new(p: &Parsed, env: Env<'_>) -> Global {
        let output = if p.is_set("output") {
            p.str("output")
        } else {
            "simple".to_string()
        };
        let candidates = [
            p.str("endpoints"),
            env("ETCDCTL_ENDPOINTS").unwrap_or_default(),
            p.str("endpoint"),
            env("ETCDCTL_ENDPOINT").unwrap_or_default(),
            p.str("peers"),
            env("ETCDCTL_PEERS").unwrap_or_default(),
        ];
        let list = candidates
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINTS.join(","));
        let unsupported = [
            ("cert-file", "--cert-file (TLS client certificates)"),
            ("key-file", "--key-file (TLS client certificates)"),
            ("ca-file", "--ca-file (custom certificate authorities)"),
            ("username", "--username (v2 auth)"),
            ("discovery-srv", "--discovery-srv (DNS discovery)"),
        ]
        .into_iter()
        .find(|(name, _)| !p.str(name).is_empty())
        .map(|(_, what)| what);
        Global {
            debug: p.bool("debug"),
            no_sync: p.bool("no-sync"),
            output,
            endpoints: list.split(',').map(str::to_string).collect(),
            timeout: p.duration("timeout", Duration::from_secs(2)),
            total_timeout: p.duration("total-timeout", Duration::from_secs(5)),
            unsupported,
        }
    }
}

struct Ctx<'a> {
    g: Global,
    io: &'a mut Io,
}

impl Ctx<'_> {
    fn out(&mut self, text: &str) {
        let _ = self.io.out.write_all(text.as_bytes());
    }

    fn err(&mut self, text: &str) {
        let _ = self.io.err.write_all(text.as_bytes());
    }

    /// etcdctl's `handleError`: `Error:  <err>` (plus a cluster error's detail) and exit.
    fn fail(&mut self, code: i32, err: &dyn std::fmt::Display, detail: Option<String>) -> Exit {
        self.err(&format!("Error:  {err}\n"));
        if let Some(d) = detail {
            self.err(&format!("{d}\n"));
        }
        Exit(code)
    }

    fn fail_client(&mut self, code: i32, err: &ClientError) -> Exit {
        self.fail(code, err, err.cluster_detail())
    }

    fn print(&mut self, resp: &KeysResponse) {
        let mut out = self.io.out.clone();
        let mut err = self.io.err.clone();
        let _ = print_response_key(resp, &self.g.output, &mut out, &mut err);
    }

    /// Builds the client; `sync` as in `mustNewClient`, `total` applies `--total-timeout`.
    fn client(&mut self, sync: bool, total: bool) -> Result<Client, Exit> {
        if let Some(what) = self.g.unsupported {
            return Err(self.fail(
                EXIT_BAD_ARGS,
                &format!("{what} is not supported by this etcdctl"),
                None,
            ));
        }
        let mut builder = ClientBuilder::new(&self.g.endpoints)
            .request_timeout((!self.g.timeout.is_zero()).then_some(self.g.timeout))
            .total_timeout(total.then_some(self.g.total_timeout));
        if self.g.debug {
            let err = self.io.err.clone();
            builder = builder.observer(Arc::new(move |endpoint: &str, req| {
                let mut err = err.clone();
                let _ = writeln!(err, "cURL Command: {}", req.curl_command(endpoint));
            }));
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                self.err(&format!("{e}\n"));
                return Err(Exit(EXIT_BAD_ARGS));
            }
        };
        if sync && !self.g.no_sync {
            if self.g.debug {
                let eps = client.endpoints().join(",");
                self.err(&format!("start to sync cluster using endpoints({eps})\n"));
            }
            match client.sync() {
                Err(ClientError::NoEndpoints) => {
                    let eps = client.endpoints().join(",");
                    self.err("etcd cluster has no published client endpoints.\n");
                    self.err(&format!(
                        "Try '--no-sync' if you want to access non-published client endpoints({eps}).\n"
                    ));
                    return Err(self.fail_client(EXIT_SERVER_ERROR, &ClientError::NoEndpoints));
                }
                Err(e) if e.is_connection_error() => {
                    return Err(self.fail_client(EXIT_BAD_CONNECTION, &e));
                }
                _ => {}
            }
            if self.g.debug {
                let eps = client.endpoints().join(",");
                self.err(&format!("got endpoints({eps}) after sync\n"));
            }
        }
        if self.g.debug {
            let eps = client.endpoints().join(", ");
            self.err(&format!("Cluster-Endpoints: {eps}\n"));
        }
        Ok(client)
    }

    /// etcdctl's `argOrStdin`: argument `i`, or all of stdin (which must not be empty).
    fn arg_or_stdin(&mut self, args: &[String], i: usize) -> Option<String> {
        if let Some(a) = args.get(i) {
            return Some(a.clone());
        }
        let mut buf = Vec::new();
        if self.io.stdin.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return None;
        }
        Some(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Runs etcdctl with `args` (without the program name); returns the exit status.
pub fn run(args: &[String], env: Env<'_>, io: &mut Io) -> i32 {
    let parsed = match flags::parse(GLOBAL_FLAGS, args) {
        Ok(p) => p,
        Err(e) if e.starts_with("Cannot use two forms") => {
            // urfave/cli reports its own normalization error without "Incorrect Usage".
            let _ = write!(io.out, "{e}\n{}", help::APP_HELP);
            let _ = writeln!(io.err, "{e}");
            return EXIT_BAD_ARGS;
        }
        Err(e) => {
            let _ = write!(io.out, "Incorrect Usage. {e}\n\n{}", help::APP_HELP);
            let _ = writeln!(io.err, "{e}");
            return EXIT_BAD_ARGS;
        }
    };
    if parsed.bool("help") {
        let _ = io.out.write_all(help::APP_HELP.as_bytes());
        return 0;
    }
    if parsed.bool("version") {
        let _ = write!(io.out, "etcdctl version: {VERSION}\nAPI version: 2\n");
        return 0;
    }
    let g = Global::new(&parsed, env);
    let rest = parsed.args.clone();
    let mut ctx = Ctx { g, io };
    let Some(command) = rest.first() else {
        ctx.out(help::APP_HELP);
        return 0;
    };
    let outcome = dispatch(&mut ctx, command, &rest[1..]);
    let _ = ctx.io.out.flush();
    let _ = ctx.io.err.flush();
    match outcome {
        Ok(()) => 0,
        Err(Exit(code)) => code,
    }
}

fn show_help_topic(ctx: &mut Ctx<'_>, topic: Option<&String>, member: bool) -> Outcome {
    match topic {
        None => {
            ctx.out(if member {
                help::MEMBER_HELP
            } else {
                help::APP_HELP
            });
            Ok(())
        }
        Some(t) if t == "help" || t == "h" => {
            ctx.out(if member {
                help::MEMBER_HELP_HELP
            } else {
                help::HELP_HELP
            });
            Ok(())
        }
        Some(t) => {
            let name = if member {
                format!("member {t}")
            } else {
                t.clone()
            };
            match help::command_help(&name) {
                Some(text) => {
                    ctx.out(text);
                    Ok(())
                }
                None => {
                    ctx.err(&format!("No help topic for '{t}'\n"));
                    Err(Exit(3))
                }
            }
        }
    }
}

/// Parses a command's flags (after urfave/cli's reordering); handles `-h` and usage errors.
fn command_args(ctx: &mut Ctx<'_>, name: &str, args: &[String]) -> Result<Parsed, Exit> {
    let flags = command_flags(name).unwrap_or_else(|| vec![HELP_FLAG]);
    let help_text = help::command_help(name).unwrap_or("");
    match flags::parse(&flags, &flags::reorder(&flags, args)) {
        Err(e) => {
            ctx.out(&format!("Incorrect Usage: {e}\n\n{help_text}"));
            ctx.err(&format!("{e}\n"));
            Err(Exit(EXIT_BAD_ARGS))
        }
        Ok(p) if p.bool("help") => {
            ctx.out(help_text);
            Err(Exit(0))
        }
        Ok(p) => Ok(p),
    }
}

fn dispatch(ctx: &mut Ctx<'_>, command: &str, args: &[String]) -> Outcome {
    match command {
        "help" | "h" => show_help_topic(ctx, args.first(), false),
        "member" => member(ctx, args),
        "user" | "role" | "auth" => Err(ctx.fail(
            EXIT_BAD_ARGS,
            &format!("v2 auth ({command}) is not supported by this etcdctl"),
            None,
        )),
        name if command_flags(name).is_some() => {
            let p = command_args(ctx, name, args)?;
            match name {
                "backup" => backup_command(ctx, &p),
                "cluster-health" => cluster_health(ctx, &p),
                "mk" => mk(ctx, &p),
                "mkdir" => mkdir(ctx, &p, PrevExist::NotExist),
                "setdir" => mkdir(ctx, &p, PrevExist::Ignore),
                "updatedir" => mkdir(ctx, &p, PrevExist::Exist),
                "rm" => rm(ctx, &p, false),
                "rmdir" => rm(ctx, &p, true),
                "get" => get(ctx, &p),
                "ls" => ls(ctx, &p),
                "set" => set(ctx, &p),
                "update" => update(ctx, &p),
                "watch" => watch(ctx, &p),
                "exec-watch" => exec_watch(ctx, &p),
                _ => Ok(()),
            }
        }
        other => {
            ctx.err(&format!("No help topic for '{other}'\n"));
            Err(Exit(3))
        }
    }
}

fn ttl_of(p: &Parsed) -> Option<u64> {
    let ttl = p.int("ttl");
    (ttl > 0).then_some(ttl as u64)
}

fn key_arg(ctx: &mut Ctx<'_>, p: &Parsed) -> Result<String, Exit> {
    match p.args.first() {
        Some(k) => Ok(k.clone()),
        None => Err(ctx.fail(EXIT_BAD_ARGS, &"key required", None)),
    }
}

fn value_arg(ctx: &mut Ctx<'_>, p: &Parsed) -> Result<String, Exit> {
    match ctx.arg_or_stdin(&p.args, 1) {
        Some(v) => Ok(v),
        None => Err(ctx.fail(EXIT_BAD_ARGS, &"value required", None)),
    }
}

fn set(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let client = ctx.client(true, true)?;
    let key = key_arg(ctx, p)?;
    let value = value_arg(ctx, p)?;
    let prev_value = p.str("swap-with-value");
    let opts = SetOptions {
        ttl: ttl_of(p),
        prev_value: (!prev_value.is_empty()).then_some(prev_value),
        prev_index: Some(p.int("swap-with-index") as u64).filter(|i| *i != 0),
        ..SetOptions::default()
    };
    let resp = client
        .set(&key, &value, &opts)
        .map_err(|e| ctx.fail_client(EXIT_SERVER_ERROR, &e))?;
    ctx.print(&resp);
    Ok(())
}

fn update(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let client = ctx.client(true, true)?;
    let key = key_arg(ctx, p)?;
    let value = value_arg(ctx, p)?;
    let resp = client
        .update(&key, &value, ttl_of(p))
        .map_err(|e| ctx.fail_client(EXIT_SERVER_ERROR, &e))?;
    ctx.print(&resp);
    Ok(())
}

fn mk(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let client = ctx.client(true, true)?;
    let key = key_arg(ctx, p)?;
    let value = value_arg(ctx, p)?;
    let result = if p.bool("in-order") {
        client.create_in_order(&key, &value, ttl_of(p))
    } else {
        client.create(&key, &value, ttl_of(p))
    };
    let resp = result.map_err(|e| ctx.fail_client(EXIT_SERVER_ERROR, &e))?;
    ctx.print(&resp);
    Ok(())
}

/// `mkdir` (must not exist), `setdir` (no condition), `updatedir` (must exist).
fn mkdir(ctx: &mut Ctx<'_>, p: &Parsed, prev_exist: PrevExist) -> Outcome {
    let client = ctx.client(true, true)?;
    let key = key_arg(ctx, p)?;
    let opts = SetOptions {
        ttl: ttl_of(p),
        dir: true,
        prev_exist,
        ..SetOptions::default()
    };
    let resp = client
        .set(&key, "", &opts)
        .map_err(|e| ctx.fail_client(EXIT_SERVER_ERROR, &e))?;
    if ctx.g.output != "simple" {
        ctx.print(&resp);
    }
    Ok(())
}

/// `rm` and `rmdir` (which is `rm --dir` without the other flags).
fn rm(ctx: &mut Ctx<'_>, p: &Parsed, rmdir: bool) -> Outcome {
    let client = ctx.client(true, true)?;
    let key = key_arg(ctx, p)?;
    let opts = if rmdir {
        DeleteOptions {
            dir: true,
            ..DeleteOptions::default()
        }
    } else {
        let prev_value = p.str("with-value");
        DeleteOptions {
            dir: p.bool("dir"),
            recursive: p.bool("recursive"),
            prev_value: (!prev_value.is_empty()).then_some(prev_value),
            prev_index: Some(p.int("with-index") as u64).filter(|i| *i != 0),
        }
    };
    let resp = client
        .delete(&key, &opts)
        .map_err(|e| ctx.fail_client(EXIT_SERVER_ERROR, &e))?;
    if !resp.node_or_default().dir || ctx.g.output != "simple" {
        ctx.print(&resp);
    }
    Ok(())
}

fn get(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let client = ctx.client(true, true)?;
    let key = key_arg(ctx, p)?;
    let opts = GetOptions {
        sorted: p.bool("sort"),
        quorum: p.bool("quorum"),
        recursive: false,
    };
    let resp = client
        .get(&key, &opts)
        .map_err(|e| ctx.fail_client(EXIT_SERVER_ERROR, &e))?;
    let node = resp.node_or_default();
    if node.dir {
        ctx.err(&format!("{}: is a directory\n", node.key));
        return Err(Exit(EXIT_BAD_ARGS));
    }
    ctx.print(&resp);
    Ok(())
}

fn ls(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let client = ctx.client(true, true)?;
    let key = p.args.first().cloned().unwrap_or_else(|| "/".to_string());
    let opts = GetOptions {
        sorted: p.bool("sort"),
        recursive: p.bool("recursive"),
        quorum: p.bool("quorum"),
    };
    let resp = client
        .get(&key, &opts)
        .map_err(|e| ctx.fail_client(EXIT_SERVER_ERROR, &e))?;
    if ctx.g.output == "simple" {
        let node = resp.node_or_default();
        let mut text = String::new();
        if !node.dir {
            text.push_str(&format!("{}\n", node.key));
        }
        fn walk(n: &Node, slash: bool, text: &mut String) {
            if n.dir && slash {
                text.push_str(&format!("{}/\n", n.key));
            } else {
                text.push_str(&format!("{}\n", n.key));
            }
            for child in &n.nodes {
                walk(child, slash, text);
            }
        }
        for child in &node.nodes {
            walk(child, p.bool("p"), &mut text);
        }
        ctx.out(&text);
    } else {
        ctx.print(&resp);
    }
    Ok(())
}

fn watch(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let client = ctx.client(true, true)?;
    let key = key_arg(ctx, p)?;
    let recursive = p.bool("recursive");
    let forever = p.bool("forever");
    let mut watcher = client.watcher(
        &key,
        &WatchOptions {
            after_index: p.int("after-index") as u64,
            recursive,
        },
    );
    loop {
        let resp = match watcher.next(None) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => return Err(ctx.fail_client(EXIT_SERVER_ERROR, &e)),
        };
        let node = resp.node_or_default();
        if node.dir {
            continue;
        }
        if recursive {
            ctx.out(&format!("[{}] {}\n", resp.action, node.key));
        }
        ctx.print(&resp);
        if !forever {
            return Ok(());
        }
    }
}

/// Go's text for a failed `exec.Command(...).Start()`.
fn exec_error_text(program: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        if program.contains('/') {
            format!("fork/exec {program}: no such file or directory")
        } else {
            format!(
                "exec: {}: executable file not found in $PATH",
                go_quote(program)
            )
        }
    } else {
        format!("fork/exec {program}: {e}")
    }
}

fn exec_watch(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let client = ctx.client(true, true)?;
    let args = &p.args;
    if args.len() < 2 {
        return Err(ctx.fail(EXIT_BAD_ARGS, &"key and command to exec required", None));
    }
    let found_separator = args.iter().enumerate().any(|(i, a)| a == "--" && i != 0);
    let (key, command): (String, Vec<String>) = if found_separator {
        (args[0].clone(), args[2..].to_vec())
    } else {
        let last = args.len() - 1;
        (args[last].clone(), args[..last].to_vec())
    };
    let Some((program, program_args)) = command.split_first() else {
        return Err(ctx.fail(EXIT_BAD_ARGS, &"command to exec required", None));
    };
    let mut watcher = client.watcher(
        &key,
        &WatchOptions {
            after_index: p.int("after-index") as u64,
            recursive: p.bool("recursive"),
        },
    );
    let mut children: Vec<Child> = Vec::new();
    loop {
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        let resp = match watcher.next(None) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => return Err(ctx.fail_client(EXIT_SERVER_ERROR, &e)),
        };
        let node = resp.node_or_default();
        if node.dir {
            ctx.err(&format!("Ignored dir {} change\n", node.key));
            continue;
        }
        let spawned = Command::new(program)
            .args(program_args)
            .env("ETCD_WATCH_ACTION", resp.action.as_str())
            .env("ETCD_WATCH_MODIFIED_INDEX", node.modified_index.to_string())
            .env("ETCD_WATCH_KEY", &node.key)
            .env("ETCD_WATCH_VALUE", node.value_str())
            .spawn();
        match spawned {
            Ok(child) => children.push(child),
            Err(e) => {
                ctx.err(&exec_error_text(program, &e));
                return Err(Exit(EXIT_BAD_ARGS));
            }
        }
    }
}

fn cluster_health(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let forever = p.bool("forever");
    let client = ctx.client(false, false)?;
    let members = match client.members() {
        Ok(m) => m,
        Err(e) => {
            ctx.out("cluster may be unhealthy: failed to list members\n");
            return Err(ctx.fail_client(EXIT_SERVER_ERROR, &e));
        }
    };
    loop {
        let mut healthy = 0usize;
        for m in &members {
            if m.client_urls.is_empty() {
                ctx.out(&format!(
                    "member {} is unreachable: no available published client urls\n",
                    m.id
                ));
                continue;
            }
            let mut checked = false;
            for url in &m.client_urls {
                match client.health_at(url) {
                    Ok(h) => {
                        checked = true;
                        if h.healthy {
                            ctx.out(&format!(
                                "member {} is healthy: got healthy result from {url}\n",
                                m.id
                            ));
                            healthy += 1;
                        } else {
                            ctx.out(&format!(
                                "member {} is unhealthy: got unhealthy result from {url}\n",
                                m.id
                            ));
                        }
                        break;
                    }
                    Err(ClientError::Endpoint(e)) => ctx.out(&format!(
                        "failed to check the health of member {} on {url}: Get {}: {e}\n",
                        m.id,
                        go_quote(&format!("{url}/health"))
                    )),
                    Err(e) => ctx.out(&format!(
                        "failed to check the health of member {} on {url}: {e}\n",
                        m.id
                    )),
                }
            }
            if !checked {
                ctx.out(&format!(
                    "member {} is unreachable: [{}] are all unreachable\n",
                    m.id,
                    m.client_urls.join(" ")
                ));
            }
        }
        if healthy == members.len() {
            ctx.out("cluster is healthy\n");
        } else if healthy == 0 {
            ctx.out("cluster is unavailable\n");
        } else {
            ctx.out("cluster is degraded\n");
        }
        if !forever {
            return if healthy == members.len() {
                Ok(())
            } else {
                Err(Exit(EXIT_CLUSTER_NOT_HEALTHY))
            };
        }
        ctx.out("\nnext check after 10 second...\n\n");
        std::thread::sleep(Duration::from_secs(10));
    }
}

fn backup_command(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let args = backup::BackupArgs {
        data_dir: p.str("data-dir"),
        wal_dir: p.str("wal-dir"),
        backup_dir: p.str("backup-dir"),
        backup_wal_dir: p.str("backup-wal-dir"),
        with_v3: p.bool("with-v3"),
    };
    let mut out = ctx.io.out.clone();
    let mut err = ctx.io.err.clone();
    match backup::run(&args, &mut out, &mut err) {
        0 => Ok(()),
        code => Err(Exit(code)),
    }
}

fn member(ctx: &mut Ctx<'_>, args: &[String]) -> Outcome {
    let parsed = match flags::parse(&[HELP_FLAG], args) {
        Ok(p) => p,
        Err(e) => {
            ctx.out(&format!(
                "Incorrect Usage. {e}\n\n{}",
                help::MEMBER_APP_HELP
            ));
            ctx.err(&format!("{e}\n"));
            return Err(Exit(EXIT_BAD_ARGS));
        }
    };
    if parsed.bool("help") {
        ctx.out(help::MEMBER_APP_HELP);
        return Ok(());
    }
    let Some(sub) = parsed.args.first() else {
        ctx.out(help::MEMBER_APP_HELP);
        return Ok(());
    };
    let rest = &parsed.args[1..];
    match sub.as_str() {
        "help" | "h" => show_help_topic(ctx, rest.first(), true),
        "list" | "add" | "remove" | "update" => {
            let name = format!("member {sub}");
            let p = command_args(ctx, &name, rest)?;
            match sub.as_str() {
                "list" => member_list(ctx, &p),
                "add" => member_add(ctx, &p),
                "remove" => member_remove(ctx, &p),
                _ => member_update(ctx, &p),
            }
        }
        other => {
            ctx.err(&format!("No help topic for '{other}'\n"));
            Err(Exit(3))
        }
    }
}

fn member_list(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    if !p.args.is_empty() {
        ctx.err("No arguments accepted\n");
        return Err(Exit(EXIT_BAD_ARGS));
    }
    let client = ctx.client(true, true)?;
    let members = client.members().map_err(|e| {
        ctx.err(&format!("{e}\n"));
        Exit(EXIT_BAD_ARGS)
    })?;
    let leader = client.leader().map_err(|e| {
        ctx.err(&format!("Failed to get leader:  {e}\n"));
        Exit(EXIT_BAD_ARGS)
    })?;
    let mut text = String::new();
    for m in &members {
        if m.name.is_empty() {
            text.push_str(&format!(
                "{}[unstarted]: peerURLs={}\n",
                m.id,
                m.peer_urls.join(",")
            ));
        } else {
            text.push_str(&format!(
                "{}: name={} peerURLs={} clientURLs={} isLeader={}\n",
                m.id,
                m.name,
                m.peer_urls.join(","),
                m.client_urls.join(","),
                m.id == leader.id
            ));
        }
    }
    ctx.out(&text);
    Ok(())
}

fn member_add(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let [name, url] = p.args.as_slice() else {
        ctx.err("Provide a name and a single member peerURL\n");
        return Err(Exit(EXIT_BAD_ARGS));
    };
    let client = ctx.client(true, true)?;
    let added = client.add_member(&[url]).map_err(|e| {
        ctx.err(&format!("{e}\n"));
        Exit(EXIT_BAD_ARGS)
    })?;
    ctx.out(&format!(
        "Added member named {name} with ID {} to cluster\n",
        added.id
    ));
    let members = client.members().map_err(|e| {
        ctx.err(&format!("{e}\n"));
        Exit(EXIT_BAD_ARGS)
    })?;
    let mut conf = Vec::new();
    for m in &members {
        for u in &m.peer_urls {
            let n = if m.id == added.id { name } else { &m.name };
            conf.push(format!("{n}={u}"));
        }
    }
    ctx.out(&format!(
        "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        go_quote(name),
        go_quote(&conf.join(","))
    ));
    Ok(())
}

fn member_remove(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let [id] = p.args.as_slice() else {
        ctx.err("Provide a single member ID\n");
        return Err(Exit(EXIT_BAD_ARGS));
    };
    let client = ctx.client(true, true)?;
    let members = client.members().map_err(|e| {
        ctx.err(&format!(
            "Error while verifying ID against known members: {e}\n"
        ));
        Exit(EXIT_BAD_ARGS)
    })?;
    let mut found = false;
    for m in &members {
        if &m.id == id {
            found = true;
        }
        if &m.name == id {
            ctx.err(&format!(
                "Found a member named {}; if this is correct, please use its ID, eg:\n\tetcdctl member remove {}\n",
                m.name, m.id
            ));
            ctx.err("For more details, read the documentation at https://github.com/etcd-io/etcd/blob/master/Documentation/runtime-configuration.md#remove-a-member\n\n");
        }
    }
    if !found {
        ctx.err(&format!(
            "Couldn't find a member in the cluster with an ID of {id}.\n"
        ));
        return Err(Exit(EXIT_BAD_ARGS));
    }
    client.remove_member(id).map_err(|e| {
        ctx.err(&format!(
            "Received an error trying to remove member {id}: {e}"
        ));
        Exit(EXIT_BAD_ARGS)
    })?;
    ctx.out(&format!("Removed member {id} from cluster\n"));
    Ok(())
}

fn member_update(ctx: &mut Ctx<'_>, p: &Parsed) -> Outcome {
    let [id, urls] = p.args.as_slice() else {
        ctx.err("Provide an ID and a list of comma separated peerURL (0xabcd http://example.com,http://example1.com)\n");
        return Err(Exit(EXIT_BAD_ARGS));
    };
    let client = ctx.client(true, true)?;
    let list: Vec<&str> = urls.split(',').collect();
    client.update_member(id, &list).map_err(|e| {
        ctx.err(&format!("{e}\n"));
        Exit(EXIT_BAD_ARGS)
    })?;
    ctx.out(&format!("Updated member with ID {id} in cluster\n"));
    Ok(())
}
