//! The certificate authority: `ca init`, device certificate issuance and
//! CRLs, all signed inside the HSM through rcgen.
//!
//! Certificate profile (DESIGN.md "Identity", IEEE 802.1AR IDevID style):
//! - OEM root: self-signed, `CA:true, pathlen:1`, keyCertSign + cRLSign, SKI;
//! - site intermediate: signed by the root, `CA:true, pathlen:0`,
//!   keyCertSign + cRLSign, SKI + AKI;
//! - device: signed by the intermediate, X.509 v3, 128-bit random positive
//!   serial, subject O = the intermediate's O, CN = serialNumber = product
//!   serial, SAN URI `urn:trustline:rot:<rot_id>`, keyUsage
//!   digitalSignature (critical), `CA:false` (critical), SKI + AKI,
//!   notBefore = issuance, notAfter = 99991231235959Z (GeneralizedTime: an
//!   IDevID lives as long as the device, 802.1AR §8.5). CA certificates get
//!   the same notAfter so that a chain never outlives its anchor.
//!
//! Issuance is built for throughput: the issuer (name, key identifier, key
//! usages, HSM key handle) is prepared once at [`Ca::open`], so that issuing
//! one certificate costs one HSM signature plus a few microseconds of DER.

use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::string::PrintableString;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use time::OffsetDateTime;
use trustline_proto::signer::Signer;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::hsm::{take_signer_failure, Hsm, HsmSigner, WrappedDeviceKey};
use crate::keys::KeyLabels;
use crate::request::VerifiedRequest;
use crate::Error;

/// The OEM root certificate's file name in the CA directory.
pub const ROOT_CERT_FILE: &str = "oem-root.pem";
/// The site intermediate certificate's file name in the CA directory.
pub const INTERMEDIATE_CERT_FILE: &str = "site-intermediate.pem";
/// The OEM order key's public key file name in the CA directory.
pub const ORDER_KEY_FILE: &str = "order-key.pub.pem";
/// The OEM voucher key's public key file name in the CA directory.
pub const VOUCHER_KEY_FILE: &str = "voucher-key.pub.pem";

/// The SAN URI prefix naming a device's RoT.
pub const ROT_URI_PREFIX: &str = "urn:trustline:rot:";

/// Largest number of entries in one CRL request.
pub const MAX_CRL_ENTRIES: usize = 1_000_000;

/// 802.1AR's "no well-defined expiration": 9999-12-31 23:59:59 UTC.
pub fn idevid_not_after() -> OffsetDateTime {
    time::macros::datetime!(9999-12-31 23:59:59 UTC)
}

/// What `ca init` names the CA after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// The OEM's name (subject O of every certificate).
    pub organization: String,
    /// The factory site (subject OU of the intermediate).
    pub site: String,
    /// The key labels to create.
    pub labels: KeyLabels,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            organization: "Trustline OEM".to_owned(),
            site: "site-1".to_owned(),
            labels: KeyLabels::default(),
        }
    }
}

/// What `ca init` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The OEM root certificate, PEM.
    pub root_pem: String,
    /// The site intermediate certificate, PEM.
    pub intermediate_pem: String,
    /// The OEM order key, PEM SubjectPublicKeyInfo.
    pub order_key_pem: String,
    /// The OEM voucher key, PEM SubjectPublicKeyInfo.
    pub voucher_key_pem: String,
    /// The ledger checkpoint key, PEM SubjectPublicKeyInfo (the caller
    /// stores it where the ledger expects it).
    pub checkpoint_key_pem: String,
    /// The files written.
    pub files: Vec<PathBuf>,
    /// The keys created on the token.
    pub keys: Vec<String>,
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub certificate: Vec<u8>,
    /// Its serial number (16 bytes, big-endian, first byte non-zero).
    pub serial: Vec<u8>,
}

/// One revoked certificate in a CRL request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// The certificate's serial number bytes (big-endian, 1 to 20 bytes).
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// What a CRL lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlRequest {
    /// The revoked certificates.
    pub revoked: Vec<RevokedSerial>,
    /// The monotonic CRL number.
    pub crl_number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate (after thisUpdate).
    pub next_update: OffsetDateTime,
}

