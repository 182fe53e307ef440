//! Stateless claim nonces (DESIGN "factory flow" steps 2–3; issue 12 items
//! 2, 4 and 9).
//!
//! A claim nonce carries its own proof of issue, so the provisioner keeps
//! nothing between `BeginClaim` and `CompleteClaim`:
//!
//! ```text
//! nonce = expiry_ms (8 bytes, big-endian)
//!       ‖ HMAC-SHA256(K, domain ‖ purpose ‖ rot_id ‖ order_id ‖ site ‖ caller
//!                        ‖ expiry_ms ‖ SHA-256(attestation chain ‖ transport statement))[..24]
//!       ‖ order_id (1 to 64 bytes)
//! ```
//!
//! (each text field length-prefixed, so no two inputs share an encoding).
//! `K` is the site's claim key ([`ClaimKey`], 32 random bytes kept in the
//! site's data directory and shared by every provisioner replica), so a
//! nonce outlives a restart and any replica can check it. The order id
//! travels in clear after the tag because `CompleteClaim` carries only the
//! receipt and the attestation: the tag authenticates it. The purpose is
//! `claim` (a first claim) or `presence` (a challenge to a presenter of an
//! already claimed RoT's chain, answered only by a die holding its
//! attestation key).
//!
//! Consequences. There is no shared capacity for one caller to exhaust
//! (item 4): a flood of `BeginClaim` costs the flooder its rate limit and
//! nothing else. A nonce is spent only by the durable `CLAIMED` record
//! (unique key `claim` → rot_id) or by a final refusal, never by a ledger
//! hiccup, a lost response or a restart (item 9). A nonce is bound to the
//! caller it was issued to: another station, even of the same site, cannot
//! complete it. It is valid until its expiry (`FactoryConfig::claim_ttl`).

use ring::hmac;
use sha2::{Digest, Sha256};
use trustline_proto::v1;

use crate::error::{Error, Result};

/// Length of a claim key, in bytes.
pub const CLAIM_KEY_LEN: usize = 32;
/// Length of the tag inside a nonce.
const TAG_LEN: usize = 24;
/// Longest order id (the order's token limit).
const MAX_ORDER_ID_LEN: usize = 64;
/// Bytes before the order id.
const HEADER_LEN: usize = 8 + TAG_LEN;
/// Shortest nonce: the header and a one-byte order id.
pub const MIN_NONCE_LEN: usize = HEADER_LEN + 1;
/// Longest nonce.
pub const MAX_NONCE_LEN: usize = HEADER_LEN + MAX_ORDER_ID_LEN;

const DOMAIN: &[u8] = b"trustline.claim-nonce.v1\0";
const ATTESTATION_DOMAIN: &[u8] = b"trustline.claim-attestation.v1\0";

/// The site's claim key: the HMAC key every claim nonce is made and
/// checked with. Its bytes never leave it once loaded.
#[derive(Clone)]
pub struct ClaimKey(hmac::Key);

impl std::fmt::Debug for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimKey(..)")
    }
}

impl ClaimKey {
    /// The key from its 32 secret bytes (as kept in the site's data
    /// directory).
    ///
    /// # Errors
    /// [`Error::Config`] for any other length.
    pub fn from_bytes(secret: &[u8]) -> Result<Self> {
        if secret.len() != CLAIM_KEY_LEN {
            return Err(Error::Config(format!(
                "the claim key is {} bytes, expected {CLAIM_KEY_LEN}",
                secret.len()
            )));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// 32 fresh secret bytes from the system's randomness, for a site to
    /// store as its claim key.
    ///
    /// # Errors
    /// [`Error::Config`] when the system has no randomness.
    pub fn fresh_secret() -> Result<[u8; CLAIM_KEY_LEN]> {
        let mut secret = [0u8; CLAIM_KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| Error::Config("no system randomness".into()))?;
        Ok(secret)
    }

    /// A fresh key that lives only in this process (tests, tools): claims
    /// begun under it cannot be completed after a restart.
    ///
    /// # Errors
    /// As [`ClaimKey::fresh_secret`].
    pub fn ephemeral() -> Result<Self> {
        Self::from_bytes(&Self::fresh_secret()?)
    }
}

/// What a nonce was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A first claim of a blank RoT.
    Claim,
    /// A presence challenge for an already claimed RoT.
    Presence,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Claim => b"claim",
            Purpose::Presence => b"presence",
        }
    }
}

/// Everything a nonce is bound to besides its purpose and expiry.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The RoT (from its verified attestation chain).
    pub rot_id: &'a str,
    /// The order.
    pub order_id: &'a str,
    /// The order's site.
    pub site: &'a str,
    /// The caller it is issued to (`role/site/name`).
    pub caller: &'a str,
    /// [`attestation_digest`] of the attestation presented.
    pub attestation: &'a [u8; 32],
}

