//! [`DatastoreBlockStore`]: the `ipam` crate's [`ipam::BlockStore`] over any
//! [`Datastore`], so Calico's IPAM algorithm runs against the same `/calico/ipam/v2/...`
//! and `/calico/v1/ipam/...` keys that Calico 0.22's tools read and write.
//!
//! Every call is one datastore request (see `ipam::store` for the etcd mapping):
//! `get` → [`Datastore::get`], `list` → a recursive get of the prefix (missing → empty),
//! `create` → `prevExist=false`, `compare_and_swap` → `prevIndex`, `compare_and_delete`
//! → `DELETE ?prevIndex`, `put`/`delete` unconditional. A version is the key's
//! `modifiedIndex`. "Already exists", "compare failed" and "missing" answers to the
//! conditional calls are [`ipam::CasOutcome::Conflict`]; every other datastore failure is
//! `ipam::IpamError::Store` naming the key, so nothing is silently retried here — the
//! allocator owns its bounded retry loops.

use ipam::{BlockStore, CasOutcome, IpamError, Key, Prefix, Value, Version, Versioned};

use crate::datastore::{Datastore, DeleteOptions};
use crate::error::Error;

/// `ipam::BlockStore` over a [`Datastore`]. See the module docs.
#[derive(Debug, Clone)]
pub struct DatastoreBlockStore<D> {
    datastore: D,
}

impl<D: Datastore> DatastoreBlockStore<D> {
    /// Wraps a datastore (share one with `Arc` to use it elsewhere too).
    pub fn new(datastore: D) -> Self {
        DatastoreBlockStore { datastore }
    }

    /// The wrapped datastore.
    pub fn datastore(&self) -> &D {
        &self.datastore
    }
}

fn store_error(key: &str, e: &Error) -> IpamError {
    IpamError::Store {
        key: key.to_string(),
        message: e.to_string(),
    }
}

fn conditional(key: &str, result: Result<Version, Error>) -> ipam::Result<CasOutcome> {
    match result {
        Ok(v) => Ok(CasOutcome::Written(v)),
        Err(
            Error::AlreadyExists { .. } | Error::CompareFailed { .. } | Error::KeyNotFound { .. },
        ) => Ok(CasOutcome::Conflict),
        Err(e) => Err(store_error(key, &e)),
    }
}

impl<D: Datastore> BlockStore for DatastoreBlockStore<D> {
    fn get(&self, key: &Key) -> ipam::Result<Option<Versioned<Value>>> {
        let path = key.path();
        match self.datastore.get(&path, false) {
            Ok(read) if read.node.dir => Err(IpamError::Corrupt {
                key: path,
                reason: "a directory where a value was expected".into(),
            }),
            Ok(read) => {
                let value = Value::from_json(key, read.node.value.as_deref().unwrap_or_default())?;
                Ok(Some(Versioned {
                    value,
                    version: read.node.modified_index,
                }))
            }
            Err(Error::KeyNotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(&path, &e)),
        }
    }

