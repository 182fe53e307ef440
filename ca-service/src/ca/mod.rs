//! The certificate authority: `ca init`, device certificate issuance, CRLs
//! and site intermediate rotation, all signed inside the HSM through rcgen.
//!
//! Map:
//! - `profile.rs`: names, validity, serials and extensions of every
//!   certificate;
//! - `init.rs`: [`init`], the CA's keys and certificates, made once;
//! - `files.rs`: the CA directory and the archive of intermediate
//!   generations ([`intermediates`]);
//! - `crl.rs`: [`Ca::sign_crl`], [`Ca::sign_crl_for_generation`];
//! - `rotation.rs`: a new site intermediate under the root — in one call
//!   when the root is on the same token ([`rotate_intermediate`]), or as a
//!   request on the site token ([`request_intermediate`]), signed where the
//!   root is ([`sign_intermediate_request`]) and installed at the site
//!   ([`install_intermediate`]);
//! - `enrol.rs`: a site's first intermediate, requested from the OEM hub
//!   ([`request_first_intermediate`]);
//! - `oem.rs`: the OEM's voucher, seal and root keys at the hub
//!   ([`OemSigner`]), and the voucher signing and sealing [`Ca`] shares;
//! - this file: the open [`Ca`] and issuance.
//!
//! Issuance is built for throughput: the issuer (name, key identifier, key
//! usages, HSM key handle) is prepared once at [`Ca::open`], so that issuing
//! one certificate costs one HSM signature plus a few microseconds of DER.

mod crl;
mod enrol;
mod files;
mod init;
mod oem;
mod profile;
mod rotation;

use std::path::{Path, PathBuf};

use rcgen::Issuer;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

pub use crl::{CrlRequest, RevokedSerial, MAX_CRL_ENTRIES};
pub use enrol::request_first_intermediate;
pub use files::{
    intermediate_path, intermediates, request_path, write_atomically, IntermediateRecord,
    INTERMEDIATES_DIR, INTERMEDIATE_CERT_FILE, ORDER_KEY_FILE, ROOT_CERT_FILE, VOUCHER_KEY_FILE,
};
pub use init::{init, init_oem, InitOptions, InitReport};
pub use oem::OemSigner;
pub use profile::{idevid_not_after, ROT_URI_PREFIX};
pub use rotation::{
    install_intermediate, request_intermediate, rotate_intermediate, sign_intermediate_request,
    IntermediateRequest, Rotation,
};

use crate::hsm::{take_signer_failure, Hsm, HsmSigner, WrappedDeviceKey};
use crate::keys::KeyLabels;
use crate::request::VerifiedRequest;
use crate::Error;
use files::{active_generation, read_certificate, read_pem};
use profile::{device_params, random_serial, rcgen_failure, SubjectPoint};

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub certificate: Vec<u8>,
    /// Its serial number (16 bytes, big-endian, first byte non-zero).
    pub serial: Vec<u8>,
}

/// The open CA: the active intermediate's issuer, ready to sign.
pub struct Ca {
    hsm: Hsm,
    issuer: Issuer<'static, HsmSigner>,
    intermediate_key_id: Vec<u8>,
    generation: u32,
    ca_dir: PathBuf,
    labels: KeyLabels,
    organization: String,
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    /// The OEM voucher key, when this token holds it (the single-box
    /// layout); a site's token does not (issue 13).
    voucher: Option<HsmSigner>,
    voucher_public_key: Vec<u8>,
}

/// A voucher entry the OEM voucher key signed, with its sealed copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    /// The tagged COSE_Sign1 entry.
    pub cose_sign1: Vec<u8>,
    /// The entry sealed under the OEM seal key
    /// (`trustline_proto::voucher::seal` format).
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("organization", &self.organization)
            .field("generation", &self.generation)
            .field("hsm", &self.hsm)
            .finish_non_exhaustive()
    }
}

