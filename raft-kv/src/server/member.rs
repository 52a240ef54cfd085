//! A running member: the [`Backend`] the HTTP layer calls, built from two seams.
//!
//! * [`Consensus`] is the replicated log as the member sees it: propose a command and get
//!   the state machine's response once it is applied here, wait for a linearizable read
//!   barrier, change the membership, and report raft's status. The raft node implements
//!   it over the TCP peer transport; [`testing::LocalConsensus`] is a one-member stand-in.
//! * [`KeySpace`] is the etcd v2 store as the member uses it: turn a validated write into
//!   a command, render what applying it answered, serve local reads and watches, report
//!   the etcd index and the store statistics.
//!
//! Request flow:
//! * **write** (`PUT`/`POST`/`DELETE`): [`KeySpace::write_command`] (stamped with this
//!   member's clock) → [`Consensus::propose`] (a follower's proposal travels to the leader
//!   inside raft, so there is no HTTP redirect) → the response comes back once the entry
//!   is applied on *this* member, so a read here right after sees the write →
//!   [`KeySpace::render_write`]. No answer within [`REQUEST_TIMEOUT`] is etcd's
//!   `300 etcdserver: request timed out`.
//! * **read**: served from the local store; with `quorum=true` only after
//!   [`Consensus::read_barrier`] (raft ReadIndex: the leader confirms its leadership and
//!   this member has applied up to the leader's commit index at that moment).
//! * **watch**: registered on the local store; the events of later applies arrive on the
//!   channel the HTTP layer streams from.
//!
//! Membership changes go through [`Membership`]'s checks first (so errors are etcd's and
//! nothing is proposed in vain), then through the log as configuration changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::api::{Backend, KeysReply, MemberInfo, MembersError};
use super::config::Config;
use super::datadir::Identity;
use super::id::{member_id, ClusterId, MemberId};
use super::keys_request::{error_message, KeysRequest};
use super::membership::{unsafe_reconfiguration, Membership};
use super::stats::{go_duration, rfc3339_nano, LeaderInfo, LeaderStats, SelfStats};
use super::url::MemberUrl;

/// How long a write or quorum read may wait for consensus (etcd's 7 s default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// How long `/health` waits for a read barrier.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// A boxed future, as the seams return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why consensus could not serve a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsensusError {
    /// Not applied, and never will be (no leader, refused): safe to retry.
    Dropped(String),
    /// May or may not have been applied.
    Unknown(String),
    /// The member is stopping or was removed.
    Stopped(String),
}

/// Raft's view, as the HTTP headers and stats need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsensusStatus {
    /// The leader, if any.
    pub leader: Option<MemberId>,
    /// Current term.
    pub term: u64,
    /// Committed index (`X-Raft-Index`).
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
}

