//! Our etcdctl against etcd 3.4's etcdctl, command by command.
//!
//! Two fresh one-member etcd 3.4 servers are started; every step of the session runs the
//! real etcdctl against one and ours against the other (so both see identical state and
//! indexes). After replacing server-specific values (ports, member ID, expiration time)
//! by placeholders, stdout, stderr and the exit status must be identical. Our side of
//! the session is also kept as a golden transcript (`tests/golden/etcdctl/session.txt`),
//! which documents the behaviour and catches changes even where the real etcdctl is
//! not installed.

mod etcdctl_support;

use std::path::Path;

use etcdctl_support::{
    check_golden, our_etcdctl, require, run, transcript_entry, RealEtcd, Run, REAL_ETCD,
    REAL_ETCDCTL,
};

/// One step: arguments (`{EP}` = the server's client URL, `{PEER}` = its peer URL,
/// `{DEAD}` = a URL nobody listens on), extra environment, stdin.
struct Step {
    args: &'static str,
    env: &'static [(&'static str, &'static str)],
    stdin: Option<&'static str>,
    /// Prepend `--endpoints {EP}` (false when the step chooses its endpoints itself).
    endpoints: bool,
}

const fn step(args: &'static str) -> Step {
    Step {
        args,
        env: &[],
        stdin: None,
        endpoints: true,
    }
}

const fn raw(args: &'static str) -> Step {
    Step {
        args,
        env: &[],
        stdin: None,
        endpoints: false,
    }
}

/// Splits on spaces; `'…'` groups words.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