/// The subject key identifier of a CA certificate.
pub(crate) fn subject_key_id(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

impl Ca {
    /// Opens the CA in `ca_dir` with its keys on `hsm`: finds the active
    /// intermediate's generation, checks that its certificate matches that
    /// generation's key in the HSM and is signed by the root certificate,
    /// and prepares the issuer. The root key itself need not be on this HSM
    /// (it is offline or at the hub in production), nor the OEM voucher key:
    /// without it the voucher public key comes from `<ca>/voucher-key.pub.pem`
    /// and [`Ca::sign_voucher_entry`] refuses (the site layout, issue 13). A
    /// CA that rotated its intermediate is opened again to sign with the new
    /// one.
    ///
    /// # Errors
    /// [`Error::NotInitialized`] when the certificates are missing,
    /// [`Error::CertificateKeyMismatch`], [`Error::KeyNotFound`] and other
    /// HSM errors.
    pub fn open(hsm: Hsm, ca_dir: &Path, labels: &KeyLabels) -> Result<Self, Error> {
        let root_der = read_certificate(&ca_dir.join(ROOT_CERT_FILE))?;
        let intermediate_der = read_certificate(&ca_dir.join(INTERMEDIATE_CERT_FILE))?;
        let generation = active_generation(ca_dir, &intermediate_der)?;
        let label = labels.intermediate_label(generation);
        let signer = hsm.signer(&label)?;
        let voucher = if hsm.key_exists(&labels.voucher)? {
            Some(hsm.signer(&labels.voucher)?)
        } else {
            None
        };
        let voucher_public_key = match &voucher {
            Some(v) => v.public_key_spki().to_vec(),
            None => read_pem(&ca_dir.join(VOUCHER_KEY_FILE), "PUBLIC KEY")?,
        };
        // CAs initialised before the seal key existed get it on first open
        // (issue 12 item 10); `ca init` makes it with the other keys. A site
        // CA without the OEM voucher key seals nothing and gets none.
        if voucher.is_some() && !hsm.secret_key_exists(&labels.seal)? {
            hsm.generate_seal_key(&labels.seal)?;
            tracing::info!(label = %labels.seal, "created the OEM seal key of an existing CA");
        }

        let bad = |file: &str, e: String| Error::NotInitialized {
            reason: format!("{} does not parse: {e}", ca_dir.join(file).display()),
        };
        let (_, root) = x509_parser::certificate::X509Certificate::from_der(&root_der)
            .map_err(|e| bad(ROOT_CERT_FILE, e.to_string()))?;
        let (_, int) = x509_parser::certificate::X509Certificate::from_der(&intermediate_der)
            .map_err(|e| bad(INTERMEDIATE_CERT_FILE, e.to_string()))?;
        if int.public_key().raw != signer.public_key_spki() {
            return Err(Error::CertificateKeyMismatch {
                role: "site intermediate",
                label,
            });
        }
        // An X.509 signature, possibly by an offline root's own tooling:
        // high-S is acceptable here (the bytes identify nothing).
        trustline_proto::ecdsa::verify_x509(
            root.public_key().raw,
            int.tbs_certificate.as_ref(),
            &int.signature_value.data,
        )
        .map_err(|_| Error::CertificateKeyMismatch {
            role: "OEM root",
            label: labels.root.clone(),
        })?;
        let intermediate_key_id = subject_key_id(&int).ok_or_else(|| {
            bad(
                INTERMEDIATE_CERT_FILE,
                "no subject key identifier".to_owned(),
            )
        })?;
        let organization = int
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let issuer = Issuer::from_ca_cert_der(&intermediate_der.as_slice().into(), signer)
            .map_err(|e| bad(INTERMEDIATE_CERT_FILE, e.to_string()))?;
        Ok(Self {
            hsm,
            issuer,
            intermediate_key_id,
            generation,
            ca_dir: ca_dir.to_path_buf(),
            labels: labels.clone(),
            organization,
            root_der,
            intermediate_der,
            voucher,
            voucher_public_key,
        })
    }

    /// Issues a device certificate for a verified request (2.4.8.18,
    /// 2.4.14.19).
    ///
    /// # Errors
    /// The HSM error behind a failed signature, or [`Error::Encoding`].
    pub fn issue(&self, request: &VerifiedRequest) -> Result<IssuedCertificate, Error> {
        take_signer_failure();
        let serial = random_serial();
        let params = device_params(&self.organization, request, &serial)?;
        let subject_key = SubjectPoint(crate::hsm::uncompressed_point(request.public_key()));
        let cert = params
            .signed_by(&subject_key, &self.issuer)
            .map_err(|e| rcgen_failure("the device certificate", e))?;
        Ok(IssuedCertificate {
            certificate: cert.der().to_vec(),
            serial: serial.to_vec(),
        })
    }

    /// Signs a voucher entry (its CBOR payload, validated by
    /// `trustline_proto::voucher::sign_entry`) with the OEM voucher key;
    /// returns the tagged COSE_Sign1 (2.4.14.7).
    ///
    /// # Errors
    /// [`Error::KeyNotFound`] when this token does not hold the voucher key
    /// (a site's); [`Error::VoucherEntry`] for a payload that does not
    /// decode as an entry; the HSM error behind a failed signature.
    pub fn sign_voucher_entry(&self, entry_payload: &[u8]) -> Result<Vec<u8>, Error> {
        oem::sign_entry(self.voucher_key()?, entry_payload)
    }

    fn voucher_key(&self) -> Result<&HsmSigner, Error> {
        self.voucher.as_ref().ok_or_else(|| Error::KeyNotFound {
            label: self.labels.voucher.clone(),
            class: "private",
            token: self.hsm.token_label().to_owned(),
        })
    }

    /// Signs an FDO 1.1 voucher entry (its `OVEntryPayload` CBOR, validated
    /// by `trustline_proto::fdo::sign_entry`: an FDO payload, never a
    /// Trustline one) with the OEM voucher key; returns the tagged
    /// COSE_Sign1 (issue 17: the FDO twin of entry 0, so that no key leaves
    /// the CA).
    ///
    /// # Errors
    /// As [`Ca::sign_voucher_entry`].
    pub fn sign_fdo_voucher_entry(&self, entry_payload: &[u8]) -> Result<Vec<u8>, Error> {
        oem::sign_fdo_entry(self.voucher_key()?, entry_payload)
    }

    /// Signs a voucher entry as [`Ca::sign_voucher_entry`] and seals it for
    /// entry `index` of `rot_id`'s voucher under the OEM seal key
    /// (AES-256-GCM in the HSM, a fresh random IV, the additional data of
    /// `trustline_proto::voucher::seal::seal_aad`; issue 12 item 10).
    ///
    /// # Errors
    /// [`Error::InvalidRotId`]; as [`Ca::sign_voucher_entry`]; the HSM error
    /// behind a failed seal.
    pub fn sign_and_seal_voucher_entry(
        &self,
        entry_payload: &[u8],
        rot_id: &str,
        index: u32,
    ) -> Result<SealedEntry, Error> {
        oem::sign_and_seal(
            &self.hsm,
            self.voucher_key()?,
            &self.labels.seal,
            entry_payload,
            rot_id,
            index,
        )
    }

    /// Opens a seal made by [`Ca::sign_and_seal_voucher_entry`] for the same
    /// device and index; returns the COSE entry.
    ///
    /// # Errors
    /// [`Error::InvalidRotId`]; [`Error::SealBroken`] for a seal that is
    /// malformed or does not open (altered, or made for another device or
    /// index); HSM errors.
    pub fn unseal_voucher_entry(
        &self,
        rot_id: &str,
        index: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>, Error> {
        oem::unseal(&self.hsm, &self.labels.seal, rot_id, index, sealed)
    }

    /// Makes a device key in the HSM wrapped to a RoT's transport key (see
    /// [`Hsm::generate_wrapped_key`]).
    ///
    /// # Errors
    /// As [`Hsm::generate_wrapped_key`].
    pub fn generate_wrapped_key(&self, transport_spki: &[u8]) -> Result<WrappedDeviceKey, Error> {
        self.hsm.generate_wrapped_key(transport_spki)
    }

    /// The OEM root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The active site intermediate certificate, DER.
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// The active intermediate's generation (1 = made by `ca init`).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The issuer chain for device certificates issued now: the active
    /// intermediate, then the root. Devices issued under an earlier
    /// generation chain through that generation's certificate
    /// ([`intermediates`]).
    pub fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.intermediate_der.clone(), self.root_der.clone()]
    }

    /// The intermediate's signer (the key that signs device certificates).
    pub fn intermediate_signer(&self) -> &HsmSigner {
        self.issuer.key()
    }

    /// The OEM voucher key, when this token holds it.
    pub fn voucher_signer(&self) -> Option<&HsmSigner> {
        self.voucher.as_ref()
    }

    /// The OEM voucher public key (SubjectPublicKeyInfo DER).
    pub fn voucher_public_key_der(&self) -> &[u8] {
        &self.voucher_public_key
    }

    /// The session pool.
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    /// The organization placed in device subjects.
    pub fn organization(&self) -> &str {
        &self.organization
    }
}