    fn list(&self, prefix: &Prefix) -> ipam::Result<Vec<(Key, Versioned<Value>)>> {
        let path = prefix.path();
        let read = match self.datastore.get(&path, true) {
            Ok(read) => read,
            Err(Error::KeyNotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(store_error(&path, &e)),
        };
        let mut out = Vec::new();
        for leaf in read.node.leaves() {
            let Some(key) = Key::parse(&leaf.key) else {
                continue;
            };
            if !prefix.matches(&key) {
                continue;
            }
            let value = Value::from_json(&key, leaf.value.as_deref().unwrap_or_default())?;
            out.push((
                key,
                Versioned {
                    value,
                    version: leaf.modified_index,
                },
            ));
        }
        Ok(out)
    }

    fn create(&self, key: &Key, value: Value) -> ipam::Result<CasOutcome> {
        value.check_key(key)?;
        let path = key.path();
        conditional(
            &path,
            self.datastore
                .create(&path, &value.to_json())
                .map(|e| e.index()),
        )
    }

    fn compare_and_swap(&self, key: &Key, value: Value, prev: Version) -> ipam::Result<CasOutcome> {
        value.check_key(key)?;
        let path = key.path();
        conditional(
            &path,
            self.datastore
                .compare_and_swap(&path, &value.to_json(), prev)
                .map(|e| e.index()),
        )
    }

    fn compare_and_delete(&self, key: &Key, prev: Version) -> ipam::Result<CasOutcome> {
        let path = key.path();
        conditional(
            &path,
            self.datastore
                .compare_and_delete(&path, prev)
                .map(|e| e.index()),
        )
    }

    fn put(&self, key: &Key, value: Value) -> ipam::Result<Version> {
        value.check_key(key)?;
        let path = key.path();
        self.datastore
            .put(&path, &value.to_json())
            .map(|e| e.index())
            .map_err(|e| store_error(&path, &e))
    }

    fn delete(&self, key: &Key) -> ipam::Result<bool> {
        let path = key.path();
        match self.datastore.delete(&path, &DeleteOptions::default()) {
            Ok(_) => Ok(true),
            Err(Error::KeyNotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(&path, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use ipam::{Attrs, Ipam, PoolChoice};

    use super::*;
    use crate::datastore::MemoryDatastore;
    use crate::state::ClusterState;

    #[test]
    fn calico_ipam_runs_over_the_datastore_with_calico_keys() {
        let ds = Arc::new(MemoryDatastore::new());
        let ipam = Ipam::new(DatastoreBlockStore::new(Arc::clone(&ds)));
        ipam.add_pool(ipam::Pool::new("10.20.10.0/24".parse().unwrap()))
            .unwrap();
        let addr: IpAddr = "10.20.10.1".parse().unwrap();
        ipam.assign_ip(addr, None, &Attrs::empty(), "dockera")
            .unwrap();
        let err = ipam
            .assign_ip(addr, None, &Attrs::empty(), "dockerb")
            .unwrap_err();
        assert!(err.to_string().contains("already"), "{err}");
        let auto = ipam
            .auto_assign("dockerb", 2, Some("c2"), &Attrs::empty(), &PoolChoice::v4())
            .unwrap();
        assert_eq!(auto.len(), 2);
        // Calico's keys and JSON.
        let block = ds
            .get_value("/calico/ipam/v2/assignment/ipv4/block/10.20.10.0-26")
            .unwrap()
            .unwrap()
            .0;
        assert!(block.contains(r#""affinity":"host:dockera""#), "{block}");
        assert_eq!(
            ds.get_value("/calico/ipam/v2/host/dockera/ipv4/block/10.20.10.0-26")
                .unwrap()
                .unwrap()
                .0,
            ""
        );
        assert!(ds.get_value("/calico/ipam/v2/handle/c2").unwrap().is_some());
        // The model sees the affinities and the pool.
        let state = ClusterState::from_read(&ds.get("/calico", true).unwrap());
        assert_eq!(state.affinities.len(), 2);
        assert!(state.affinities.values().any(|h| h == "dockerb"));
        assert!(state.pools.contains_key(&"10.20.10.0/24".parse().unwrap()));
        assert_eq!(ipam.release_ips(&[addr]).unwrap(), Vec::<IpAddr>::new());
    }

    #[test]
    fn conditional_answers_map_to_conflicts() {
        let store = DatastoreBlockStore::new(MemoryDatastore::new());
        let key = Key::Pool("10.0.0.0/16".parse().unwrap());
        let value = Value::Pool(ipam::Pool::new("10.0.0.0/16".parse().unwrap()));
        let CasOutcome::Written(v) = store.create(&key, value.clone()).unwrap() else {
            panic!("create")
        };
        assert_eq!(
            store.create(&key, value.clone()).unwrap(),
            CasOutcome::Conflict
        );
        assert_eq!(
            store.compare_and_swap(&key, value.clone(), v + 10).unwrap(),
            CasOutcome::Conflict
        );
        assert!(matches!(
            store.compare_and_swap(&key, value, v).unwrap(),
            CasOutcome::Written(_)
        ));
        assert_eq!(store.get(&key).unwrap().unwrap().version, v + 1);
        assert_eq!(
            store.compare_and_delete(&key, v).unwrap(),
            CasOutcome::Conflict
        );
        assert!(store.delete(&key).unwrap());
        assert!(!store.delete(&key).unwrap());
        assert_eq!(
            store.compare_and_delete(&key, v).unwrap(),
            CasOutcome::Conflict
        );
        assert!(store
            .list(&Prefix::Blocks(ipam::IpFamily::V4))
            .unwrap()
            .is_empty());
        // A value that does not parse is corruption, naming the key.
        store.datastore().put(&key.path(), "not json").unwrap();
        let err = store.get(&key).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0-16"), "{err}");
    }
}
