//! The CRL of retired devices' certificates (2.4.14.24), kept current from
//! the ledger.
//!
//! Every `RETIRED` entry holds the unique key `revocation` → *k* (decimal)
//! for the *k*-th retirement overall and counts towards the quota counter
//! `revocations`, both in the same atomic append, so the counter always
//! equals the number of revocation keys. The CRL lists, for k in
//! 0..counter, the certificate serial its entry names, revoked at the
//! entry's time — exactly the retired devices, rebuilt from the ledger alone
//! after any restart and whichever provisioner recorded them.
//!
//! The CA signs it with the site intermediate key in the HSM (the issuer of
//! every device certificate), so `openssl crl -verify` accepts it against
//! the CA chain. The CRL number is the Unix time of its thisUpdate in
//! milliseconds, bumped past the previous number when two fall in one
//! millisecond: monotonic across restarts without storing anything. A CRL is
//! re-signed when the counter has grown or half of its validity has passed.

use std::time::Duration;

use prost::Message;
use tokio::sync::Mutex;
use trustline_proto::v1;
use trustline_proto::v1::EventKind;

use backends::keys::{self, unique};
use backends::{now_ms, CrlApi, LedgerApi};

use crate::error::{Error, Result};
use crate::state::{lookup, read_entry};

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Its serial number (big-endian).
    pub serial: Vec<u8>,
    /// When it was revoked (the `RETIRED` entry's time), Unix ms.
    pub revoked_at_ms: i64,
    /// The `RETIRED` entry.
    pub seq: u64,
}

#[derive(Debug, Default)]
struct CrlState {
    revoked: Vec<Revoked>,
    crl: Option<Vec<u8>>,
    this_update_ms: i64,
    number: u64,
}

/// The current CRL and the revocations it lists.
pub struct Revocations {
    signer: std::sync::Arc<dyn CrlApi>,
    validity: Duration,
    // A tokio Mutex: held across the ledger reads and the CA signature, so
    // that concurrent requests wait for one re-signing instead of each
    // asking the HSM.
    state: Mutex<CrlState>,
}

impl Revocations {
    /// Revocations signed by `signer`, each CRL valid for `validity`.
    pub fn new(signer: std::sync::Arc<dyn CrlApi>, validity: Duration) -> Self {
        Self {
            signer,
            validity: validity.max(Duration::from_secs(2)),
            state: Mutex::new(CrlState::default()),
        }
    }

    /// The current CRL, DER: re-read from the ledger and re-signed when
    /// needed (see the module doc).
    ///
    /// # Errors
    /// [`Error::Backend`] when the ledger or the CA fails;
    /// [`Error::CorruptEntry`] when a revocation key does not lead to a
    /// `RETIRED` entry naming a serial.
    pub async fn current(&self, ledger: &dyn LedgerApi) -> Result<Vec<u8>> {
        let count = ledger
            .get_quota(keys::REVOCATIONS.to_owned())
            .await
            .map_err(Error::ledger)?;
        let mut state = self.state.lock().await;
        let known = state.revoked.len() as u64;
        for k in known..count {
            state.revoked.push(read_revocation(ledger, k).await?);
        }
        let validity_ms = i64::try_from(self.validity.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let stale = now.saturating_sub(state.this_update_ms) >= validity_ms / 2;
        if let Some(crl) = &state.crl {
            if count == known && !stale {
                return Ok(crl.clone());
            }
        }
        let number = u64::try_from(now)
            .unwrap_or(0)
            .max(state.number.saturating_add(1));
        let request = v1::SignCrlRequest {
            revoked: state
                .revoked
                .iter()
                .map(|r| v1::RevokedCertificate {
                    serial: r.serial.clone(),
                    revoked_at_ms: r.revoked_at_ms,
                })
                .collect(),
            crl_number: number,
            this_update_ms: now,
            next_update_ms: now.saturating_add(validity_ms),
        };
        let crl = self.signer.sign_crl(request).await.map_err(Error::ca)?;
        state.crl = Some(crl.clone());
        state.this_update_ms = now;
        state.number = number;
        Ok(crl)
    }

    /// The revocations listed by the latest CRL (after [`Revocations::current`]).
    pub async fn listed(&self) -> Vec<Revoked> {
        self.state.lock().await.revoked.clone()
    }
}

/// The `k`-th revocation, from its `RETIRED` entry.
async fn read_revocation(ledger: &dyn LedgerApi, k: u64) -> Result<Revoked> {
    let key = unique(keys::REVOCATION, k.to_string().into_bytes());
    let Some(seq) = lookup(ledger, key).await? else {
        return Err(Error::Backend {
            service: "ledger",
            status: Box::new(tonic::Status::internal(format!(
                "the revocations counter passes {k} but no entry holds revocation {k}"
            ))),
        });
    };
    let entry = read_entry(ledger, seq).await?;
    let corrupt = |reason: &str| Error::CorruptEntry {
        seq,
        reason: reason.to_owned(),
    };
    if entry.kind != EventKind::Retired as i32 {
        return Err(corrupt(
            "a revocation key is held by an entry that is not RETIRED",
        ));
    }
    let payload = v1::LifecyclePayload::decode(entry.payload.as_slice())
        .map_err(|e| corrupt(&e.to_string()))?;
    let serial = hex::decode(&payload.revoked_certificate_serial)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 20)
        .ok_or_else(|| corrupt("a RETIRED entry names no valid certificate serial"))?;
    Ok(Revoked {
        serial,
        revoked_at_ms: entry.time_ms,
        seq,
    })
}
