//! The OEM's signing work at the hub (issue 13 item 4): voucher entries
//! signed by the OEM voucher key and sealed under the OEM seal key, and the
//! hub's CRL of retired devices signed by the OEM root — the keys `ca
//! init_oem` makes on the hub's token. [`Ca`](super::Ca) (a site's or a
//! single box's CA) signs and seals voucher entries through the same
//! functions, so the two never differ in what they produce.

use rcgen::Issuer;
use x509_parser::prelude::FromDer;

use super::crl::{crl_params, CrlRequest};
use super::files::{read_certificate, ROOT_CERT_FILE};
use super::profile::rcgen_failure;
use super::{subject_key_id, SealedEntry};
use crate::hsm::{take_signer_failure, Hsm, HsmSigner};
use crate::keys::KeyLabels;
use crate::Error;

/// The seal's additional data for entry `index` of `rot_id`'s voucher.
fn seal_aad(rot_id: &str, index: u32) -> Result<Vec<u8>, Error> {
    trustline_proto::voucher::seal::seal_aad(rot_id, index).map_err(|_| Error::InvalidRotId {
        rot_id: rot_id.chars().take(80).collect(),
    })
}

/// Signs a voucher entry payload with `voucher` (the OEM voucher key);
/// returns the tagged COSE_Sign1 (2.4.14.7).
pub(crate) fn sign_entry(voucher: &HsmSigner, entry_payload: &[u8]) -> Result<Vec<u8>, Error> {
    take_signer_failure();
    trustline_proto::voucher::sign_entry(entry_payload, voucher).map_err(|e| match e {
        trustline_proto::Error::Signer(reason) => take_signer_failure().unwrap_or(Error::Pkcs11 {
            operation: "C_Sign",
            reason,
        }),
        other => Error::VoucherEntry(other.to_string()),
    })
}

/// Signs an FDO 1.1 `OVEntryPayload` with `voucher` (the OEM voucher key);
/// returns the tagged COSE_Sign1 of the FDO entry (issue 17). A Trustline
/// entry payload is refused: the two formats never share a signature.
pub(crate) fn sign_fdo_entry(voucher: &HsmSigner, entry_payload: &[u8]) -> Result<Vec<u8>, Error> {
    take_signer_failure();
    trustline_proto::fdo::sign_entry(entry_payload, voucher).map_err(|e| match e {
        trustline_proto::Error::Signer(reason) => take_signer_failure().unwrap_or(Error::Pkcs11 {
            operation: "C_Sign",
            reason,
        }),
        other => Error::VoucherEntry(other.to_string()),
    })
}

/// Signs as [`sign_entry`] and seals the entry for entry `index` of
/// `rot_id`'s voucher under the seal key `seal_label` (AES-256-GCM in the
/// HSM, a fresh random IV; issue 12 item 10).
pub(crate) fn sign_and_seal(
    hsm: &Hsm,
    voucher: &HsmSigner,
    seal_label: &str,
    entry_payload: &[u8],
    rot_id: &str,
    index: u32,
) -> Result<SealedEntry, Error> {
    let aad = seal_aad(rot_id, index)?;
    let cose_sign1 = sign_entry(voucher, entry_payload)?;
    let iv: [u8; crate::hsm::SEAL_IV_LEN] = rand::random();
    let body = hsm.seal(seal_label, &iv, &aad, &cose_sign1)?;
    Ok(SealedEntry {
        sealed: trustline_proto::voucher::seal::frame_sealed(&iv, &body),
        cose_sign1,
    })
}

/// Opens a seal made by [`sign_and_seal`] for the same device and index.
pub(crate) fn unseal(
    hsm: &Hsm,
    seal_label: &str,
    rot_id: &str,
    index: u32,
    sealed: &[u8],
) -> Result<Vec<u8>, Error> {
    let aad = seal_aad(rot_id, index)?;
    let (iv, body) =
        trustline_proto::voucher::seal::split_sealed(sealed).map_err(|e| Error::SealBroken {
            reason: e.to_string(),
        })?;
    hsm.unseal(seal_label, &iv, &aad, body)
}

/// The OEM's keys on the hub's token, for the ownership service at the hub.
pub struct OemSigner {
    hsm: Hsm,
    labels: KeyLabels,
    voucher: HsmSigner,
    root: Option<HsmSigner>,
    root_der: Vec<u8>,
}

impl std::fmt::Debug for OemSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OemSigner")
            .field("hsm", &self.hsm)
            .field("root_online", &self.root.is_some())
            .finish_non_exhaustive()
    }
}