/// SHA-256 over a RoT attestation's chain and transport-key statement, each
/// length-prefixed.
pub fn attestation_digest(attestation: &v1::RotAttestation) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ATTESTATION_DOMAIN);
    h.update((attestation.cert_chain.len() as u32).to_be_bytes());
    for cert in &attestation.cert_chain {
        h.update((cert.len() as u32).to_be_bytes());
        h.update(cert);
    }
    match &attestation.transport_key {
        None => h.update([0]),
        Some(s) => {
            h.update([1]);
            h.update((s.body.len() as u32).to_be_bytes());
            h.update(&s.body);
            h.update((s.signature.len() as u32).to_be_bytes());
            h.update(&s.signature);
        }
    }
    h.finalize().into()
}

/// Makes the nonce for `purpose`, `binding` and `expires_at_ms`.
///
/// # Errors
/// [`Error::Invalid`] for an order id outside 1 to 64 bytes (orders are
/// checked for that when opened, so only a corrupt order gets here).
pub fn mint(
    key: &ClaimKey,
    purpose: Purpose,
    binding: &Binding<'_>,
    expires_at_ms: i64,
) -> Result<Vec<u8>> {
    let order = binding.order_id.as_bytes();
    if order.is_empty() || order.len() > MAX_ORDER_ID_LEN {
        return Err(Error::Invalid(format!(
            "order id of {} bytes cannot be carried in a claim nonce",
            order.len()
        )));
    }
    let mut nonce = Vec::with_capacity(HEADER_LEN + order.len());
    nonce.extend_from_slice(&expires_at_ms.to_be_bytes());
    nonce.extend_from_slice(&tag(key, purpose, binding, expires_at_ms));
    nonce.extend_from_slice(order);
    Ok(nonce)
}

/// A nonce taken apart, not yet checked: [`Opened::check`] says whether
/// this provisioner issued it, and for what.
#[derive(Debug, Clone, Copy)]
pub struct Opened<'a> {
    /// When it stops being accepted, Unix ms.
    pub expires_at_ms: i64,
    /// The order it names (authenticated only once [`Opened::check`]
    /// succeeds).
    pub order_id: &'a str,
    tag: &'a [u8],
}

impl<'a> Opened<'a> {
    /// Splits a nonce into expiry, tag and order id.
    ///
    /// # Errors
    /// [`Error::NonceReplayed`] for bytes that cannot be a claim nonce.
    pub fn parse(nonce: &'a [u8]) -> Result<Self> {
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
            return Err(Error::NonceReplayed);
        }
        let (expiry, rest) = nonce.split_at(8);
        let (tag, order) = rest.split_at(TAG_LEN);
        let mut be = [0u8; 8];
        be.copy_from_slice(expiry);
        let order_id = std::str::from_utf8(order).map_err(|_| Error::NonceReplayed)?;
        Ok(Self {
            expires_at_ms: i64::from_be_bytes(be),
            order_id,
            tag,
        })
    }

    /// The purpose this provisioner issued the nonce for, with `binding`
    /// (whose `order_id` must be [`Opened::order_id`]).
    ///
    /// # Errors
    /// [`Error::NonceReplayed`] when it was not issued for this binding: a
    /// receipt replayed from elsewhere, another caller's nonce, another
    /// attestation, a forged nonce.
    pub fn check(&self, key: &ClaimKey, binding: &Binding<'_>) -> Result<Purpose> {
        if binding.order_id != self.order_id {
            return Err(Error::NonceReplayed);
        }
        [Purpose::Claim, Purpose::Presence]
            .into_iter()
            .find(|p| equal(&tag(key, *p, binding, self.expires_at_ms), self.tag))
            .ok_or(Error::NonceReplayed)
    }
}

fn tag(
    key: &ClaimKey,
    purpose: Purpose,
    binding: &Binding<'_>,
    expires_at_ms: i64,
) -> [u8; TAG_LEN] {
    let mut ctx = hmac::Context::with_key(&key.0);
    ctx.update(DOMAIN);
    for field in [
        purpose.label(),
        binding.rot_id.as_bytes(),
        binding.order_id.as_bytes(),
        binding.site.as_bytes(),
        binding.caller.as_bytes(),
    ] {
        ctx.update(&(field.len() as u32).to_be_bytes());
        ctx.update(field);
    }
    ctx.update(&expires_at_ms.to_be_bytes());
    ctx.update(binding.attestation);
    let full = ctx.sign();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full.as_ref()[..TAG_LEN]);
    out
}