/// The replicated log as a member uses it (see the module docs).
pub trait Consensus: Send + Sync + 'static {
    /// What the state machine answers for a command.
    type Response: Send + 'static;
    /// Proposes `command`; resolves when it has been applied on this member.
    fn propose(&self, command: Vec<u8>) -> BoxFuture<'_, Result<Self::Response, ConsensusError>>;
    /// Resolves when this member has applied everything committed before the call
    /// (linearizable read barrier).
    fn read_barrier(&self) -> BoxFuture<'_, Result<(), ConsensusError>>;
    /// Adds a member (a configuration change carrying its peer URLs).
    fn add_member(
        &self,
        id: MemberId,
        peer_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>>;
    /// Replaces a member's peer URLs.
    fn update_member(
        &self,
        id: MemberId,
        peer_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>>;
    /// Removes a member for good.
    fn remove_member(&self, id: MemberId) -> BoxFuture<'_, Result<(), ConsensusError>>;
    /// Publishes this member's name and client URLs (once, after start).
    fn publish_attributes(
        &self,
        name: String,
        client_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>>;
    /// Raft's status.
    fn status(&self) -> ConsensusStatus;
    /// The replicated membership.
    fn membership(&self) -> Membership;
    /// How many current members (including this one) have started and are reachable.
    fn started_and_connected(&self) -> usize;
    /// Append messages received and sent (for `/v2/stats/self`).
    fn append_counts(&self) -> (u64, u64) {
        (0, 0)
    }
    /// How long the current leader has led as this member saw it, and since when (for
    /// `leaderInfo` in `/v2/stats/self`); `None` if not tracked.
    fn leader_since(&self) -> Option<(Duration, SystemTime)> {
        None
    }
    /// Per-follower stats, on the leader (for `/v2/stats/leader`).
    fn follower_stats(&self) -> Vec<(MemberId, super::stats::FollowerStats)> {
        Vec::new()
    }
}

/// A rendered keys answer: status, etcd index, body.
pub type Rendered = (u16, u64, Bytes);

/// The etcd v2 store as a member uses it (see the module docs).
pub trait KeySpace<Response>: Send + Sync + 'static {
    /// The command for a validated write, stamped with the proposer's clock.
    fn write_command(&self, request: &KeysRequest, now_unix_ms: u64) -> Vec<u8>;
    /// Renders what applying a write answered (`no_value`: `noValueOnSuccess=true`).
    fn render_write(&self, response: Response, no_value: bool) -> Rendered;
    /// Serves a read from the local store.
    fn get(&self, key: &str, recursive: bool, sorted: bool) -> Rendered;
    /// Registers a watch; events (each a JSON line) arrive on the channel.
    fn watch(
        &self,
        key: &str,
        recursive: bool,
        stream: bool,
        wait_index: u64,
    ) -> Result<(u64, mpsc::Receiver<Bytes>), Rendered>;
    /// The current etcd index.
    fn etcd_index(&self) -> u64;
    /// `/v2/stats/store` body.
    fn stats_json(&self) -> String;
}

/// A member: configuration, identity, and the two seams.
pub struct Member<C: Consensus, K: KeySpace<C::Response>> {
    config: Config,
    identity: Identity,
    consensus: Arc<C>,
    keys: Arc<K>,
    start_time: SystemTime,
    leader_seen: Mutex<(Option<MemberId>, Instant, SystemTime)>,
    published: std::sync::atomic::AtomicBool,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn timed_out() -> KeysReply {
    KeysReply::error(300, error_message(300), "etcdserver: request timed out", 0)
}

fn consensus_failure(error: ConsensusError) -> KeysReply {
    let cause = match error {
        ConsensusError::Dropped(reason) if reason.contains("leader") => {
            "etcdserver: leader changed".to_string()
        }
        ConsensusError::Dropped(_) | ConsensusError::Unknown(_) => {
            "etcdserver: request timed out".to_string()
        }
        ConsensusError::Stopped(_) => "etcdserver: server stopped".to_string(),
    };
    KeysReply::error(300, error_message(300), &cause, 0)
}

fn members_failure(_error: ConsensusError) -> MembersError {
    MembersError {
        status: 500,
        message: "Internal Server Error".to_string(),
    }
}

async fn with_timeout<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, ConsensusError>>,
) -> Result<T, ConsensusError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(ConsensusError::Unknown("timed out".to_string())),
    }
}

