//! Real members (raft node, WAL on disk, TCP peer port, HTTP client port) on loopback in
//! one process, with the flat test key space as the replicated state: bootstrap, writes
//! through a follower, quorum reads, member add + join, remove, restart from disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::config::{format_initial_cluster, parse_initial_cluster, Config, InitialClusterState};
use super::member::testing::{FlatKeySpace, FlatStateMachine};
use super::run::run_member;
use super::url::MemberUrl;
use super::ServerError;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

struct Node {
    name: String,
    client: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

fn config(
    dir: &std::path::Path,
    name: &str,
    client: u16,
    peer: u16,
    cluster: &str,
    state: InitialClusterState,
) -> Config {
    let client_url = MemberUrl::parse(&format!("http://127.0.0.1:{client}")).unwrap();
    let peer_url = MemberUrl::parse(&format!("http://127.0.0.1:{peer}")).unwrap();
    let mut config = Config::single(name, dir.join(format!("{name}.etcd")), client_url, peer_url);
    config.initial_cluster = parse_initial_cluster(cluster).unwrap();
    config.initial_cluster_state = state;
    config.initial_cluster_token = "test-cluster".into();
    config.heartbeat_interval = Duration::from_millis(20);
    config.election_timeout = Duration::from_millis(200);
    config
}

fn start(config: Config) -> Node {
    let (stop, stopped) = oneshot::channel::<()>();
    let name = config.name.clone();
    let client = config.listen_client_urls[0].port();
    let task = tokio::spawn(run_member(
        config,
        || {
            let keys = Arc::new(FlatKeySpace::default());
            (FlatStateMachine { keys: keys.clone() }, keys)
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Node {
        name,
        client,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Node {
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    match body {
        Some((ct, data)) => text.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{data}",
            data.len()
        )),
        None => text.push_str("\r\n"),
    }
    stream.write_all(text.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn healthy(port: u16) {
    eventually("health", async || {
        http(port, "GET", "/health", None)
            .await
            .filter(|(s, b)| *s == 200 && b.contains("true"))
    })
    .await;
}

async fn members(port: u16) -> serde_json::Value {
    let (status, body) = http(port, "GET", "/v2/members", None).await.unwrap();
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_join_remove_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..4).map(|_| (free_port(), free_port())).collect();
    let cluster: String = (0..3)
        .map(|i| format!("n{i}=http://127.0.0.1:{}", ports[i].1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            start(config(
                dir.path(),
                &format!("n{i}"),
                ports[i].0,
                ports[i].1,
                &cluster,
                InitialClusterState::New,
            ))
        })
        .collect();
    for node in &nodes {
        healthy(node.client).await;
    }
    // Every member reports the same member set, with names and client URLs published.
    let listed = eventually("published attributes", async || {
        let m = members(nodes[0].client).await;
        let all = m["members"]
            .as_array()?
            .iter()
            .all(|x| x["clientURLs"].as_array().is_some_and(|c| !c.is_empty()));
        all.then_some(m)
    })
    .await;
    assert_eq!(listed["members"].as_array().unwrap().len(), 3);
    for node in &nodes[1..] {
        assert_eq!(
            members(node.client).await,
            listed,
            "{} sees another member list",
            node.name
        );
    }

    // A write through each member; a quorum read on every member sees it.
    for (i, writer) in nodes.iter().enumerate() {
        let (status, body) = http(
            writer.client,
            "PUT",
            &format!("/v2/keys/k{i}"),
            Some((FORM, &format!("value=v{i}"))),
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{body}");
        for reader in &nodes {
            let (status, body) = http(
                reader.client,
                "GET",
                &format!("/v2/keys/k{i}?quorum=true"),
                None,
            )
            .await
            .unwrap();
            assert_eq!(status, 200, "{body}");
            assert!(body.contains(&format!("\"value\":\"v{i}\"")), "{body}");
        }
    }

    // member add, then the new member joins with state `existing` and catches up.
    let (c3, p3) = ports[3];
    // (The strict reconfiguration check refuses until every member is connected.)
    let body = eventually("member add to be accepted", async || {
        let add = format!("{{\"peerURLs\":[\"http://127.0.0.1:{p3}\"]}}");
        http(
            nodes[0].client,
            "POST",
            "/v2/members",
            Some(("application/json", &add)),
        )
        .await
        .filter(|(s, _)| *s == 201)
        .map(|(_, body)| body)
    })
    .await;
    let added: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut grown = parse_initial_cluster(&cluster).unwrap();
    grown.insert(
        "n3".into(),
        vec![MemberUrl::parse(&format!("http://127.0.0.1:{p3}")).unwrap()],
    );
    nodes.push(start(config(
        dir.path(),
        "n3",
        c3,
        p3,
        &format_initial_cluster(&grown),
        InitialClusterState::Existing,
    )));
    healthy(c3).await;
    eventually("n3 to catch up", async || {
        http(c3, "GET", "/v2/keys/k2", None)
            .await
            .filter(|(s, b)| *s == 200 && b.contains("v2"))
    })
    .await;
    let joined = eventually("n3 to publish its name", async || {
        let m = members(nodes[0].client).await;
        m["members"]
            .as_array()?
            .iter()
            .find(|x| x["id"] == added["id"] && x["name"] == "n3")
            .cloned()
    })
    .await;
    assert_eq!(
        joined["clientURLs"],
        serde_json::json!([format!("http://127.0.0.1:{c3}")])
    );

    // Remove the new member: it stops by itself; ids are never reused.
    let id = added["id"].as_str().unwrap().to_string();
    let (status, _) = http(
        nodes[1].client,
        "DELETE",
        &format!("/v2/members/{id}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 204);
    let task = nodes[3].task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("removed member stops")
        .unwrap()
        .unwrap();
    let (status, body) = http(
        nodes[0].client,
        "DELETE",
        &format!("/v2/members/{id}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body),
        (
            410,
            format!("{{\"message\":\"Member permanently removed: {id}\"}}")
        )
    );

    // Stop and restart one member: it resumes from its data dir (flags ignored).
    nodes[2].stop().await;
    // (The stopped member may have led: retry while the others elect a new leader.)
    eventually("a write with one member down", async || {
        http(
            nodes[0].client,
            "PUT",
            "/v2/keys/while-down",
            Some((FORM, "value=x")),
        )
        .await
        .filter(|(s, _)| *s == 201)
    })
    .await;
    let restarted = start(config(
        dir.path(),
        "n2",
        ports[2].0,
        ports[2].1,
        "ignored=http://127.0.0.1:1",
        InitialClusterState::New,
    ));
    healthy(restarted.client).await;
    eventually("restarted member to catch up", async || {
        http(
            restarted.client,
            "GET",
            "/v2/keys/while-down?quorum=true",
            None,
        )
        .await
        .filter(|(s, _)| *s == 200)
    })
    .await;
    nodes[2] = restarted;
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_restores_as_a_new_one_member_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let cluster = format!("solo=http://127.0.0.1:{peer}");
    let mut solo = start(config(
        dir.path(),
        "solo",
        client,
        peer,
        &cluster,
        InitialClusterState::New,
    ));
    healthy(client).await;
    for i in 0..50 {
        let (status, _) = http(
            client,
            "PUT",
            &format!("/v2/keys/b{i}"),
            Some((FORM, &format!("value=v{i}"))),
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    let old_id = members(client).await["members"][0]["id"].clone();
    // Back up while the member runs and keeps writing.
    let writer = tokio::spawn(async move {
        for i in 0..50 {
            let _ = http(
                client,
                "PUT",
                &format!("/v2/keys/late{i}"),
                Some((FORM, "value=x")),
            )
            .await;
        }
    });
    let paths = super::backup::BackupPaths {
        data_dir: dir.path().join("solo.etcd"),
        wal_dir: None,
        backup_dir: dir.path().join("solo.backup"),
        backup_wal_dir: None,
    };
    let report = tokio::task::spawn_blocking({
        let paths = paths.clone();
        move || super::backup::backup(&paths)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(report.files >= 2, "{report:?}");
    writer.await.unwrap();
    // A second backup into the same dir is refused, as etcd refuses it.
    assert!(super::backup::backup(&paths).is_err());
    solo.stop().await;

    let (client2, peer2) = (free_port(), free_port());
    let mut restored_config = config(
        dir.path(),
        "restored",
        client2,
        peer2,
        &format!("restored=http://127.0.0.1:{peer2}"),
        InitialClusterState::New,
    );
    restored_config.data_dir = paths.backup_dir.clone();
    restored_config.force_new_cluster = true;
    let mut restored = start(restored_config);
    healthy(client2).await;
    for i in 0..50 {
        let (status, body) = http(client2, "GET", &format!("/v2/keys/b{i}"), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "b{i}: {body}");
    }
    let listed = eventually("the restored member to publish itself", async || {
        let m = members(client2).await;
        (m["members"][0]["name"] == "restored").then_some(m)
    })
    .await;
    assert_eq!(listed["members"].as_array().unwrap().len(), 1);
    assert_ne!(
        listed["members"][0]["id"], old_id,
        "a restored member gets a fresh id"
    );
    let (status, _) = http(client2, "PUT", "/v2/keys/after", Some((FORM, "value=ok")))
        .await
        .unwrap();
    assert_eq!(status, 201);
    restored.stop().await;
}
