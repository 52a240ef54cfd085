//! Docker's libnetwork plugin requests from arbitrary text, through the plugin's own code.
//!
//! The plugin lives in the calico-libnetwork example; its module tree
//! (examples/calico-libnetwork/plugin/) is compiled into this target unchanged with
//! `#[path]`, so the fuzzer runs exactly what the example runs, and the example stays as
//! it is.
//!
//! The input is text, one call per line: `<Interface.Method> <JSON body>` (seeds are
//! Docker's conversation for `docker network create` / `docker run` / `docker rm` /
//! `docker network rm`, fuzz/corpus/libnetwork_json/). Each line:
//! * is parsed with `protocol::Call::parse`; a parsed request serializes to JSON that
//!   parses back to an equal call (the wire shapes round-trip);
//! * is answered by the real `driver::Driver` over an in-memory Calico datastore, Calico
//!   IPAM on that datastore and fake host links, in order, so later calls see what earlier
//!   ones did. The driver must answer `Ok` or `Err`, never panic; an answer is a JSON
//!   object; an error has a 4xx/5xx status and an `Err` body.
//! * the same JSON is also read as each *reply* type (what `client` parses of Docker's
//!   side): whatever parses re-serializes and parses back equal.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[allow(dead_code, missing_docs, unused_imports, clippy::all)]
#[path = "../../examples/calico-libnetwork/plugin/mod.rs"]
mod plugin;

use plugin::addresses::CalicoIpam;
use plugin::driver::{Driver, DriverConfig, Scope};
use plugin::links::FakeLinks;
use plugin::protocol::*;
use plugin::server::Handler;

fn request_json(call: &Call) -> Option<Vec<u8>> {
    let json = match call {
        Call::Activate
        | Call::NetworkCapabilities
        | Call::IpamCapabilities
        | Call::DefaultAddressSpaces => return None,
        Call::CreateNetwork(r) => serde_json::to_vec(r),
        Call::DeleteNetwork(r) => serde_json::to_vec(r),
        Call::CreateEndpoint(r) => serde_json::to_vec(r),
        Call::EndpointOperInfo(r)
        | Call::DeleteEndpoint(r)
        | Call::Leave(r)
        | Call::RevokeExternalConnectivity(r) => serde_json::to_vec(r),
        Call::Join(r) => serde_json::to_vec(r),
        Call::DiscoverNew(r) | Call::DiscoverDelete(r) => serde_json::to_vec(r),
        Call::ProgramExternalConnectivity(r) => serde_json::to_vec(r),
        Call::RequestPool(r) => serde_json::to_vec(r),
        Call::ReleasePool(r) => serde_json::to_vec(r),
        Call::RequestAddress(r) => serde_json::to_vec(r),
        Call::ReleaseAddress(r) => serde_json::to_vec(r),
    };
    Some(json.expect("a parsed request serializes"))
}

fn reply_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(body) {
        let json = serde_json::to_vec(&value).expect("a parsed reply serializes");
        let again: T = serde_json::from_slice(&json).expect("a serialized reply parses");
        assert_eq!(again, value);
    }
}

fn driver() -> Driver {
    let store: Arc<dyn calico_model::datastore::Datastore> =
        Arc::new(calico_model::datastore::MemoryDatastore::new());
    let blocks = calico_model::ipam_store::DatastoreBlockStore::new(Arc::clone(&store));
    let ipam = Arc::new(CalicoIpam::new(ipam::Ipam::new(blocks)));
    Driver::new(
        DriverConfig {
            host: "fuzzhost".to_string(),
            scope: Scope::Local,
        },
        store,
        ipam,
        Arc::new(FakeLinks::new()),
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let driver = driver();
    for line in text.lines().take(32) {
        let (method, body) = line.split_once(' ').unwrap_or((line, ""));
        let body = body.as_bytes();

        reply_round_trip::<CreateEndpointResponse>(body);
        reply_round_trip::<EndpointInfoResponse>(body);
        reply_round_trip::<JoinResponse>(body);
        reply_round_trip::<ActivateResponse>(body);
        reply_round_trip::<NetworkCapabilities>(body);
        reply_round_trip::<IpamCapabilities>(body);
        reply_round_trip::<AddressSpaces>(body);
        reply_round_trip::<RequestPoolResponse>(body);
        reply_round_trip::<RequestAddressResponse>(body);
        reply_round_trip::<ErrorBody>(body);

        let call = match Call::parse(method, body) {
            Ok(call) => call,
            Err(ProtocolError::UnknownMethod(m)) => {
                assert!(!METHODS.contains(&m.as_str()), "{m} is served");
                continue;
            }
            Err(ProtocolError::Malformed { .. }) => continue,
        };
        assert_eq!(call.method(), method);
        if let Some(json) = request_json(&call) {
            assert_eq!(
                Call::parse(method, &json).as_ref(),
                Ok(&call),
                "{}",
                String::from_utf8_lossy(&json)
            );
        }
        match driver.handle(call) {
            Ok(reply) => assert!(reply.to_json().is_object(), "{reply:?}"),
            Err(error) => {
                let status = error.status().as_u16();
                assert!((400..600).contains(&status), "{error}: {status}");
            }
        }
    }
});
