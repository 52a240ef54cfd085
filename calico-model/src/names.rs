//! Names: what Calico 0.22 accepts as a profile, tag, host or interface name, and how
//! felix shortens long ids into iptables chain and ipset names.
//!
//! * Profile ids and tags: `^[a-zA-Z0-9_.-]+$` (calicoctl's message says "< 40 characters"
//!   but it never enforced a length; neither do we, because libnetwork profiles are 64-hex
//!   network ids).
//! * Interface names (the host side of a workload veth): `^[a-zA-Z0-9_-]{1,15}$` (the
//!   kernel's `IFNAMSIZ` is 16 including the NUL).
//! * Host names: non-empty, at most 253 bytes, no `/` (they are one etcd key segment) and
//!   no whitespace or control characters.
//! * Orchestrator, workload and endpoint ids: non-empty etcd key segments (no `/`).
//!
//! [`uniquely_shorten`] is felix's rule for fitting ids into chain/ipset names: an id of at
//! most `length` bytes is used as is; a longer one becomes `_` followed by the first
//! `length - 1` hex digits of SHA-256 of `"<length> " + id`. The SHA-256 here is a small,
//! test-vector-checked implementation (names only; nothing security-relevant rides on it).

use crate::error::{Error, Result};

/// Checks a profile id or tag: `^[a-zA-Z0-9_.-]+$`.
pub fn validate_profile_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(what, name, "must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(Error::invalid(
            what,
            name,
            format!("character {c:?} not allowed: use letters, digits, '_', '.' and '-'"),
        ));
    }
    Ok(())
}

/// Checks a host-side interface name: `^[a-zA-Z0-9_-]{1,15}$`.
pub fn validate_interface_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        return Err(Error::invalid(
            "interface name",
            name,
            "must be 1 to 15 characters",
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(Error::invalid(
            "interface name",
            name,
            format!("character {c:?} not allowed: use letters, digits, '_' and '-'"),
        ));
    }
    Ok(())
}

/// Checks one etcd key segment used as an id (host, orchestrator, workload, endpoint).
pub fn validate_key_segment(what: &str, segment: &str) -> Result<()> {
    if segment.is_empty() {
        return Err(Error::invalid(what, segment, "must not be empty"));
    }
    if segment.len() > 253 {
        return Err(Error::invalid(what, segment, "longer than 253 bytes"));
    }
    if segment == "." || segment == ".." {
        return Err(Error::invalid(
            what,
            segment,
            "'.' and '..' are not key segments",
        ));
    }
    if let Some(c) = segment
        .chars()
        .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            what,
            segment,
            format!("character {c:?} not allowed in a key segment"),
        ));
    }
    Ok(())
}

/// Felix's `uniquely_shorten`: `id` itself when it fits in `length` bytes, else `_` and
/// the first `length - 1` hex digits of SHA-256(`"<length> " + id`).
pub fn uniquely_shorten(id: &str, length: usize) -> String {
    if id.len() <= length {
        return id.to_string();
    }
    let mut input = format!("{length} ").into_bytes();
    input.extend_from_slice(id.as_bytes());
    let hex = to_hex(&sha256(&input));
    let keep = length.saturating_sub(1).min(hex.len());
    format!("_{}", hex.get(..keep).unwrap_or(&hex))
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// SHA-256 (FIPS 180-4) of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (word, bytes) in w.iter_mut().zip(chunk.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for t in 16..64 {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16]
                .wrapping_add(s0)
                .wrapping_add(w[t - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for (k, wt) in K.iter().zip(w.iter()) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(*wt);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (state, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(v);
        }
    }
    let mut out = [0u8; 32];
    for (dst, word) in out.chunks_exact_mut(4).zip(h) {
        dst.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_fips_vectors() {
        assert_eq!(
            to_hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            to_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            to_hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // Exactly one block of padding boundary (55, 56 and 64 byte inputs).
        assert_eq!(
            to_hex(&sha256(&[b'a'; 64])),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
        );
    }

    #[test]
    fn shorten_keeps_short_ids_and_hashes_long_ones() {
        assert_eq!(uniquely_shorten("myprofile1", 16), "myprofile1");
        assert_eq!(uniquely_shorten("exactly16chars__", 16), "exactly16chars__");
        let long = uniquely_shorten("a-profile-name-longer-than-16", 16);
        assert_eq!(long.len(), 16);
        assert!(long.starts_with('_'));
        // "_" + first 15 hex of sha256("16 a-profile-name-longer-than-16")
        let expect = to_hex(&sha256(b"16 a-profile-name-longer-than-16"));
        assert_eq!(&long[1..], &expect[..15]);
        assert_ne!(long, uniquely_shorten("a-profile-name-longer-than-17", 16));
    }

    #[test]
    fn profile_names() {
        assert!(validate_profile_name("profile", "myprofile1").is_ok());
        assert!(validate_profile_name("profile", "a.b_c-D9").is_ok());
        assert!(validate_profile_name("profile", "").is_err());
        let e = validate_profile_name("profile", "bad name").unwrap_err();
        assert!(e.to_string().contains("' '"), "{e}");
        assert!(validate_profile_name("tag", "x/y").is_err());
    }

    #[test]
    fn interface_names() {
        assert!(validate_interface_name("cali1e5a4c3f0b8").is_ok());
        assert!(validate_interface_name("cali1e5a4c3f0b89").is_err());
        assert!(validate_interface_name("").is_err());
        assert!(validate_interface_name("eth0.1").is_err());
    }

    #[test]
    fn key_segments() {
        assert!(validate_key_segment("host", "dockera").is_ok());
        assert!(validate_key_segment("host", "a/b").is_err());
        assert!(validate_key_segment("host", "").is_err());
        assert!(validate_key_segment("host", "..").is_err());
        assert!(validate_key_segment("host", "a b").is_err());
    }
}
