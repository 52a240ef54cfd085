//! What a member keeps on disk, and where.
//!
//! ```text
//! <data-dir>/                      mode 0700
//!   member/                        mode 0700
//!     identity                     who this member is (see [`Identity`])
//!     wal/                         the raft log (unless --wal-dir is given)
//!     snap/                        raft snapshots (store + membership)
//! ```
//!
//! The identity is written once, when the member first starts (bootstrap or join), with
//! the write-temp / fsync / rename / fsync-directory sequence, so a crash leaves either no
//! identity or a complete one. A data dir with an identity is a member that restarts: the
//! `--initial-*` flags are then ignored, as etcd ignores them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::id::{ClusterId, MemberId};
use super::ServerError;

/// A member's permanent identity.
///
/// File format (`member/identity`, UTF-8 text, one `name=value` per line, in this order):
///
/// ```text
/// tabby-member-identity 1
/// member_id=<hex>
/// cluster_id=<hex>
/// crc32=<hex of CRC-32 (IEEE) over the preceding lines, newlines included>
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// This member's id.
    pub member_id: MemberId,
    /// The cluster it belongs to.
    pub cluster_id: ClusterId,
}

const HEADER: &str = "tabby-member-identity 1";

/// `<data-dir>/member`.
pub fn member_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member")
}

/// `<data-dir>/member/identity`.
pub fn identity_path(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join("identity")
}

impl Identity {
    /// Encodes the identity file (see the format above).
    pub fn encode(&self) -> String {
        let body = format!(
            "{HEADER}\nmember_id={}\ncluster_id={}\n",
            self.member_id, self.cluster_id
        );
        format!("{body}crc32={:08x}\n", crc32fast::hash(body.as_bytes()))
    }

    /// Decodes an identity file; the error says what is wrong.
    pub fn decode(text: &str) -> Result<Identity, String> {
        let Some((body, crc_line)) = text.trim_end_matches('\n').rsplit_once('\n') else {
            return Err("truncated identity file".to_string());
        };
        let body = format!("{body}\n");
        let crc = crc_line
            .strip_prefix("crc32=")
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or("missing crc32 line")?;
        if crc != crc32fast::hash(body.as_bytes()) {
            return Err("checksum mismatch".to_string());
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err("not a tabby member identity (version 1)".to_string());
        }
        let mut field = |name: &str| -> Result<u64, String> {
            lines
                .next()
                .and_then(|line| line.strip_prefix(name))
                .and_then(|line| line.strip_prefix('='))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("missing or bad {name}"))
        };
        Ok(Identity {
            member_id: MemberId(field("member_id")?),
            cluster_id: ClusterId(field("cluster_id")?),
        })
    }
}

/// Creates a directory (and parents) with mode 0700.
pub fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .map_err(|e| ServerError::io("create directory", path, e))
}

/// Restricts a file to its owner (mode 0600), as etcd keeps its data files.
pub fn make_private(path: &Path) -> Result<(), ServerError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| ServerError::io("chmod 0600", path, e))?;
    }
    let _ = path;
    Ok(())
}

/// fsyncs a directory so that a rename or a new file in it is durable.
pub fn sync_dir(path: &Path) -> Result<(), ServerError> {
    fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| ServerError::io("fsync directory", path, e))
}

/// Writes `contents` to `path` atomically and durably (temp file, fsync, rename, fsync
/// the directory).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ServerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(|e| ServerError::io("create", &tmp, e))?;
    file.write_all(contents)
        .map_err(|e| ServerError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| ServerError::io("fsync", &tmp, e))?;
    drop(file);
    make_private(&tmp)?;
    fs::rename(&tmp, path).map_err(|e| ServerError::io("rename into place", path, e))?;
    sync_dir(dir)
}

/// Reads the identity of the member in `data_dir`; `Ok(None)` when there is none yet.
pub fn load_identity(data_dir: &Path) -> Result<Option<Identity>, ServerError> {
    let path = identity_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(text) => Identity::decode(&text)
            .map(Some)
            .map_err(|detail| ServerError::DataDir { path, detail }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ServerError::io("read", path, e)),
    }
}

/// Records the identity of the member in `data_dir` (creating `member/`).
pub fn save_identity(data_dir: &Path, identity: &Identity) -> Result<(), ServerError> {
    create_private_dir(&member_dir(data_dir))?;
    write_atomic(&identity_path(data_dir), identity.encode().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trip_and_corruption() {
        let identity = Identity {
            member_id: MemberId(0x7e4b58baca723182),
            cluster_id: ClusterId(0x76309787450b79cc),
        };
        let text = identity.encode();
        assert_eq!(Identity::decode(&text), Ok(identity));
        let flipped = text.replace("7e4b", "7e4c");
        assert_eq!(
            Identity::decode(&flipped),
            Err("checksum mismatch".to_string())
        );
        assert!(Identity::decode("").is_err());
        assert!(Identity::decode(&text[..text.len() / 2]).is_err());
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("node1.etcd");
        assert_eq!(load_identity(&data_dir).unwrap(), None);
        let identity = Identity {
            member_id: MemberId(1),
            cluster_id: ClusterId(2),
        };
        save_identity(&data_dir, &identity).unwrap();
        assert_eq!(load_identity(&data_dir).unwrap(), Some(identity));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(member_dir(&data_dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
            let file_mode = fs::metadata(identity_path(&data_dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(file_mode & 0o777, 0o600);
        }
        fs::write(identity_path(&data_dir), "garbage\n").unwrap();
        assert!(matches!(
            load_identity(&data_dir),
            Err(ServerError::DataDir { .. })
        ));
    }

    proptest::proptest! {
        /// Any identity survives encode/decode; any single-byte change is detected.
        #[test]
        fn round_trip(member in 1u64.., cluster in 1u64.., at in 0usize..60, byte in 0u8..128) {
            let identity = Identity { member_id: MemberId(member), cluster_id: ClusterId(cluster) };
            let text = identity.encode();
            proptest::prop_assert_eq!(Identity::decode(&text), Ok(identity));
            let mut bytes = text.clone().into_bytes();
            let at = at % bytes.len();
            if bytes[at] != byte {
                bytes[at] = byte;
                if let Ok(changed) = String::from_utf8(bytes) {
                    proptest::prop_assert_ne!(Identity::decode(&changed), Ok(identity));
                }
            }
        }
    }
}
