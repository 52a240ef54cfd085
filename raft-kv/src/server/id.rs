//! Member and cluster identities, derived exactly as etcd derives them.
//!
//! Every member of a new cluster computes every other member's id from the same inputs
//! (`--initial-cluster` and `--initial-cluster-token`), so they agree without talking:
//!
//! * **member id** = the first 8 bytes, big-endian, of
//!   `sha1(sorted peer URLs concatenated ++ cluster token [++ unix seconds])`; the time
//!   suffix is added only for members added at run time (`member add`), so that re-adding
//!   the same URL gives a fresh id.
//! * **cluster id** = the first 8 bytes, big-endian, of `sha1(id_1 ++ id_2 ++ …)` over the
//!   sorted member ids, each as 8 big-endian bytes.
//!
//! Both are printed as lower-case hex without zero padding (`cae28389985a4a1`), which is
//! what [`MemberId`]'s `Display` does. An id of 0 is never valid (raft reserves it), so a
//! derived 0 would be a hash collision nobody will see; it is still mapped to 1 to keep
//! the invariant "ids are non-zero".

use std::fmt;

use super::url::MemberUrl;

/// A member's 64-bit id (the raft node id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

/// A cluster's 64-bit id (`X-Etcd-Cluster-Id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl MemberId {
    /// Parses etcd's hex spelling (no `0x`, 1–16 hex digits).
    pub fn parse_hex(text: &str) -> Option<MemberId> {
        if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(MemberId)
    }
}

fn first_8_be(digest: [u8; 20]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes).max(1)
}

/// The id of a member with these peer URLs in the cluster named by `token`;
/// `added_at_unix` is `Some(seconds)` for a member added at run time.
pub fn member_id(peer_urls: &[MemberUrl], token: &str, added_at_unix: Option<u64>) -> MemberId {
    let mut sorted: Vec<&str> = peer_urls.iter().map(MemberUrl::as_str).collect();
    sorted.sort_unstable();
    let mut hasher = sha1_smol::Sha1::new();
    for url in sorted {
        hasher.update(url.as_bytes());
    }
    hasher.update(token.as_bytes());
    if let Some(seconds) = added_at_unix {
        hasher.update(seconds.to_string().as_bytes());
    }
    MemberId(first_8_be(hasher.digest().bytes()))
}

/// The cluster id of a member set (order does not matter).
pub fn cluster_id(members: &[MemberId]) -> ClusterId {
    let mut ids: Vec<u64> = members.iter().map(|m| m.0).collect();
    ids.sort_unstable();
    let mut hasher = sha1_smol::Sha1::new();
    for id in ids {
        hasher.update(&id.to_be_bytes());
    }
    ClusterId(first_8_be(hasher.digest().bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> MemberUrl {
        MemberUrl::parse(s).unwrap()
    }

    /// The ids etcd 3.4 printed in spec/etcd-transcript.md for the same inputs.
    #[test]
    fn matches_etcd_transcript() {
        let node1 = member_id(&[url("http://127.0.0.1:22483")], "etcd-cluster", None);
        let node2 = member_id(&[url("http://127.0.0.1:22484")], "etcd-cluster", None);
        assert_eq!(node1.to_string(), "7e4b58baca723182");
        assert_eq!(node2.to_string(), "dba59c025fa4317e");
        assert_eq!(cluster_id(&[node2, node1]).to_string(), "76309787450b79cc");
    }

    #[test]
    fn url_order_and_time_suffix() {
        let a = member_id(&[url("http://a:1"), url("http://b:2")], "t", None);
        let b = member_id(&[url("http://b:2"), url("http://a:1")], "t", None);
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(&[url("http://a:1"), url("http://b:2")], "t", Some(1))
        );
        assert_ne!(
            a,
            member_id(&[url("http://a:1"), url("http://b:2")], "u", None)
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            MemberId::parse_hex("cae28389985a4a1"),
            Some(MemberId(0xcae28389985a4a1))
        );
        assert_eq!(MemberId(0xa218f6ee6301).to_string(), "a218f6ee6301");
        for bad in ["", "0x12", "not-hex", "12345678901234567", "-1"] {
            assert_eq!(MemberId::parse_hex(bad), None, "{bad}");
        }
    }
}