/// The open CA: the intermediate's issuer, ready to sign.
pub struct Ca {
    hsm: Hsm,
    issuer: Issuer<'static, HsmSigner>,
    intermediate_key_id: Vec<u8>,
    organization: String,
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
    voucher: HsmSigner,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("organization", &self.organization)
            .field("hsm", &self.hsm)
            .finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// 16 random bytes with a non-zero first byte: a positive 128-bit serial
/// whose DER encoding never loses a leading byte.
fn random_serial() -> [u8; 16] {
    let mut rng = rand::thread_rng();
    let mut serial = [0u8; 16];
    loop {
        rng.fill_bytes(&mut serial);
        if serial[0] != 0 {
            return serial;
        }
    }
}

fn rcgen_failure(what: &'static str, e: rcgen::Error) -> Error {
    if matches!(e, rcgen::Error::RemoteKeyError) {
        if let Some(hsm_error) = take_signer_failure() {
            return hsm_error;
        }
    }
    Error::Encoding {
        what,
        reason: e.to_string(),
    }
}

fn check_name(what: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() || value.len() > 64 || value.chars().any(char::is_control) {
        return Err(Error::Encoding {
            what: "CA names",
            reason: format!("the {what} must be 1 to 64 printable characters"),
        });
    }
    Ok(())
}

fn ca_params(dn: DistinguishedName, path_len: u8, issued_by_other: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.not_before = now();
    params.not_after = idevid_not_after();
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = issued_by_other;
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

/// Creates the CA: generates the OEM root, site intermediate, OEM order,
/// OEM voucher and ledger checkpoint keys on the token (each once), issues
/// the root and intermediate certificates, and writes them and the order
/// and voucher public keys as PEM into `ca_dir`.
///
/// Refuses to run on a token or directory that already holds any of them;
/// if anything fails midway, the keys and files it made are removed again.
///
/// # Errors
/// [`Error::AlreadyInitialized`] naming what exists; HSM, encoding and I/O
/// errors otherwise.
pub fn init(hsm: &Hsm, options: &InitOptions, ca_dir: &Path) -> Result<InitReport, Error> {
    check_name("organization", &options.organization)?;
    check_name("site", &options.site)?;
    let labels = &options.labels;
    let mut existing = Vec::new();
    for label in labels.all() {
        if hsm.key_exists(label)? {
            existing.push(format!("key {label:?}"));
        }
    }
    for file in [ROOT_CERT_FILE, INTERMEDIATE_CERT_FILE] {
        let path = ca_dir.join(file);
        if path.exists() {
            existing.push(format!("file {}", path.display()));
        }
    }
    if !existing.is_empty() {
        return Err(Error::AlreadyInitialized { existing });
    }
    let mut created_keys = Vec::new();
    let mut written = Vec::new();
    let result = init_inner(hsm, options, ca_dir, &mut created_keys, &mut written);
    if result.is_err() {
        for label in &created_keys {
            if let Err(e) = hsm.destroy_key(label) {
                tracing::error!(label, error = %e, "could not remove a key after a failed init");
            }
        }
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

fn init_inner(
    hsm: &Hsm,
    options: &InitOptions,
    ca_dir: &Path,
    created_keys: &mut Vec<String>,
    written: &mut Vec<PathBuf>,
) -> Result<InitReport, Error> {
    let labels = &options.labels;
    let mut generate = |label: &str| -> Result<HsmSigner, Error> {
        let signer = hsm.generate_key(label)?;
        created_keys.push(label.to_owned());
        Ok(signer)
    };
    let root = generate(&labels.root)?;
    let intermediate = generate(&labels.intermediate)?;
    let order = generate(&labels.order)?;
    let voucher = generate(&labels.voucher)?;
    let checkpoint = generate(&labels.checkpoint)?;

    let org = &options.organization;
    let mut root_dn = DistinguishedName::new();
    root_dn.push(DnType::OrganizationName, org.as_str());
    root_dn.push(DnType::CommonName, format!("{org} Root CA"));
    let root_params = ca_params(root_dn, 1, false);
    let root_cert = root_params
        .self_signed(&root)
        .map_err(|e| rcgen_failure("the OEM root certificate", e))?;
    let root_issuer = Issuer::new(root_params, &root);

    let mut int_dn = DistinguishedName::new();
    int_dn.push(DnType::OrganizationName, org.as_str());
    int_dn.push(DnType::OrganizationalUnitName, options.site.as_str());
    int_dn.push(
        DnType::CommonName,
        format!("{org} {} Intermediate CA", options.site),
    );
    let int_params = ca_params(int_dn, 0, true);
    let int_cert = int_params
        .signed_by(&intermediate, &root_issuer)
        .map_err(|e| rcgen_failure("the site intermediate certificate", e))?;

    std::fs::create_dir_all(ca_dir).map_err(|e| Error::io("creating", ca_dir, e))?;
    let report = InitReport {
        root_pem: root_cert.pem(),
        intermediate_pem: int_cert.pem(),
        order_key_pem: order.public_key_pem(),
        voucher_key_pem: voucher.public_key_pem(),
        checkpoint_key_pem: checkpoint.public_key_pem(),
        files: Vec::new(),
        keys: created_keys.clone(),
    };
    for (file, text) in [
        (ROOT_CERT_FILE, &report.root_pem),
        (INTERMEDIATE_CERT_FILE, &report.intermediate_pem),
        (ORDER_KEY_FILE, &report.order_key_pem),
        (VOUCHER_KEY_FILE, &report.voucher_key_pem),
    ] {
        let path = ca_dir.join(file);
        write_atomically(&path, text.as_bytes())?;
        written.push(path);
    }
    tracing::info!(dir = %ca_dir.display(), "CA initialised");
    Ok(InitReport {
        files: written.clone(),
        ..report
    })
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, so a
/// crash leaves either the old file or the new one.
///
/// # Errors
/// [`Error::Io`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into", path, e))
}

fn read_certificate(path: &Path) -> Result<Vec<u8>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotInitialized {
            reason: format!("{} is missing (run `trustline ca init`)", path.display()),
        },
        _ => Error::io("reading", path, e),
    })?;
    let block = pem::parse(&text).map_err(|e| Error::NotInitialized {
        reason: format!("{} is not PEM: {e}", path.display()),
    })?;
    if block.tag() != "CERTIFICATE" {
        return Err(Error::NotInitialized {
            reason: format!(
                "{} holds a {}, not a CERTIFICATE",
                path.display(),
                block.tag()
            ),
        });
    }
    Ok(block.into_contents())
}

impl Ca {
    /// Opens the CA in `ca_dir` with its keys on `hsm`: checks that the
    /// intermediate certificate matches the intermediate key in the HSM and
    /// is signed by the root certificate, and prepares the issuer. The root
    /// key itself need not be on this HSM (it is offline in production).
    ///
    /// # Errors
    /// [`Error::NotInitialized`] when the certificates are missing,
    /// [`Error::CertificateKeyMismatch`], [`Error::KeyNotFound`] and other
    /// HSM errors.
    pub fn open(hsm: Hsm, ca_dir: &Path, labels: &KeyLabels) -> Result<Self, Error> {
        let root_der = read_certificate(&ca_dir.join(ROOT_CERT_FILE))?;
        let intermediate_der = read_certificate(&ca_dir.join(INTERMEDIATE_CERT_FILE))?;
        let signer = hsm.signer(&labels.intermediate)?;
        let voucher = hsm.signer(&labels.voucher)?;

        let bad = |file: &str, e: String| Error::NotInitialized {
            reason: format!("{} does not parse: {e}", ca_dir.join(file).display()),
        };
        let (_, root) = x509_parser::certificate::X509Certificate::from_der(&root_der)
            .map_err(|e| bad(ROOT_CERT_FILE, e.to_string()))?;
        let (_, int) = x509_parser::certificate::X509Certificate::from_der(&intermediate_der)
            .map_err(|e| bad(INTERMEDIATE_CERT_FILE, e.to_string()))?;
        if int.public_key().raw != signer.public_key_der() {
            return Err(Error::CertificateKeyMismatch {
                role: "site intermediate",
                label: labels.intermediate.clone(),
            });
        }
        trustline_proto::statement::verify_signature(
            root.public_key().raw,
            int.tbs_certificate.as_ref(),
            &int.signature_value.data,
        )
        .map_err(|_| Error::CertificateKeyMismatch {
            role: "OEM root",
            label: labels.root.clone(),
        })?;
        let intermediate_key_id = int
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .ok_or_else(|| {
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
            organization,
            root_der,
            intermediate_der,
            voucher,
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
        let params = self.device_params(request, &serial)?;
        let subject_key = DeviceKey(crate::hsm::uncompressed_point(request.public_key()));
        let cert = params
            .signed_by(&subject_key, &self.issuer)
            .map_err(|e| rcgen_failure("the device certificate", e))?;
        Ok(IssuedCertificate {
            certificate: cert.der().to_vec(),
            serial: serial.to_vec(),
        })
    }

    fn device_params(
        &self,
        request: &VerifiedRequest,
        serial: &[u8; 16],
    ) -> Result<CertificateParams, Error> {
        let printable = PrintableString::try_from(request.product_serial()).map_err(|e| {
            Error::InvalidProductSerial {
                reason: e.to_string(),
            }
        })?;
        let mut dn = DistinguishedName::new();
        if !self.organization.is_empty() {
            dn.push(DnType::OrganizationName, self.organization.as_str());
        }
        dn.push(
            DnType::CommonName,
            DnValue::PrintableString(printable.clone()),
        );
        // id-at-serialNumber (2.5.4.5), PrintableString.
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(printable),
        );
        let uri =
            rcgen::string::Ia5String::try_from(format!("{ROT_URI_PREFIX}{}", request.rot_id()))
                .map_err(|e| Error::InvalidRotId {
                    rot_id: e.to_string(),
                })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.not_before = now();
        params.not_after = idevid_not_after();
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        Ok(params)
    }

    /// Signs a CRL with the intermediate key listing `request.revoked`
    /// (2.4.14.24).
    ///
    /// # Errors
    /// [`Error::InvalidCrlRequest`] for inconsistent times or bad serials;
    /// the HSM error behind a failed signature.
    pub fn sign_crl(&self, request: &CrlRequest) -> Result<Vec<u8>, Error> {
        take_signer_failure();
        let invalid = |reason: String| Error::InvalidCrlRequest { reason };
        if request.next_update <= request.this_update {
            return Err(invalid("next_update must be after this_update".to_owned()));
        }
        if request.revoked.len() > MAX_CRL_ENTRIES {
            return Err(invalid(format!(
                "{} entries, more than {MAX_CRL_ENTRIES}",
                request.revoked.len()
            )));
        }
        let mut revoked_certs = Vec::with_capacity(request.revoked.len());
        for (i, r) in request.revoked.iter().enumerate() {
            if r.serial.is_empty() || r.serial.len() > 20 || r.serial.iter().all(|b| *b == 0) {
                return Err(invalid(format!(
                    "entry {i}: a serial must be 1 to 20 bytes and not zero"
                )));
            }
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&r.serial),
                revocation_time: r.revoked_at.replace_nanosecond(0).unwrap_or(r.revoked_at),
                reason_code: None,
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: request.this_update,
            next_update: request.next_update,
            crl_number: SerialNumber::from(request.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.intermediate_key_id.clone()),
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| rcgen_failure("the CRL", e))?;
        Ok(crl.der().to_vec())
    }

