//! Shared harness of the `libnetwork_*` tests: an in-process plugin on a unix socket,
//! over a datastore (in memory by default), the real Calico IPAM, and a fake host (or
//! the real one, for the Docker tests).
//!
//! The plugin's modules are compiled into each test crate from the example's sources
//! (`#[path]`), so the tests drive exactly the code the binary runs.

// Each test crate uses a different subset of the plugin and of this harness.
#![allow(dead_code)]

#[path = "../../examples/calico-libnetwork/plugin/mod.rs"]
pub mod plugin;

pub mod felix;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use calico_model::datastore::{Datastore, MemoryDatastore};
use calico_model::ipam_store::DatastoreBlockStore;
use serde_json::Value;

use plugin::addresses::{Allocator, CalicoIpam, HeldAddress};
use plugin::client::{self, Answer};
use plugin::driver::{Driver, DriverConfig, Scope};
use plugin::links::{FakeLinks, HostLinks};
use plugin::server::{self, CallObserver};

/// The allocator the harness runs: Calico IPAM over the harness's datastore.
pub type HarnessIpam = CalicoIpam<DatastoreBlockStore<Arc<dyn Datastore>>>;

/// How to start a [`Harness`].
pub struct Options {
    /// The Calico host id.
    pub host: String,
    /// The datastore.
    pub store: Arc<dyn Datastore>,
    /// The host programming; `None` = a fresh [`FakeLinks`].
    pub links: Option<Arc<dyn HostLinks>>,
    /// Where to listen; `None` = a temporary directory.
    pub socket: Option<PathBuf>,
    /// Sees every call.
    pub observer: Option<CallObserver>,
}

impl Options {
    /// A fresh in-memory datastore, a fake host, a temporary socket.
    pub fn new(host: &str) -> Options {
        Options {
            host: host.to_string(),
            store: Arc::new(MemoryDatastore::new()),
            links: None,
            socket: None,
            observer: None,
        }
    }
}

/// A running in-process plugin.
pub struct Harness {
    /// Where it listens.
    pub socket: PathBuf,
    /// Its datastore.
    pub store: Arc<dyn Datastore>,
    /// Its allocator (for leak checks and for allocating "as calicoctl").
    pub ipam: Arc<HarnessIpam>,
    /// The fake host (unused when [`Options::links`] gave a real one).
    pub links: Arc<FakeLinks>,
    /// The Calico host id.
    pub host: String,
    /// The driver the server calls (for what Docker never calls, like garbage collection).
    pub driver: Arc<Driver>,
    dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Harness {
    /// Starts a plugin for `host` over a fresh datastore and a fake host.
    pub fn start(host: &str) -> Harness {
        Harness::start_with(Options::new(host))
    }

    /// Starts a plugin as `options` say. Several harnesses may share one store (several
    /// hosts, or one plugin restarted).
    pub fn start_with(options: Options) -> Harness {
        let (dir, socket) = match options.socket {
            Some(path) => (None, path),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("plugin.sock");
                (Some(dir), path)
            }
        };
        let store = options.store;
        let host = options.host;
        let blocks = DatastoreBlockStore::new(Arc::clone(&store));
        let ipam = Arc::new(CalicoIpam::new(ipam::Ipam::new(blocks)));
        let fake = Arc::new(FakeLinks::new());
        let links = options
            .links
            .unwrap_or_else(|| Arc::clone(&fake) as Arc<dyn HostLinks>);
        let driver = Arc::new(Driver::new(
            DriverConfig {
                host: host.clone(),
                scope: Scope::Local,
            },
            Arc::clone(&store),
            Arc::clone(&ipam) as Arc<dyn Allocator>,
            links,
        ));
        let served = Arc::clone(&driver);
        let observer = options.observer;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let bind_path = path.clone();
            runtime.block_on(async move {
                let listener = server::bind_socket(&bind_path).expect("bind");
                ready_tx.send(()).expect("ready");
                let shutdown = async move {
                    let _ = rx.await;
                };
                server::serve(listener, served, observer, shutdown)
                    .await
                    .expect("serve");
            });
            // Like the binary: leave no socket for Docker to keep dialling.
            let _ = std::fs::remove_file(&path);
        });
        ready_rx.recv().expect("server started");
        Harness {
            socket,
            store,
            ipam,
            links: fake,
            host,
            driver,
            dir,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stops serving and removes the socket (also done on drop).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// One call, framed as Docker frames it.
    pub fn call(&self, method: &str, body: Option<&Value>) -> Answer {
        client::call(&self.socket, method, body).expect("plugin reachable")
    }

    /// One call with exactly these body bytes.
    pub fn call_raw(&self, method: &str, body: &[u8]) -> Answer {
        client::call_raw(&self.socket, method, body).expect("plugin reachable")
    }

    /// The addresses this host's plugin holds.
    pub fn held(&self) -> Vec<HeldAddress> {
        self.ipam.allocations(&self.host).expect("list allocations")
    }

    /// A file's value in the datastore, if any.
    pub fn value(&self, key: &str) -> Option<String> {
        self.store
            .get_value(key)
            .expect("datastore read")
            .map(|(v, _)| v)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
        drop(self.dir.take());
    }
}

/// `tests/fixtures/libnetwork/<name>`.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/libnetwork")
        .join(name)
}

/// Calico IPAM's consistency check over the harness's datastore, with the handles of the
/// addresses that this host's endpoints still use as the live set: panics if any
/// allocation of this host's plugin is leaked or a handle's counts disagree with its
/// blocks.
pub fn assert_no_leaks(h: &Harness, context: &str) {
    use calico_model::model::WorkloadEndpoint;
    use std::collections::HashSet;

    let ipam = h.ipam.ipam();
    let mut live: HashSet<String> = HashSet::new();
    let dir = format!(
        "{}/endpoint",
        calico_model::layout::workload_dir(&h.host, "libnetwork", "libnetwork")
    );
    if let Ok(read) = h.store.get(&dir, true) {
        for node in read.node.leaves() {
            let ep = WorkloadEndpoint::from_json(node.value.as_deref().unwrap_or_default())
                .expect("endpoint JSON");
            for addr in ep.addresses() {
                if let Some(handle) = ipam
                    .assignment(addr)
                    .expect("assignment")
                    .and_then(|a| a.handle)
                {
                    live.insert(handle.as_str().to_string());
                }
            }
        }
    }
    let report = ipam.check(&live).expect("IPAM check");
    let leaked: Vec<_> = report
        .leaked
        .iter()
        .filter(|a| {
            a.handle
                .as_ref()
                .is_some_and(|handle| plugin::addresses::is_own_handle(handle.as_str(), &h.host))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "{context}: leaked plugin allocations: {leaked:?}"
    );
    assert!(report.handle_mismatches.is_empty(), "{context}: {report:?}");
}