impl<C: Consensus, K: KeySpace<C::Response>> Member<C, K> {
    /// Assembles a member.
    pub fn new(
        config: Config,
        identity: Identity,
        consensus: Arc<C>,
        keys: Arc<K>,
    ) -> Member<C, K> {
        Member {
            config,
            identity,
            consensus,
            keys,
            start_time: SystemTime::now(),
            leader_seen: Mutex::new((None, Instant::now(), SystemTime::now())),
            published: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// This member's id.
    pub fn id(&self) -> MemberId {
        self.identity.member_id
    }

    /// The consensus seam.
    pub fn consensus(&self) -> &Arc<C> {
        &self.consensus
    }

    fn raft_headers(&self) -> (u64, u64) {
        let status = self.consensus.status();
        (status.commit, status.term.max(1))
    }

    fn done(&self, (status, etcd_index, body): Rendered, success: bool) -> KeysReply {
        let raft = success.then(|| self.raft_headers());
        KeysReply::Done {
            status,
            etcd_index,
            raft,
            body,
        }
    }

    /// Publishes this member's name and client URLs until it succeeds (run once at start).
    /// Until then the member reports itself unhealthy, as etcd is not ready before it has
    /// published itself.
    pub async fn publish_attributes(&self) {
        let client_urls: Vec<String> = self
            .config
            .advertise_client_urls
            .iter()
            .map(|u| u.to_string())
            .collect();
        loop {
            let attempt = self
                .consensus
                .publish_attributes(self.config.name.clone(), client_urls.clone());
            match with_timeout(REQUEST_TIMEOUT, attempt).await {
                Ok(()) => {
                    self.published
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                Err(ConsensusError::Stopped(_)) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn leader_info(&self) -> (Option<MemberId>, Duration, SystemTime) {
        let leader = self.consensus.status().leader;
        if let Some((uptime, since)) = self.consensus.leader_since() {
            return (leader, uptime, since);
        }
        let mut seen = self.leader_seen.lock();
        if seen.0 != leader {
            *seen = (leader, Instant::now(), SystemTime::now());
        }
        (leader, seen.1.elapsed(), seen.2)
    }
}

impl<C: Consensus, K: KeySpace<C::Response>> Backend for Member<C, K> {
    fn cluster_id(&self) -> ClusterId {
        self.identity.cluster_id
    }

    async fn keys(&self, request: KeysRequest, no_value: bool) -> KeysReply {
        match request {
            KeysRequest::Get {
                key,
                recursive,
                sorted,
                quorum,
            } => {
                if quorum {
                    if let Err(error) =
                        with_timeout(REQUEST_TIMEOUT, self.consensus.read_barrier()).await
                    {
                        return consensus_failure(error);
                    }
                }
                let rendered = self.keys.get(&key, recursive, sorted);
                let success = rendered.0 < 300;
                self.done(rendered, success)
            }
            KeysRequest::Watch {
                key,
                recursive,
                stream,
                wait_index,
            } => match self.keys.watch(&key, recursive, stream, wait_index) {
                Ok((etcd_index, events)) => KeysReply::Watch {
                    etcd_index,
                    raft: self.raft_headers(),
                    events,
                },
                Err(rendered) => self.done(rendered, false),
            },
            write => {
                let command = self.keys.write_command(&write, now_unix_ms());
                match with_timeout(REQUEST_TIMEOUT, self.consensus.propose(command)).await {
                    Ok(response) => {
                        let rendered = self.keys.render_write(response, no_value);
                        let success = rendered.0 < 300;
                        self.done(rendered, success)
                    }
                    Err(ConsensusError::Unknown(_)) => timed_out(),
                    Err(error) => consensus_failure(error),
                }
            }
        }
    }

    fn members(&self) -> Vec<MemberInfo> {
        self.consensus.membership().infos()
    }

    fn leader(&self) -> Option<MemberInfo> {
        let leader = self.consensus.status().leader?;
        self.consensus.membership().info(leader)
    }

    async fn add_member(&self, peer_urls: Vec<MemberUrl>) -> Result<MemberInfo, MembersError> {
        let urls: Vec<String> = peer_urls.iter().map(|u| u.to_string()).collect();
        let membership = self.consensus.membership();
        membership.check_add(
            &urls,
            self.config.strict_reconfig_check,
            self.consensus.started_and_connected(),
        )?;
        if self.consensus.status().leader.is_none() {
            return Err(unsafe_reconfiguration());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut id = member_id(&peer_urls, &self.config.initial_cluster_token, Some(now));
        // Ids are never reused: a clash with a current or removed id moves the clock on.
        let mut bump = 1;
        while membership.contains(id) || membership.is_removed(id) {
            id = member_id(
                &peer_urls,
                &self.config.initial_cluster_token,
                Some(now + bump),
            );
            bump += 1;
        }
        with_timeout(REQUEST_TIMEOUT, self.consensus.add_member(id, urls.clone()))
            .await
            .map_err(members_failure)?;
        Ok(MemberInfo {
            id,
            name: String::new(),
            peer_urls: urls,
            client_urls: Vec::new(),
        })
    }

    async fn update_member(
        &self,
        id: MemberId,
        peer_urls: Vec<MemberUrl>,
    ) -> Result<(), MembersError> {
        let urls: Vec<String> = peer_urls.iter().map(|u| u.to_string()).collect();
        self.consensus.membership().check_update(id, &urls)?;
        with_timeout(REQUEST_TIMEOUT, self.consensus.update_member(id, urls))
            .await
            .map_err(members_failure)
    }

    async fn remove_member(&self, id: MemberId) -> Result<(), MembersError> {
        let membership = self.consensus.membership();
        membership.check_remove(id)?;
        if self.config.strict_reconfig_check {
            // Removing a member must leave a quorum of started, reachable members.
            let remaining = membership.len().saturating_sub(1);
            let reachable = self.consensus.started_and_connected();
            let removed_counts =
                usize::from(membership.get(id).is_some_and(|r| !r.name.is_empty()));
            if remaining > 0 && reachable.saturating_sub(removed_counts) < remaining / 2 + 1 {
                return Err(unsafe_reconfiguration());
            }
        }
        with_timeout(REQUEST_TIMEOUT, self.consensus.remove_member(id))
            .await
            .map_err(members_failure)
    }

    fn stats_self(&self) -> String {
        let (leader, uptime, since) = self.leader_info();
        let (recv, send) = self.consensus.append_counts();
        let stats = SelfStats {
            name: self.config.name.clone(),
            id: self.identity.member_id.to_string(),
            state: if leader == Some(self.identity.member_id) {
                "StateLeader"
            } else {
                "StateFollower"
            },
            start_time: rfc3339_nano(self.start_time),
            leader_info: LeaderInfo {
                leader: leader.map_or_else(|| "0".to_string(), |l| l.to_string()),
                uptime: go_duration(uptime),
                start_time: rfc3339_nano(since),
            },
            recv_append_request_count: recv,
            send_append_request_count: send,
        };
        serde_json::to_string(&stats).unwrap_or_default()
    }

    fn stats_leader(&self) -> Option<String> {
        if self.consensus.status().leader != Some(self.identity.member_id) {
            return None;
        }
        let mut followers = std::collections::BTreeMap::new();
        let known: std::collections::BTreeMap<MemberId, super::stats::FollowerStats> =
            self.consensus.follower_stats().into_iter().collect();
        for id in self.consensus.membership().ids() {
            if id != self.identity.member_id {
                followers.insert(id.to_string(), known.get(&id).cloned().unwrap_or_default());
            }
        }
        let stats = LeaderStats {
            leader: self.identity.member_id.to_string(),
            followers,
        };
        serde_json::to_string(&stats).ok()
    }

    fn stats_store(&self) -> String {
        self.keys.stats_json()
    }

    async fn health(&self) -> bool {
        if !self.published.load(std::sync::atomic::Ordering::SeqCst)
            || self.consensus.status().leader.is_none()
        {
            return false;
        }
        with_timeout(HEALTH_TIMEOUT, self.consensus.read_barrier())
            .await
            .is_ok()
    }

    fn cluster_version(&self) -> Option<String> {
        self.consensus.status().leader.map(|_| "3.4.0".to_string())
    }
}

pub mod testing {
    //! Test doubles for the member's seams: a one-member consensus that applies each
    //! command at once, and a tiny flat key space (files only) that is enough to drive the
    //! HTTP layer and the member's request flow in tests.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    /// What the flat key space's state machine answers.
    #[derive(Clone, Debug)]
    pub enum FlatResponse {
        /// A rendered answer.
        Rendered(u16, u64, String),
    }

    /// The etcd index and every key's value and index.
    type FlatState = (u64, BTreeMap<String, (String, u64)>);

    /// A flat map of keys to values with an etcd-like index; `set` and `delete` only.
    #[derive(Default)]
    pub struct FlatKeySpace {
        state: Mutex<FlatState>,
        watchers: Mutex<Vec<(String, mpsc::Sender<Bytes>)>>,
    }

    impl FlatKeySpace {
        /// Applies an encoded command (`S<key>\0<value>` or `D<key>`).
        pub fn apply(&self, command: &[u8]) -> FlatResponse {
            let text = String::from_utf8_lossy(command).to_string();
            let mut state = self.state.lock();
            if text.is_empty() || !text.is_char_boundary(1) {
                return FlatResponse::Rendered(
                    400,
                    state.0,
                    "{\"message\":\"empty command\"}".into(),
                );
            }
            let (kind, rest) = text.split_at(1);
            let (status, body, key) = match kind {
                "S" => {
                    let (key, value) = rest.split_once('\0').unwrap_or((rest, ""));
                    state.0 += 1;
                    let index = state.0;
                    let existed = state
                        .1
                        .insert(key.to_string(), (value.to_string(), index))
                        .is_some();
                    let body = serde_json::json!({"action": "set", "node": {"key": key, "value": value, "modifiedIndex": index, "createdIndex": index}});
                    (
                        if existed { 200 } else { 201 },
                        body.to_string(),
                        key.to_string(),
                    )
                }
                _ => match state.1.remove(rest) {
                    Some((_, created)) => {
                        state.0 += 1;
                        let index = state.0;
                        let body = serde_json::json!({"action": "delete", "node": {"key": rest, "modifiedIndex": index, "createdIndex": created}});
                        (200, body.to_string(), rest.to_string())
                    }
                    None => {
                        let body = format!("{{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"{rest}\",\"index\":{}}}", state.0);
                        return FlatResponse::Rendered(404, state.0, body);
                    }
                },
            };
            let index = state.0;
            drop(state);
            let mut watchers = self.watchers.lock();
            watchers.retain(|(watched, sender)| {
                if *watched == key {
                    let _ = sender.try_send(Bytes::from(format!("{body}\n")));
                    false
                } else {
                    !sender.is_closed()
                }
            });
            FlatResponse::Rendered(status, index, body)
        }
    }

    impl KeySpace<FlatResponse> for FlatKeySpace {
        fn write_command(&self, request: &KeysRequest, _now: u64) -> Vec<u8> {
            match request {
                KeysRequest::Put(put) => format!("S{}\0{}", put.key, put.value).into_bytes(),
                KeysRequest::Delete { key, .. } => format!("D{key}").into_bytes(),
                KeysRequest::Post { key, value, .. } => format!("S{key}/x\0{value}").into_bytes(),
                _ => Vec::new(),
            }
        }
        fn render_write(&self, response: FlatResponse, no_value: bool) -> Rendered {
            let FlatResponse::Rendered(status, index, body) = response;
            let body = if no_value && status < 300 {
                "{\"action\":\"set\"}".to_string()
            } else {
                body
            };
            (status, index, Bytes::from(format!("{body}\n")))
        }
        fn get(&self, key: &str, _recursive: bool, _sorted: bool) -> Rendered {
            let state = self.state.lock();
            match state.1.get(key) {
                Some((value, index)) => {
                    let body = serde_json::json!({"action": "get", "node": {"key": key, "value": value, "modifiedIndex": index, "createdIndex": index}});
                    (200, state.0, Bytes::from(format!("{body}\n")))
                }
                None => (
                    404,
                    state.0,
                    Bytes::from(format!("{{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"{key}\",\"index\":{}}}\n", state.0)),
                ),
            }
        }
        fn watch(
            &self,
            key: &str,
            _r: bool,
            _s: bool,
            _w: u64,
        ) -> Result<(u64, mpsc::Receiver<Bytes>), Rendered> {
            let (sender, receiver) = mpsc::channel(16);
            self.watchers.lock().push((key.to_string(), sender));
            Ok((self.etcd_index(), receiver))
        }
        fn etcd_index(&self) -> u64 {
            self.state.lock().0
        }
        fn stats_json(&self) -> String {
            format!("{{\"watchers\":{}}}", self.watchers.lock().len())
        }
    }

    /// [`FlatKeySpace`] as a raft state machine (snapshots are JSON of the whole map).
    pub struct FlatStateMachine {
        /// The key space it applies to (shared with the HTTP layer).
        pub keys: Arc<FlatKeySpace>,
    }

    impl crate::node::StateMachine for FlatStateMachine {
        type Response = FlatResponse;

        fn apply(&mut self, _index: u64, command: &[u8]) -> FlatResponse {
            self.keys.apply(command)
        }

        fn snapshot(&self) -> Vec<u8> {
            let state = self.keys.state.lock();
            serde_json::to_vec(&*state).unwrap_or_default()
        }

        fn restore(
            &mut self,
            snapshot: &[u8],
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let restored: FlatState = serde_json::from_slice(snapshot)?;
            *self.keys.state.lock() = restored;
            Ok(())
        }

        fn hash(&self) -> u64 {
            crate::node::fnv1a(&self.snapshot())
        }
    }

    /// A one-member consensus: commands apply at once; membership changes apply to a
    /// local registry. `set_leaderless(true)` makes every request wait (no quorum).
    pub struct LocalConsensus {
        keys: Arc<FlatKeySpace>,
        id: MemberId,
        membership: Mutex<Membership>,
        commit: AtomicU64,
        leaderless: AtomicBool,
    }

    impl LocalConsensus {
        /// A one-member cluster of `id` with these peer URLs.
        pub fn new(
            id: MemberId,
            name: &str,
            peer_urls: Vec<String>,
            keys: Arc<FlatKeySpace>,
        ) -> LocalConsensus {
            LocalConsensus {
                keys,
                id,
                membership: Mutex::new(Membership::bootstrap([(id, name.to_string(), peer_urls)])),
                commit: AtomicU64::new(1),
                leaderless: AtomicBool::new(false),
            }
        }

        /// Simulates losing (or regaining) quorum.
        pub fn set_leaderless(&self, leaderless: bool) {
            self.leaderless.store(leaderless, Ordering::SeqCst);
        }

        async fn wait_for_quorum(&self) {
            while self.leaderless.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.commit.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Consensus for LocalConsensus {
        type Response = FlatResponse;

        fn propose(&self, command: Vec<u8>) -> BoxFuture<'_, Result<FlatResponse, ConsensusError>> {
            Box::pin(async move {
                self.wait_for_quorum().await;
                Ok(self.keys.apply(&command))
            })
        }
        fn read_barrier(&self) -> BoxFuture<'_, Result<(), ConsensusError>> {
            Box::pin(async move {
                self.wait_for_quorum().await;
                Ok(())
            })
        }
        fn add_member(
            &self,
            id: MemberId,
            peer_urls: Vec<String>,
        ) -> BoxFuture<'_, Result<(), ConsensusError>> {
            Box::pin(async move {
                self.wait_for_quorum().await;
                self.membership
                    .lock()
                    .apply_add(id, peer_urls)
                    .map_err(|e| ConsensusError::Dropped(e.message))
            })
        }
        fn update_member(
            &self,
            id: MemberId,
            peer_urls: Vec<String>,
        ) -> BoxFuture<'_, Result<(), ConsensusError>> {
            Box::pin(async move {
                self.wait_for_quorum().await;
                self.membership
                    .lock()
                    .apply_update(id, peer_urls)
                    .map_err(|e| ConsensusError::Dropped(e.message))
            })
        }
        fn remove_member(&self, id: MemberId) -> BoxFuture<'_, Result<(), ConsensusError>> {
            Box::pin(async move {
                self.wait_for_quorum().await;
                self.membership
                    .lock()
                    .apply_remove(id)
                    .map_err(|e| ConsensusError::Dropped(e.message))
            })
        }
        fn publish_attributes(
            &self,
            name: String,
            client_urls: Vec<String>,
        ) -> BoxFuture<'_, Result<(), ConsensusError>> {
            Box::pin(async move {
                self.wait_for_quorum().await;
                self.membership
                    .lock()
                    .apply_attributes(self.id, name, client_urls);
                Ok(())
            })
        }
        fn status(&self) -> ConsensusStatus {
            let leaderless = self.leaderless.load(Ordering::SeqCst);
            ConsensusStatus {
                leader: (!leaderless).then_some(self.id),
                term: 2,
                commit: self.commit.load(Ordering::SeqCst),
                applied: self.commit.load(Ordering::SeqCst),
            }
        }
        fn membership(&self) -> Membership {
            self.membership.lock().clone()
        }
        fn started_and_connected(&self) -> usize {
            1
        }
    }
}
