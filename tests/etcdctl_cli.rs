//! etcdctl's program logic in-process, without any server: the example's modules are
//! compiled into this test crate (so their own unit tests — flag parser, output formats
//! — run under `cargo test` too), and `cli::run` is driven with in-memory streams.
//!
//! Also property tests of the urfave/cli-compatible flag parser against a model.

#[path = "../examples/etcdctl/backup.rs"]
mod backup;
#[path = "../examples/etcdctl/cli.rs"]
mod cli;
#[path = "../examples/etcdctl/flags.rs"]
mod flags;
#[path = "../examples/etcdctl/format.rs"]
mod format;
#[path = "../examples/etcdctl/help.rs"]
mod help;

use std::io::Write;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Runs etcdctl in-process; returns (exit, stdout, stderr).
fn etcdctl(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let (out, err) = (Buffer::default(), Buffer::default());
    let mut io = cli::Io {
        out: cli::Sink::new(out.clone()),
        err: cli::Sink::new(err.clone()),
        stdin: Box::new(std::io::Cursor::new(stdin.as_bytes().to_vec())),
    };
    let env_owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| {
        env_owned
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let code = cli::run(&args, &lookup, &mut io);
    (code, out.text(), err.text())
}

/// An endpoint where nothing listens (port 1 on loopback).
const DEAD: &str = "http://127.0.0.1:1";

#[test]
fn no_arguments_and_help_print_the_app_help() {
    for args in [&[][..], &["-h"], &["--help"], &["help"], &["h"]] {
        let (code, out, err) = etcdctl(args, &[], "");
        assert_eq!((code, err.as_str()), (0, ""), "{args:?}");
        assert_eq!(out, help::APP_HELP, "{args:?}");
    }
    assert!(help::APP_HELP
        .contains("   exec-watch      watch a key for changes and exec an executable\n"));
}

#[test]
fn version() {
    for flag in ["--version", "-v"] {
        assert_eq!(
            etcdctl(&[flag], &[], ""),
            (
                0,
                "etcdctl version: 3.4.23\nAPI version: 2\n".into(),
                String::new()
            )
        );
    }
}

#[test]
fn command_help_and_unknown_topics() {
    let (code, out, _) = etcdctl(&["help", "set"], &[], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME:\n   etcdctl set - set the value of a key\n"));
    assert_eq!(
        etcdctl(&["ls", "-h"], &[], "").1,
        help::command_help("ls").unwrap()
    );
    assert_eq!(
        etcdctl(&["nosuch"], &[], ""),
        (3, String::new(), "No help topic for 'nosuch'\n".into())
    );
    assert_eq!(
        etcdctl(&["member", "nosuch"], &[], ""),
        (3, String::new(), "No help topic for 'nosuch'\n".into())
    );
    assert_eq!(etcdctl(&["member"], &[], "").1, help::MEMBER_APP_HELP);
    assert_eq!(
        etcdctl(&["member", "help", "remove"], &[], "").1,
        help::command_help("member remove").unwrap()
    );
}

#[test]
fn global_usage_errors() {
    let (code, out, err) = etcdctl(&["--bogus", "get", "/k"], &[], "");
    assert_eq!(code, 1);
    assert_eq!(err, "flag provided but not defined: -bogus\n");
    assert_eq!(
        out,
        format!(
            "Incorrect Usage. flag provided but not defined: -bogus\n\n{}",
            help::APP_HELP
        )
    );
    let (code, _, err) = etcdctl(&["--timeout", "1", "get", "/k"], &[], "");
    assert_eq!(
        (code, err.as_str()),
        (1, "invalid value \"1\" for flag -timeout: parse error\n")
    );
}

#[test]
fn command_usage_errors_print_the_command_help() {
    let (code, out, err) = etcdctl(
        &[
            "--no-sync",
            "--endpoints",
            DEAD,
            "set",
            "/k",
            "v",
            "--ttl=x",
        ],
        &[],
        "",
    );
    assert_eq!(code, 1);
    assert_eq!(err, "invalid value \"x\" for flag -ttl: parse error\n");
    assert_eq!(
        out,
        format!(
            "Incorrect Usage: invalid value \"x\" for flag -ttl: parse error\n\n{}",
            help::command_help("set").unwrap()
        )
    );
}

#[test]
fn unreachable_cluster_exits_2_during_sync() {
    let (code, out, err) = etcdctl(&["--endpoints", DEAD, "get", "/k"], &[], "");
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err,
        "Error:  client: etcd cluster is unavailable or misconfigured; error #0: dial tcp 127.0.0.1:1: connect: connection refused\n\nerror #0: dial tcp 127.0.0.1:1: connect: connection refused\n\n"
    );
    // Without sync the request itself fails: a server error, exit 4.
    let (code, _, _) = etcdctl(&["--endpoints", DEAD, "--no-sync", "get", "/k"], &[], "");
    assert_eq!(code, 4);
}

#[test]
fn endpoints_come_from_flags_then_variables_then_defaults() {
    // ETCDCTL_ENDPOINTS beats --endpoint and --peers, --endpoints beats everything.
    let (_, _, err) = etcdctl(
        &["--debug", "--peers", "http://127.0.0.1:3", "get", "/k"],
        &[("ETCDCTL_ENDPOINTS", DEAD)],
        "",
    );
    assert!(err.starts_with("start to sync cluster using endpoints(http://127.0.0.1:1)\ncURL Command: curl -X GET http://127.0.0.1:1/v2/members\n"), "{err}");
    let (_, _, err) = etcdctl(
        &["--debug", "get", "/k"],
        &[("ETCDCTL_PEERS", "http://127.0.0.1:4")],
        "",
    );
    assert!(
        err.starts_with("start to sync cluster using endpoints(http://127.0.0.1:4)\n"),
        "{err}"
    );
    let (_, _, err) = etcdctl(&["--debug", "get", "/k"], &[], "");
    assert!(
        err.starts_with(
            "start to sync cluster using endpoints(http://127.0.0.1:2379,http://127.0.0.1:4001)\n"
        ),
        "{err}"
    );
}

#[test]
fn argument_errors_after_building_the_client() {
    let base = ["--no-sync", "--endpoints", DEAD];
    let with = |extra: &[&'static str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    assert_eq!(
        etcdctl(&with(&["set"]), &[], ""),
        (1, String::new(), "Error:  key required\n".into())
    );
    assert_eq!(
        etcdctl(&with(&["set", "/k"]), &[], ""),
        (1, String::new(), "Error:  value required\n".into())
    );
    assert_eq!(
        etcdctl(&with(&["exec-watch", "/k"]), &[], ""),
        (
            1,
            String::new(),
            "Error:  key and command to exec required\n".into()
        )
    );
    assert_eq!(
        etcdctl(&with(&["member", "list", "x"]), &[], ""),
        (1, String::new(), "No arguments accepted\n".into())
    );
    assert_eq!(
        etcdctl(&with(&["member", "add", "x"]), &[], ""),
        (
            1,
            String::new(),
            "Provide a name and a single member peerURL\n".into()
        )
    );
    assert_eq!(
        etcdctl(&with(&["member", "remove"]), &[], ""),
        (1, String::new(), "Provide a single member ID\n".into())
    );
}

#[test]
fn unsupported_options_are_refused_clearly() {
    let (code, _, err) = etcdctl(&["--cert-file", "c.pem", "get", "/k"], &[], "");
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Error:  --cert-file (TLS client certificates) is not supported by this etcdctl\n"
    );
}