const SESSION: &[Step] = &[
    // The blog's first steps.
    step("set /zy/message 'Hello Docker'"),
    step("get /zy/message"),
    step("-o extended get /zy/message"),
    step("-o json get /zy/message"),
    step("--debug get /zy/message"),
    step("--debug --no-sync set /zy/other x"),
    // Errors and exit statuses.
    step("get /missing"),
    step("-o json get /missing/deeper"),
    step("get"),
    step("mkdir /dir"),
    step("get /dir"),
    step("-o json get /dir"),
    // mk, update, conditional set.
    step("mk /mk first"),
    step("mk /mk second"),
    step("-o extended mk /mk2 v"),
    step("set /s v1"),
    step("set /s v2 --swap-with-value v0"),
    step("set /s v2 --swap-with-value v1"),
    step("set /s v3 --swap-with-index 1"),
    step("-o extended set /s v4"),
    step("update /s new"),
    step("update /nokey v"),
    step("-o json update /s newer"),
    // TTLs.
    step("set /ttl v --ttl 100"),
    step("-o json get /ttl"),
    step("-o extended get /ttl"),
    step("set /ttl2 --ttl 100 v"),
    step("get /ttl2"),
    // Directories.
    step("mkdir /d"),
    step("mkdir /d"),
    step("setdir /d"),
    step("updatedir /d --ttl 100"),
    step("updatedir /nod --ttl 10"),
    step("setdir /d2"),
    step("-o json mkdir /d3"),
    step("-o extended setdir /d4"),
    // ls.
    step("set /tree/b 1"),
    step("set /tree/a 2"),
    step("set /tree/sub/c 3"),
    step("mkdir /tree/empty"),
    step("ls --sort /tree"),
    step("ls --sort -p /tree"),
    step("ls --sort -r /tree"),
    step("ls -r --sort -p /tree"),
    step("ls /tree/a"),
    step("ls /none"),
    step("-o json ls --sort /tree"),
    step("-o extended ls --sort /tree"),
    // rm, rmdir.
    step("set /r gone"),
    step("rm /r"),
    step("rm /r"),
    step("set /r v"),
    step("rm /r --with-value nope"),
    step("rm /r --with-value v"),
    step("set /r v"),
    step("-o json rm /r"),
    step("set /rd/x 1"),
    step("rm /rd"),
    step("rm --dir /rd"),
    step("rmdir /rd"),
    step("rm -r /rd"),
    step("mkdir /rd"),
    step("-o extended rmdir /rd"),
    step("set /quirk 1"),
    step("rm --dir /quirk --recursive"),
    // In-order keys.
    step("mk --in-order /queue job1"),
    step("-o json mk --in-order /queue job2"),
    step("ls --sort /queue"),
    // Values from stdin, values starting with '-'.
    Step {
        args: "set /stdin",
        env: &[],
        stdin: Some("from stdin\n"),
        endpoints: true,
    },
    step("get /stdin"),
    step("set /novalue"),
    step("set -- /dash -value"),
    step("get /dash"),
    // Watches that return at once (history).
    step("watch --after-index 1 -r /"),
    step("-o json watch --after-index 1 -r /"),
    step("watch --after-index 1 /zy/message"),
    step("-o extended watch --after-index 5 /s"),
    step("watch -r --after-index 1 /r"),
    // Members and health.
    step("member list"),
    step("member list extra"),
    step("member add dup {PEER}"),
    step("member add onlyname"),
    step("member add bad ftp://x:1"),
    step("member remove 1234abcd"),
    step("member remove"),
    step("member update 1234abcd http://127.0.0.1:1"),
    step("member update 1234abcd"),
    step("member bogus"),
    step("member"),
    step("member help add"),
    step("member help"),
    step("member h h"),
    step("help help"),
    step("cluster-health"),
    // Endpoint flags and variables.
    raw("-C {EP} get /zy/message"),
    raw("--peers={EP} get /zy/message"),
    raw("--endpoint {EP} get /zy/message"),
    raw("-endpoints {EP} get /zy/message"),
    Step {
        args: "get /zy/message",
        env: &[("ETCDCTL_ENDPOINTS", "{EP}")],
        stdin: None,
        endpoints: false,
    },
    Step {
        args: "get /zy/message",
        env: &[("ETCDCTL_PEERS", "{EP}")],
        stdin: None,
        endpoints: false,
    },
    Step {
        args: "--endpoints {EP} get /zy/message",
        env: &[("ETCDCTL_ENDPOINT", "{DEAD}")],
        stdin: None,
        endpoints: false,
    },
    raw("--endpoints {DEAD} get /zy/message"),
    raw("--endpoints {DEAD} --no-sync get /zy/message"),
    raw("--endpoints {DEAD} cluster-health"),
    raw("--endpoints {DEAD} member list"),
    raw("--endpoints {DEAD},{EP} get /zy/message"),
    raw("--endpoints {DEAD} set"),
    raw("--endpoints {DEAD} --no-sync set"),
    raw("--endpoints {EP} --total-timeout 0 --no-sync get /zy/message"),
    raw("--endpoints {EP} --timeout 1ns get /zy/message"),
    raw("--endpoints {EP} --timeout 1ns member list"),
    raw("--endpoints {EP} --timeout 1ns cluster-health"),
    // Flag parsing.
    step("get --bogus /zy/message"),
    step("set /x v --ttl"),
    step("set /x v --ttl=abc"),
    step("set /x v -ttl=0x10"),
    step("get /x"),
    step("set /x2 v --sort"),
    raw("--timeout 1 --endpoints {EP} get /x"),
    raw("-o json --output simple --endpoints {EP} get /x"),
    step("-o yaml get /x"),
    step("set -h"),
    step("help rmdir"),
    step("rmdir --help"),
    step("help nosuch"),
    step("nosuch"),
    raw("--version"),
];

