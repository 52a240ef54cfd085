//! The `etcd` example's command line as operators meet it: etcd's messages and exit
//! statuses for bad flags, `--help`, `--version`, and the walkthrough's single-member
//! start with the data dir defaulting to `<name>.etcd` in the working directory.

mod etcd_support;

use std::process::Command;

use etcd_support::{example_binary, http};

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(example_binary("etcd"));
    command.args(args).env_remove("ETCD_NAME");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run etcd");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn bad_flags_get_etcds_messages_and_statuses() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let table: &[Case] = &[
        (&["--foo"], &[], 2, "flag provided but not defined: -foo"),
        (&["-name"], &[], 2, "flag needs an argument: -name"),
        (
            &["--initial-cluster-state", "bogus"],
            &[],
            2,
            "invalid value \"bogus\" for flag -initial-cluster-state",
        ),
        (&["extra"], &[], 1, "'extra' is not a valid flag"),
        (
            &["--election-timeout", "100"],
            &[],
            1,
            "should be at least as 5 times as --heartbeat-interval",
        ),
        (
            &["--listen-client-urls", "http://127.0.0.1:1"],
            &[],
            1,
            "--advertise-client-urls is required",
        ),
        (
            &["--name", "yy"],
            &[("ETCD_NAME", "zz")],
            1,
            "conflicting environment variable \"ETCD_NAME\"",
        ),
        (
            &[
                "--name",
                "a",
                "--initial-cluster",
                "b=http://127.0.0.1:1",
                "--data-dir",
                "/tmp/tabby-etcd-cli-never",
            ],
            &[],
            1,
            "couldn't find local name \"a\" in the initial cluster configuration",
        ),
    ];
    for (args, env, code, message) in table {
        let (status, _, stderr) = run(args, env);
        assert_eq!(status, *code, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert!(
        !std::path::Path::new("/tmp/tabby-etcd-cli-never").exists(),
        "a refused start wrote a data dir"
    );
}

#[test]
fn help_and_version() {
    let (status, stdout, _) = run(&["--help"], &[]);
    assert_eq!(status, 0);
    assert!(
        stdout.contains("--initial-cluster-token 'etcd-cluster'"),
        "{stdout}"
    );
    let (status, stdout, _) = run(&["-version"], &[]);
    assert_eq!(status, 0);
    assert!(stdout.starts_with("etcd Version: 3.4.23"), "{stdout}");
}

#[test]
fn single_member_with_default_data_dir_serves_the_walkthrough_put() {
    let work = tempfile::tempdir().expect("work dir");
    let (client, peer) = (27190u16, 27290u16);
    let mut child = Command::new(example_binary("etcd"))
        .current_dir(work.path())
        .env_remove("ETCD_NAME")
        .args(["--name", "node1"])
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("node1=http://127.0.0.1:{peer}"),
        ])
        .arg("--enable-v2=true")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn etcd");
    let addr = format!("127.0.0.1:{client}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(&addr).is_ok()
            && http(&addr, "GET", "/health", None).0 == 200
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "member not healthy");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, headers, body) = http(
        &addr,
        "PUT",
        "/v2/keys/newworld",
        Some(("application/x-www-form-urlencoded", "value=Hello%20Docker")),
    );
    assert_eq!(status, 201);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["action"], "set");
    assert_eq!(json["node"]["key"], "/newworld");
    assert_eq!(json["node"]["value"], "Hello Docker");
    assert_eq!(json["node"]["modifiedIndex"], json["node"]["createdIndex"]);
    let index = headers
        .iter()
        .find(|(k, _)| k == "x-etcd-index")
        .map(|(_, v)| v.clone());
    assert_eq!(index, Some(json["node"]["modifiedIndex"].to_string()));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "SIGTERM shuts the member down cleanly: {status:?}"
    );
    assert!(
        work.path().join("node1.etcd/member/identity").exists(),
        "data dir defaults to <name>.etcd"
    );
}
