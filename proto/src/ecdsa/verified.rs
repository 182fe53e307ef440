//! The signatures this process has already verified, so that a check made
//! twice in one process costs one ECDSA verification (issue 16.3).
//!
//! Where it pays: a site runs the provisioner and its CA in one process. The
//! provisioner verifies a device's proof of possession (or CSR) before it
//! looks anything up (issue 12), and the CA verifies the same bytes again
//! before it signs, as it must when it runs apart. In one process the second
//! verification repeats the first on identical inputs: about 5 % of the
//! server's CPU per device in `trustline bench line`.
//!
//! Why it is sound. ECDSA verification is a pure function of (algorithm,
//! public point, message, signature). A slot holds the SHA-256 of all four,
//! written only after ring accepted them; a lookup recomputes that hash from
//! the inputs presented and compares it in full. So a hit means these exact
//! inputs verified before, and a caller can add nothing without a signature
//! that verifies. What a hostile caller can do is evict (the next check then
//! costs one verification again). Failures are never kept: a refusal is
//! always recomputed, so it keeps its precise error.
//!
//! Bounded: a fixed table of [`SLOTS`] hashes, one lock per slot,
//! a new entry replacing whatever held its slot (about 160 KiB).

use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Slots in the table; a power of two.
pub(super) const SLOTS: usize = 4096;

type Slot = Mutex<Option<[u8; 32]>>;

/// The table of verified inputs' hashes.
pub(super) struct Table([Slot; SLOTS]);

/// This process's table.
pub(super) static TABLE: Table = Table::new();

/// Which ring algorithm the inputs were checked with: a signature in one
/// encoding is never taken for the other.
#[derive(Clone, Copy)]
pub(super) enum Algorithm {
    /// `ECDSA_P256_SHA256_FIXED` (r ‖ s, after the strict checks).
    Fixed = 1,
    /// `ECDSA_P256_SHA256_ASN1` (X.509 DER).
    Asn1 = 2,
}

impl Table {
    const fn new() -> Self {
        Self([const { Mutex::new(None) }; SLOTS])
    }

    /// Runs `verify` unless these exact inputs verified before; remembers a
    /// success.
    pub(super) fn verified_once(
        &self,
        algorithm: Algorithm,
        point: &[u8],
        message: &[u8],
        signature: &[u8],
        verify: impl FnOnce() -> Result<(), crate::Error>,
    ) -> Result<(), crate::Error> {
        let hash = inputs_hash(algorithm, point, message, signature);
        let slot = &self.0[slot_of(&hash)];
        if *lock(slot) == Some(hash) {
            return Ok(());
        }
        verify()?;
        *lock(slot) = Some(hash);
        Ok(())
    }

    /// Whether these inputs are remembered as verified.
    #[cfg(test)]
    pub(super) fn holds(
        &self,
        algorithm: Algorithm,
        point: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let hash = inputs_hash(algorithm, point, message, signature);
        *lock(&self.0[slot_of(&hash)]) == Some(hash)
    }
}

fn inputs_hash(algorithm: Algorithm, point: &[u8], message: &[u8], signature: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"trustline verified ecdsa-p256-sha256 v1\0");
    h.update([algorithm as u8]);
    for part in [point, message, signature] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn slot_of(hash: &[u8; 32]) -> usize {
    usize::from(u16::from_be_bytes([hash[0], hash[1]])) % SLOTS
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<[u8; 32]>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn counting(calls: &Cell<u32>, result: Result<(), crate::Error>) -> Result<(), crate::Error> {
        calls.set(calls.get() + 1);
        result
    }

    #[test]
    fn a_success_is_verified_once_and_a_failure_every_time() {
        let table = Table::new();
        let calls = Cell::new(0);
        let message = b"a success is verified once".as_slice();
        for _ in 0..3 {
            table
                .verified_once(Algorithm::Fixed, b"point", message, b"sig", || {
                    counting(&calls, Ok(()))
                })
                .expect("verifies");
        }
        assert_eq!(
            calls.get(),
            1,
            "the second and third checks were remembered"
        );

        let calls = Cell::new(0);
        for _ in 0..3 {
            let refused =
                table.verified_once(Algorithm::Fixed, b"point", b"refused", b"sig", || {
                    counting(&calls, Err(crate::Error::BadSignature("signature")))
                });
            assert!(matches!(refused, Err(crate::Error::BadSignature(_))));
        }
        assert_eq!(calls.get(), 3, "a refusal is never remembered");
    }

    #[test]
    fn a_full_table_replaces_and_stays_bounded() {
        let table = Table::new();
        for i in 0..(4 * SLOTS as u32) {
            table
                .verified_once(Algorithm::Fixed, b"point", &i.to_be_bytes(), b"sig", || {
                    Ok(())
                })
                .expect("verifies");
        }
        let calls = Cell::new(0);
        for i in 0..(4 * SLOTS as u32) {
            let _ =
                table.verified_once(Algorithm::Fixed, b"point", &i.to_be_bytes(), b"sig", || {
                    counting(&calls, Ok(()))
                });
        }
        // At most one entry per slot is remembered.
        assert!(
            calls.get() >= 3 * SLOTS as u32,
            "{} re-verified",
            calls.get()
        );
    }

    #[test]
    fn every_input_and_the_algorithm_are_part_of_what_is_remembered() {
        let table = Table::new();
        let message = b"every input counts".as_slice();
        table
            .verified_once(Algorithm::Fixed, b"point", message, b"sig", || Ok(()))
            .expect("verifies");
        for (algorithm, point, message, signature) in [
            (
                Algorithm::Asn1,
                b"point".as_slice(),
                message,
                b"sig".as_slice(),
            ),
            (Algorithm::Fixed, b"other", message, b"sig"),
            (Algorithm::Fixed, b"point", b"every input count", b"sig"),
            (Algorithm::Fixed, b"point", message, b"sih"),
            // Moving bytes between fields is another input.
            (Algorithm::Fixed, b"poin", b"tevery input counts", b"sig"),
        ] {
            let called = Cell::new(false);
            let _ = table.verified_once(algorithm, point, message, signature, || {
                called.set(true);
                Err(crate::Error::BadSignature("signature"))
            });
            assert!(called.get(), "a changed input must be verified again");
        }
    }
}