/// Compares two tags in time independent of where they differ.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding<'a>(attestation: &'a [u8; 32], caller: &'a str) -> Binding<'a> {
        Binding {
            rot_id: "ab",
            order_id: "PO-1",
            site: "site-a",
            caller,
            attestation,
        }
    }

    #[test]
    fn a_nonce_checks_only_for_what_it_was_issued_for() {
        let key = ClaimKey::ephemeral().expect("key");
        let att = [7u8; 32];
        let b = binding(&att, "station/site-a/st-01");
        let nonce = mint(&key, Purpose::Claim, &b, 1_000).expect("mint");
        assert_eq!(nonce.len(), HEADER_LEN + 4);
        let opened = Opened::parse(&nonce).expect("parse");
        assert_eq!((opened.expires_at_ms, opened.order_id), (1_000, "PO-1"));
        assert_eq!(opened.check(&key, &b).expect("check"), Purpose::Claim);
        let presence = mint(&key, Purpose::Presence, &b, 1_000).expect("mint");
        assert_ne!(presence, nonce);
        assert_eq!(
            Opened::parse(&presence)
                .expect("parse")
                .check(&key, &b)
                .expect("check"),
            Purpose::Presence
        );

        // Another caller, attestation, rot, site or key: not ours.
        let other_att = [8u8; 32];
        let others = [
            binding(&att, "station/site-a/st-02"),
            binding(&other_att, "station/site-a/st-01"),
            Binding { rot_id: "cd", ..b },
            Binding {
                site: "site-b",
                ..b
            },
        ];
        for other in others {
            assert!(matches!(
                opened.check(&key, &other),
                Err(Error::NonceReplayed)
            ));
        }
        let other_key = ClaimKey::ephemeral().expect("key");
        assert!(matches!(
            opened.check(&other_key, &b),
            Err(Error::NonceReplayed)
        ));
        // The same key bytes (another replica, or after a restart) accept it.
        let secret = ClaimKey::fresh_secret().expect("secret");
        let (k1, k2) = (
            ClaimKey::from_bytes(&secret).expect("k1"),
            ClaimKey::from_bytes(&secret).expect("k2"),
        );
        let n = mint(&k1, Purpose::Claim, &b, 5).expect("mint");
        assert!(Opened::parse(&n).expect("parse").check(&k2, &b).is_ok());
    }

    #[test]
    fn edited_and_malformed_nonces_are_refused() {
        let key = ClaimKey::ephemeral().expect("key");
        let att = [7u8; 32];
        let b = binding(&att, "station/site-a/st-01");
        let nonce = mint(&key, Purpose::Claim, &b, 1_000).expect("mint");
        for i in 0..HEADER_LEN {
            let mut edited = nonce.clone();
            edited[i] ^= 1;
            let result = Opened::parse(&edited).and_then(|o| o.check(&key, &b));
            assert!(matches!(result, Err(Error::NonceReplayed)), "byte {i}");
        }
        let mut other_order = nonce.clone();
        other_order.truncate(HEADER_LEN);
        other_order.extend_from_slice(b"PO-2");
        let opened = Opened::parse(&other_order).expect("parses");
        assert!(matches!(
            opened.check(
                &key,
                &Binding {
                    order_id: "PO-2",
                    ..b
                }
            ),
            Err(Error::NonceReplayed)
        ));
        for bad in [&[][..], &[0u8; 32][..], &[0u8; MAX_NONCE_LEN + 1][..]] {
            assert!(matches!(Opened::parse(bad), Err(Error::NonceReplayed)));
        }
        assert!(ClaimKey::from_bytes(&[0u8; 16]).is_err());
        let long = "x".repeat(65);
        assert!(mint(
            &key,
            Purpose::Claim,
            &Binding {
                order_id: &long,
                ..b
            },
            1
        )
        .is_err());
    }

    #[test]
    fn the_attestation_digest_covers_chain_and_transport_statement() {
        let a = v1::RotAttestation {
            cert_chain: vec![b"ab".to_vec(), b"c".to_vec()],
            transport_key: None,
        };
        let b = v1::RotAttestation {
            cert_chain: vec![b"a".to_vec(), b"bc".to_vec()],
            transport_key: None,
        };
        let c = v1::RotAttestation {
            transport_key: Some(v1::SignedStatement::default()),
            ..a.clone()
        };
        let d = v1::RotAttestation {
            transport_key: Some(v1::SignedStatement {
                body: vec![1],
                signature: vec![],
            }),
            ..a.clone()
        };
        let digests = [&a, &b, &c, &d].map(attestation_digest);
        for i in 0..digests.len() {
            for j in i + 1..digests.len() {
                assert_ne!(digests[i], digests[j], "{i} {j}");
            }
        }
        assert_eq!(attestation_digest(&a.clone()), digests[0]);
    }
}
