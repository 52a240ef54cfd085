//! A frame-aware TCP proxy in front of each member's peer port, so the harness can cut,
//! slow down and lose raft messages link by link on loopback.
//!
//! Every member advertises its proxy's address as its peer URL, so *all* raft traffic to
//! member `to` goes through proxy `to`. A peer connection starts with the sender's
//! handshake (`raft_kv::server::peer::Handshake`: 30 bytes, the sender's member id at
//! bytes 14..22), so the proxy knows the link `(from, to)` of each connection. After the
//! handshake, the sender writes length-prefixed frames (one raft message each); the proxy
//! forwards them frame by frame, so it can drop single messages without breaking the
//! stream's framing, and delay them in order.
//!
//! Per link `(from, to)` (by member index): `cut` (the connection is closed at the next
//! frame and new ones are refused: a partition), `delay` (each frame is held that long:
//! a slow link) and `loss` (frames dropped at random, per thousand). The reverse
//! direction of a connection (the one-byte verdict, members answers) is copied as is.
//!
//! Connections that do not start with our handshake (real etcd's HTTP peer traffic, when
//! the harness runs etcd 3.4 to validate itself) are copied byte for byte; they can only
//! be refused when every link into the member is cut.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raft_kv::node::rng::SplitMix64;

/// The fault settings of one directed link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkRule {
    /// Partitioned: no frame passes.
    pub cut: bool,
    /// Delay of every frame.
    pub delay: Duration,
    /// Frames lost at random, per thousand.
    pub loss_per_mille: u32,
}

/// The network between members: link rules and the map from member id to index.
#[derive(Debug, Default)]
pub struct Net {
    rules: Mutex<HashMap<(usize, usize), LinkRule>>,
    ids: Mutex<HashMap<u64, usize>>,
    /// Frames forwarded, dropped by loss, and refused by cuts (for the report).
    pub counters: Mutex<[u64; 3]>,
}

impl Net {
    /// Records that member id `id` is member index `index`.
    pub fn learn_id(&self, id: u64, index: usize) {
        self.ids.lock().insert(id, index);
    }

    /// The rule of link `from -> to`.
    pub fn rule(&self, from: usize, to: usize) -> LinkRule {
        self.rules
            .lock()
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// Sets the rule of link `from -> to`.
    pub fn set_rule(&self, from: usize, to: usize, rule: LinkRule) {
        self.rules.lock().insert((from, to), rule);
    }

    /// Cuts every link between a member of `a` and a member of `b`, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                for (from, to) in [(x, y), (y, x)] {
                    let mut rule = self.rule(from, to);
                    rule.cut = true;
                    self.set_rule(from, to, rule);
                }
            }
        }
    }

    /// Clears every rule.
    pub fn heal(&self) {
        self.rules.lock().clear();
    }

    /// Whether every link into `to` is cut (used for peers whose protocol the proxy
    /// cannot attribute to a sender).
    fn inbound_cut(&self, to: usize) -> bool {
        let rules = self.rules.lock();
        let cut: Vec<bool> = rules
            .iter()
            .filter(|((_, t), _)| *t == to)
            .map(|(_, r)| r.cut)
            .collect();
        !cut.is_empty() && cut.iter().all(|&c| c)
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.ids.lock().get(&id).copied()
    }
}

/// A proxy in front of one member's peer port; stops (and closes its connections) on
/// drop.
pub struct Proxy {
    /// The port it listens on (the member's advertised peer port).
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Starts a proxy on an ephemeral loopback port for member `to`, forwarding to
    /// `upstream`.
    pub fn start(net: Arc<Net>, to: usize, upstream: u16, seed: u64) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let stop = Arc::clone(&stop);
            let live = Arc::clone(&live);
            thread::Builder::new()
                .name(format!("proxy-{to}"))
                .spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((client, _)) => {
                                n += 1;
                                let _ = client.set_nonblocking(false);
                                let net = Arc::clone(&net);
                                let live = Arc::clone(&live);
                                let stop = Arc::clone(&stop);
                                let conn_seed = seed ^ (n << 20) ^ to as u64;
                                let _ = thread::Builder::new()
                                    .name(format!("proxy-{to}-conn"))
                                    .spawn(move || {
                                        connection(net, to, upstream, client, live, stop, conn_seed)
                                    });
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                thread::sleep(Duration::from_millis(5));
                            }
                            Err(_) => thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })?
        };
        Ok(Proxy {
            port,
            stop,
            accept: Some(accept),
            live,
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for stream in self.live.lock().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn connection(
    net: Arc<Net>,
    to: usize,
    upstream: u16,
    mut client: TcpStream,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut handshake = [0u8; 30];
    if client.read_exact(&mut handshake).is_err() {
        return;
    }
    let _ = client.set_read_timeout(None);
    // Another peer protocol (real etcd speaks HTTP between members): pass the bytes
    // through untouched; only `cut` rules towards this member apply then.
    let ours = &handshake[..4] == b"TBPR";
    let from_id = u64::from_be_bytes(handshake[14..22].try_into().unwrap_or([0; 8]));
    let from = if ours { net.index_of(from_id) } else { None };
    let is_raft = ours && handshake[5] == 1;
    if !ours && net.inbound_cut(to) {
        net.counters.lock()[2] += 1;
        return;
    }
    if let Some(from) = from {
        if net.rule(from, to).cut {
            net.counters.lock()[2] += 1;
            return;
        }
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    if server.write_all(&handshake).is_err() {
        return;
    }
    {
        let mut live = live.lock();
        if stop.load(Ordering::Relaxed) {
            return;
        }
        live.retain(|s| s.peer_addr().is_ok());
        if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
            live.push(a);
            live.push(b);
        }
    }
    // Back: copy as is.
    if let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) {
        thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match from_server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to_client.shutdown(Shutdown::Both);
            let _ = from_server.shutdown(Shutdown::Both);
        });
    }
    // Forth: frame by frame, through a delay line.
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let Ok(mut to_server) = server.try_clone() else {
            return;
        };
        thread::spawn(move || {
            for (release, frame) in rx {
                let now = Instant::now();
                if release > now {
                    thread::sleep(release - now);
                }
                if to_server.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = to_server.shutdown(Shutdown::Both);
        })
    };
    let mut rng = SplitMix64::new(seed);
    loop {
        let frame = if is_raft {
            let mut len = [0u8; 4];
            if client.read_exact(&mut len).is_err() {
                break;
            }
            let n = u32::from_be_bytes(len) as usize;
            if n > raft_kv::server::peer::MAX_FRAME {
                break;
            }
            let mut frame = vec![0u8; 4 + n];
            frame[..4].copy_from_slice(&len);
            if client.read_exact(&mut frame[4..]).is_err() {
                break;
            }
            frame
        } else {
            let mut buf = vec![0u8; 16 * 1024];
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    buf
                }
            }
        };
        let rule = from.map(|from| net.rule(from, to)).unwrap_or_default();
        if rule.cut {
            net.counters.lock()[2] += 1;
            break;
        }
        if is_raft
            && rule.loss_per_mille > 0
            && rng.next_u64() % 1000 < u64::from(rule.loss_per_mille)
        {
            net.counters.lock()[1] += 1;
            continue;
        }
        net.counters.lock()[0] += 1;
        if tx.send((Instant::now() + rule.delay, frame)).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = writer.join();
}