    /// Signs a voucher entry (its CBOR payload, validated by
    /// `trustline_proto::voucher::sign_entry`) with the OEM voucher key;
    /// returns the tagged COSE_Sign1 (2.4.14.7).
    ///
    /// # Errors
    /// [`Error::VoucherEntry`] for a payload that does not decode as an
    /// entry; the HSM error behind a failed signature.
    pub fn sign_voucher_entry(&self, entry_payload: &[u8]) -> Result<Vec<u8>, Error> {
        take_signer_failure();
        trustline_proto::voucher::sign_entry(entry_payload, &self.voucher).map_err(|e| match e {
            trustline_proto::Error::Signer(reason) => {
                take_signer_failure().unwrap_or(Error::Pkcs11 {
                    operation: "C_Sign",
                    reason,
                })
            }
            other => Error::VoucherEntry(other.to_string()),
        })
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

    /// The site intermediate certificate, DER.
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// The issuer chain for device certificates: intermediate, then root.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.intermediate_der.clone(), self.root_der.clone()]
    }

    /// The intermediate's signer (the key that signs device certificates).
    pub fn intermediate_signer(&self) -> &HsmSigner {
        self.issuer.key()
    }

    /// The OEM voucher key.
    pub fn voucher_signer(&self) -> &HsmSigner {
        &self.voucher
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

/// A device public key as rcgen wants it: the uncompressed point.
struct DeviceKey(Vec<u8>);

impl rcgen::PublicKeyData for DeviceKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}
