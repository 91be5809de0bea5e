//! Content digests: components are named by the SHA-256 of their bytes.
//!
//! A digest is written `sha256:` followed by 64 lower-case hex digits. [`Digest::of`] (or,
//! for bytes that stream, [`Digest::hasher`]) is the one place bytes are hashed into a
//! digest; the edges that read the bytes call it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(bytes).into())
    }

    /// A digest computed piece by piece, for bytes that arrive or are read in chunks.
    pub fn hasher() -> Hasher {
        use sha2::Digest as _;
        Hasher(sha2::Sha256::new())
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The 64 hex digits without the `sha256:` prefix, as used in file names.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// The first 12 hex digits, for people.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

/// [`Digest::of`] in pieces: `update` with each piece in order, then `finish`.
#[derive(Clone)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    pub fn update(&mut self, piece: &[u8]) {
        use sha2::Digest as _;
        self.0.update(piece);
    }

    pub fn finish(self) -> Digest {
        use sha2::Digest as _;
        Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a digest: expected sha256: followed by 64 hex digits")]
pub struct DigestError(String);

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DigestError(s.to_string());
        let hex = s.strip_prefix("sha256:").ok_or_else(err)?;
        if hex.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_of_the_bytes() {
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_digest_in_pieces_is_the_digest_of_the_whole() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut h = Digest::hasher();
        for piece in bytes.chunks(777) {
            h.update(piece);
        }
        assert_eq!(h.finish(), Digest::of(&bytes));
        assert_ne!(Digest::hasher().finish(), Digest::of(&bytes));
    }

    #[test]
    fn digests_round_trip_and_reject_bad_text() {
        let d = Digest::from_bytes([0xab; 32]);
        let s = d.to_string();
        assert!(s.starts_with("sha256:abab"));
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert_eq!(d.short().len(), 12);
        for bad in [
            "abab",
            "sha256:ab",
            "md5:abab",
            &s.replace("sha256:ab", "sha256:zz"),
            &s.to_uppercase().replace("SHA256", "sha256"),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }
}
