//! Compact 8-byte fingerprints of serials, RoTs and device keys, and a hash
//! map keyed by them.
//!
//! Why fingerprints: checking that a million serials, RoTs and keys are each
//! certified once needs one set per namespace. Holding the values
//! themselves costs about 100 bytes per device per namespace; an 8-byte
//! fingerprint (the first 8 bytes of SHA-256 over namespace and value) costs
//! 8. Two different values may share a fingerprint — about n²/2⁶⁵, 3·10⁻⁸
//! for a million — so a fingerprint match is only ever a *suspect*: the
//! audit re-reads the ledger and compares the exact values of the suspects
//! before it reports anything ([`super::analyze`]).
//!
//! The map hashes with the fingerprint itself (it already is a uniform
//! hash), which is several times faster than SipHash over a million keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use sha2::{Digest, Sha256};

/// An 8-byte fingerprint.
pub(crate) type Fp = u64;

/// The fingerprint of `value` in `namespace`.
pub(crate) fn fingerprint(namespace: &str, value: &[u8]) -> Fp {
    let mut h = Sha256::new();
    h.update([namespace.len() as u8]);
    h.update(namespace.as_bytes());
    h.update(value);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Fingerprint of a serial.
pub(crate) fn serial_fp(serial: &str) -> Fp {
    fingerprint("serial", serial.as_bytes())
}

/// Fingerprint of a RoT.
pub(crate) fn rot_fp(rot_id: &str) -> Fp {
    rot_key(rot_id).0
}

/// Fingerprint of a RoT and 32 further bits of the same hash, to tell
/// apart two RoTs whose fingerprints collide.
pub(crate) fn rot_key(rot_id: &str) -> (Fp, u32) {
    let digest = Sha256::new()
        .chain_update([3u8])
        .chain_update(b"rot")
        .chain_update(rot_id.as_bytes())
        .finalize();
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&digest[..8]);
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&digest[8..12]);
    (u64::from_be_bytes(fp), u32::from_be_bytes(tag))
}

/// Fingerprint of a device key (its SubjectPublicKeyInfo DER).
pub(crate) fn key_fp(spki: &[u8]) -> Fp {
    fingerprint("device-key", spki)
}

/// A hasher that passes a `u64` fingerprint through unchanged.
#[derive(Default, Clone, Copy)]
pub(crate) struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u64; fold them in so the map
        // still works (never used by this module's callers).
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by fingerprints.
pub(crate) type FpMap<V> = HashMap<Fp, V, BuildHasherDefault<FpHasher>>;

/// A set of fingerprints.
pub(crate) type FpSet = std::collections::HashSet<Fp, BuildHasherDefault<FpHasher>>;

/// The fingerprints that occur more than once in `fps` (sorts it).
pub(crate) fn repeated(fps: &mut [Fp]) -> FpSet {
    fps.sort_unstable();
    let mut out = FpSet::default();
    for pair in fps.windows(2) {
        if pair[0] == pair[1] {
            out.insert(pair[0]);
        }
    }
    out
}