#[test]
fn matches_real_etcdctl_on_the_same_commands() {
    if !require(REAL_ETCD, "etcd 3.4 server") {
        return;
    }
    let real_available = require(REAL_ETCDCTL, "etcd 3.4 etcdctl");
    let ours = our_etcdctl();
    let (ours_server, real_server) = std::thread::scope(|s| {
        let a = s.spawn(|| RealEtcd::start("tabby"));
        let b = s.spawn(|| real_available.then(|| RealEtcd::start("tabby")));
        (a.join().expect("start etcd"), b.join().expect("start etcd"))
    });
    let dead = format!("http://127.0.0.1:{}", etcdctl_support::free_port());
    let mut transcript = String::new();
    let mut mismatches = Vec::new();
    for st in SESSION {
        let side = |server: &RealEtcd, bin: &Path| -> (String, Run) {
            let subst = |s: &str| {
                s.replace("{EP}", &server.client_url)
                    .replace("{PEER}", &server.peer_url)
                    .replace("{DEAD}", &dead)
            };
            let mut args = Vec::new();
            if st.endpoints {
                args.push("--endpoints".to_string());
                args.push(server.client_url.clone());
            }
            args.extend(split_args(&subst(st.args)));
            let env: Vec<(String, String)> = st
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), subst(v)))
                .collect();
            let r = run(bin, &args, &env, st.stdin);
            let norm = |t: &str| normalize(&server.normalize(t), &dead);
            let shown = norm(&args.join(" "));
            let shown = env
                .iter()
                .map(|(k, v)| format!("[{k}={}] ", norm(v)))
                .collect::<String>()
                + &shown;
            (
                shown,
                Run {
                    code: r.code,
                    out: norm(&r.out),
                    err: norm(&r.err),
                },
            )
        };
        let (shown, got) = side(&ours_server, &ours);
        transcript.push_str(&transcript_entry(&shown, &got));
        if let Some(real_server) = &real_server {
            let (_, want) = side(real_server, Path::new(REAL_ETCDCTL));
            let want = Run {
                // The v2 auth commands are not implemented: drop them from help texts.
                out: strip_auth_commands(&want.out),
                ..want
            };
            if want != got {
                mismatches.push(format!(
                    "etcdctl {shown}\n--- real etcdctl\n{}--- ours\n{}",
                    transcript_entry(&shown, &want),
                    transcript_entry(&shown, &got)
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} commands differ from etcd 3.4's etcdctl:\n\n{}",
        mismatches.len(),
        SESSION.len(),
        mismatches.join("\n")
    );
    check_golden("session.txt", &transcript);
}

/// Replaces values that differ between runs: expiration timestamps, the dead port.
fn normalize(text: &str, dead: &str) -> String {
    let dead_host_port = dead.trim_start_matches("http://");
    let mut out = text.replace(dead_host_port, "127.0.0.1:<DEADPORT>");
    // A TTL of 100 s read back a moment later is 100, or 99 on a slow machine.
    for n in 90..=100 {
        out = out
            .replace(&format!("\"ttl\":{n}}}"), "\"ttl\":<TTL100>}")
            .replace(&format!("TTL: {n}\n"), "TTL: <TTL100>\n");
    }
    // "expiration":"2026-11-26T19:23:44.039032499Z"
    while let Some(start) = out.find("\"expiration\":\"2") {
        let value_start = start + "\"expiration\":\"".len();
        let Some(len) = out[value_start..].find('"') else {
            break;
        };
        out.replace_range(value_start..value_start + len, "<TIME>");
    }
    out
}

fn strip_auth_commands(help: &str) -> String {
    help.split_inclusive('\n')
        .filter(|l| {
            !(l.starts_with("   user ") || l.starts_with("   role ") || l.starts_with("   auth "))
        })
        .collect()
}

#[test]
fn argument_splitting_for_steps() {
    assert_eq!(
        split_args("set /zy/message 'Hello Docker'"),
        ["set", "/zy/message", "Hello Docker"]
    );
    assert_eq!(split_args("a  b ''"), ["a", "b", ""]);
}

#[test]
fn expiration_times_are_normalized() {
    assert_eq!(
        normalize(
            r#"{"expiration":"2026-11-26T19:23:44.03Z","ttl":100}"#,
            "http://x:1"
        ),
        r#"{"expiration":"<TIME>","ttl":<TTL100>}"#
    );
}