#[test]
fn v2_auth_commands_are_refused_clearly() {
    for command in ["user", "role", "auth"] {
        assert_eq!(
            etcdctl(&[command, "list"], &[], ""),
            (
                1,
                String::new(),
                format!("Error:  v2 auth ({command}) is not supported by this etcdctl\n")
            )
        );
    }
}

#[test]
fn backup_is_dispatched_to_its_module() {
    // Backing up a data dir that does not exist fails with a message and status 1.
    let missing = std::env::temp_dir().join("etcdctl-cli-test-no-such-data-dir");
    let target = std::env::temp_dir().join("etcdctl-cli-test-backup-target");
    let (code, out, err) = etcdctl(
        &[
            "backup",
            "--data-dir",
            &missing.to_string_lossy(),
            "--backup-dir",
            &target.to_string_lossy(),
        ],
        &[],
        "",
    );
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(!err.is_empty());
    let (code, out, _) = etcdctl(&["backup", "-h"], &[], "");
    assert_eq!(
        (code, out.as_str()),
        (0, help::command_help("backup").unwrap())
    );
}

fn word() -> impl Strategy<Value = String> {
    "[a-z/][a-z0-9/]{0,6}"
}

const MODEL_FLAGS: &[flags::Flag] = &[
    flags::Flag {
        names: &["ttl"],
        kind: flags::Kind::Int,
    },
    flags::Flag {
        names: &["with-value"],
        kind: flags::Kind::Str,
    },
    flags::Flag {
        names: &["help", "h"],
        kind: flags::Kind::Bool,
    },
];