impl OemSigner {
    /// Opens the OEM voucher and seal keys on `hsm` and the root
    /// certificate in `ca_dir` (`oem-root.pem`); the root key too when the
    /// token holds it (the demo's hub; in production it may stay offline,
    /// and then no CRL is signed here).
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] without the voucher or seal key;
    /// [`Error::NotInitialized`] without the root certificate;
    /// [`Error::CertificateKeyMismatch`] when the root key on the token is
    /// not the certificate's; HSM errors.
    pub fn open(hsm: Hsm, ca_dir: &std::path::Path, labels: &KeyLabels) -> Result<Self, Error> {
        let voucher = hsm.signer(&labels.voucher)?;
        if !hsm.secret_key_exists(&labels.seal)? {
            return Err(Error::KeyNotFound {
                label: labels.seal.clone(),
                class: "secret",
                token: hsm.token_label().to_owned(),
            });
        }
        let root_der = read_certificate(&ca_dir.join(ROOT_CERT_FILE))?;
        let root = if hsm.key_exists(&labels.root)? {
            let signer = hsm.signer(&labels.root)?;
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&root_der)
                .map_err(|e| Error::NotInitialized {
                    reason: format!("the OEM root certificate does not parse: {e}"),
                })?;
            if cert.public_key().raw != signer.public_key_spki() {
                return Err(Error::CertificateKeyMismatch {
                    role: "OEM root",
                    label: labels.root.clone(),
                });
            }
            Some(signer)
        } else {
            None
        };
        Ok(Self {
            hsm,
            labels: labels.clone(),
            voucher,
            root,
            root_der,
        })
    }

    /// The OEM root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The OEM voucher public key (SubjectPublicKeyInfo DER).
    pub fn voucher_public_key_der(&self) -> &[u8] {
        self.voucher.public_key_spki()
    }

    /// Signs a voucher entry (2.4.14.7), as [`super::Ca::sign_voucher_entry`].
    ///
    /// # Errors
    /// As [`super::Ca::sign_voucher_entry`].
    pub fn sign_voucher_entry(&self, entry_payload: &[u8]) -> Result<Vec<u8>, Error> {
        sign_entry(&self.voucher, entry_payload)
    }

    /// Signs an FDO voucher entry (issue 17), as
    /// [`super::Ca::sign_fdo_voucher_entry`].
    ///
    /// # Errors
    /// As [`super::Ca::sign_fdo_voucher_entry`].
    pub fn sign_fdo_voucher_entry(&self, entry_payload: &[u8]) -> Result<Vec<u8>, Error> {
        sign_fdo_entry(&self.voucher, entry_payload)
    }

    /// Signs and seals a voucher entry, as
    /// [`super::Ca::sign_and_seal_voucher_entry`].
    ///
    /// # Errors
    /// As [`super::Ca::sign_and_seal_voucher_entry`].
    pub fn sign_and_seal_voucher_entry(
        &self,
        entry_payload: &[u8],
        rot_id: &str,
        index: u32,
    ) -> Result<SealedEntry, Error> {
        sign_and_seal(
            &self.hsm,
            &self.voucher,
            &self.labels.seal,
            entry_payload,
            rot_id,
            index,
        )
    }

    /// Opens a sealed voucher entry, as [`super::Ca::unseal_voucher_entry`].
    ///
    /// # Errors
    /// As [`super::Ca::unseal_voucher_entry`].
    pub fn unseal_voucher_entry(
        &self,
        rot_id: &str,
        index: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>, Error> {
        unseal(&self.hsm, &self.labels.seal, rot_id, index, sealed)
    }

    /// Signs the hub's CRL of retired devices with the OEM root key
    /// (2.4.14.24): the root is the one issuer every site's devices chain
    /// to, so one list covers retirements recorded at the hub for devices
    /// of every site; a verifier checks it with `openssl crl -CAfile
    /// oem-root.pem`.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] when the root key is offline (not on this
    /// token); then as [`super::Ca::sign_crl`].
    pub fn sign_crl(&self, request: &CrlRequest) -> Result<Vec<u8>, Error> {
        let root = self.root.as_ref().ok_or_else(|| Error::KeyNotFound {
            label: self.labels.root.clone(),
            class: "private",
            token: self.hsm.token_label().to_owned(),
        })?;
        take_signer_failure();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&self.root_der)
            .map_err(|e| Error::NotInitialized {
                reason: format!("the OEM root certificate does not parse: {e}"),
            })?;
        let key_id = subject_key_id(&cert).ok_or_else(|| Error::NotInitialized {
            reason: "the OEM root certificate has no subject key identifier".to_owned(),
        })?;
        let params = crl_params(request, &key_id)?;
        let issuer = Issuer::from_ca_cert_der(&self.root_der.as_slice().into(), root)
            .map_err(|e| rcgen_failure("the CRL issuer", e))?;
        let crl = params
            .signed_by(&issuer)
            .map_err(|e| rcgen_failure("the CRL", e))?;
        Ok(crl.der().to_vec())
    }
}