proptest! {
    /// Reordering only moves arguments: it is a permutation of its input.
    #[test]
    fn reorder_is_a_permutation(args in proptest::collection::vec(prop_oneof![word(), Just("--ttl".to_string()), Just("--".to_string()), Just("-h".to_string()), Just("--x=1".to_string())], 0..10)) {
        let mut a = flags::reorder(MODEL_FLAGS, &args);
        let mut b = args.clone();
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    /// Model: a command's value flags may be placed anywhere among the positional
    /// arguments (values not starting with '-'); the result is the same positional list
    /// and the flags' values.
    #[test]
    fn value_flags_may_go_anywhere(
        positional in proptest::collection::vec(word(), 1..4),
        ttl in 0i64..100000,
        with_value in word(),
        ttl_at in 0usize..4,
        value_at in 0usize..4,
        equals in any::<bool>(),
        dashes in 1usize..3,
    ) {
        let dash = "-".repeat(dashes);
        let mut args = positional.clone();
        let ttl_words = if equals { vec![format!("{dash}ttl={ttl}")] } else { vec![format!("{dash}ttl"), ttl.to_string()] };
        let at = ttl_at.min(args.len());
        args.splice(at..at, ttl_words);
        let value_words = vec!["--with-value".to_string(), with_value.clone()];
        // Insert only at a boundary that does not split the ttl flag from its value.
        let boundaries: Vec<usize> = (0..=args.len())
            .filter(|i| *i == 0 || !args[i - 1].ends_with("ttl") || args[i - 1].contains('='))
            .collect();
        let at = boundaries[value_at % boundaries.len()];
        args.splice(at..at, value_words);
        let parsed = flags::parse(MODEL_FLAGS, &flags::reorder(MODEL_FLAGS, &args)).unwrap();
        prop_assert_eq!(&parsed.args, &positional);
        prop_assert_eq!(parsed.int("ttl"), ttl);
        prop_assert_eq!(parsed.str("with-value"), with_value);
    }

    /// Go integers written in any base parse back to the same number.
    #[test]
    fn go_integers_in_any_base(n in any::<i64>(), base in 0usize..4) {
        let (sign, m) = if n < 0 { ("-", n.unsigned_abs()) } else { ("", n as u64) };
        let text = match base {
            0 => format!("{sign}{m}"),
            1 => format!("{sign}0x{m:x}"),
            2 => format!("{sign}0o{m:o}"),
            _ => format!("{sign}0b{m:b}"),
        };
        prop_assert_eq!(flags::parse_go_int(&text), Some(n));
    }
}
