//! Rotating the site intermediate: a new key and certificate under the OEM
//! root become the active issuer; the old certificates stay in the archive
//! (`intermediates/`) for the chains of devices already issued, and the old
//! keys stay on the token.
//!
//! Two shapes, depending on where the root is:
//! - **root on the same token** (the demo): [`rotate_intermediate`] does
//!   everything in one call;
//! - **root elsewhere** (at the OEM hub, or offline; issue 13): the site
//!   makes the key and a PKCS#10 request on its own token
//!   ([`request_intermediate`]), the hub signs it with the root
//!   ([`sign_intermediate_request`]), and the site installs the certificate
//!   ([`install_intermediate`]), which checks it chains to the site's root
//!   and matches the pending key before making it active. A site enrolled
//!   at the hub starts the same way, with no intermediate yet
//!   ([`request_first_intermediate`], generation 1).
//!
//! Crash safety: the archive copy is written before the active file is
//! replaced (both atomically), so a crash leaves the old generation active
//! and at most an unused key or archive entry; the next rotation takes the
//! next free generation. A running [`super::Ca`] keeps signing with the
//! generation it opened; open it again to sign with the new one.

use std::path::{Path, PathBuf};

use rcgen::Issuer;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::files::{
    active_generation, intermediate_path, next_generation, pending_requests, read_certificate,
    read_pem, request_path, write_pem, INTERMEDIATE_CERT_FILE, ROOT_CERT_FILE,
};
use super::profile::{ca_params, check_name, intermediate_dn, rcgen_failure, SubjectPoint};
use super::subject_key_id;
use crate::hsm::{take_signer_failure, Hsm, HsmSigner};
use crate::keys::KeyLabels;
use crate::request::verify_csr;
use crate::Error;

pub(super) const CSR_TAG: &str = "CERTIFICATE REQUEST";

/// A site intermediate generation made active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new active generation.
    pub generation: u32,
    /// The generation it replaced.
    pub previous_generation: u32,
    /// The new key's label on the site token.
    pub label: String,
    /// The new intermediate certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The files written (archive copy, active certificate).
    pub files: Vec<PathBuf>,
}

/// A request for a new site intermediate, its key already on the site
/// token, waiting for the root's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntermediateRequest {
    /// The generation it will be.
    pub generation: u32,
    /// The new key's label on the site token.
    pub label: String,
    /// The PKCS#10 request, DER (signed by the new key).
    pub csr_der: Vec<u8>,
    /// Where the request was written (`intermediates/…csr.pem`).
    pub file: PathBuf,
}

impl IntermediateRequest {
    /// The request as PEM, to carry to the hub.
    pub fn csr_pem(&self) -> String {
        pem::encode(&pem::Pem::new(CSR_TAG, self.csr_der.clone()))
    }
}

fn refused(reason: impl Into<String>) -> Error {
    Error::RotationRefused {
        reason: reason.into(),
    }
}

fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, Error> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| refused(format!("{what} does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(refused(format!("{what} has {} trailing bytes", rest.len())));
    }
    Ok(cert)
}

/// The first value of an attribute in a name, if any.
fn first<'a>(
    mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Option<String> {
    values
        .next()
        .and_then(|v| v.as_str().ok())
        .map(str::to_owned)
}

/// (organization, site) of the active intermediate in `ca_dir`.
fn active_subject(ca_dir: &Path) -> Result<(String, String), Error> {
    let der = read_certificate(&ca_dir.join(INTERMEDIATE_CERT_FILE))?;
    let cert = parse_cert(&der, "the active intermediate")?;
    let org = first(cert.subject().iter_organization())
        .ok_or_else(|| refused("the active intermediate names no organization"))?;
    let site = first(cert.subject().iter_organizational_unit())
        .ok_or_else(|| refused("the active intermediate names no site (OU)"))?;
    Ok((org, site))
}

/// The next generation whose key label is free on `hsm`.
fn free_generation(hsm: &Hsm, ca_dir: &Path, labels: &KeyLabels) -> Result<(u32, String), Error> {
    let mut generation = next_generation(ca_dir)?;
    loop {
        let label = labels.intermediate_label(generation);
        if !hsm.key_exists(&label)? {
            return Ok((generation, label));
        }
        // A key left by a rotation that crashed before writing anything.
        tracing::warn!(label, "skipping an intermediate label already on the token");
        generation += 1;
    }
}

/// Checks that `root` is the key of the root certificate `root_der`.
fn check_root_key(root: &HsmSigner, root_der: &[u8]) -> Result<(), Error> {
    let cert = parse_cert(root_der, "the root certificate")?;
    if cert.public_key().raw != root.public_key_spki() {
        return Err(Error::CertificateKeyMismatch {
            role: "OEM root",
            label: root.name().to_owned(),
        });
    }
    Ok(())
}

/// Writes generation `generation` into the archive, then makes it active.
fn activate(ca_dir: &Path, generation: u32, der: &[u8]) -> Result<Vec<PathBuf>, Error> {
    let archive = intermediate_path(ca_dir, generation);
    write_pem(&archive, "CERTIFICATE", der)?;
    let active = ca_dir.join(INTERMEDIATE_CERT_FILE);
    write_pem(&active, "CERTIFICATE", der)?;
    Ok(vec![archive, active])
}

/// Makes sure the generation active now is in the archive (a directory
/// from before the archive holds generation 1 only as the active file).
fn archive_active(ca_dir: &Path) -> Result<u32, Error> {
    let active = read_certificate(&ca_dir.join(INTERMEDIATE_CERT_FILE))?;
    let generation = active_generation(ca_dir, &active)?;
    let path = intermediate_path(ca_dir, generation);
    if !path.exists() {
        write_pem(&path, "CERTIFICATE", &active)?;
    }
    Ok(generation)
}

/// Rotates the site intermediate when the OEM root key is on the same
/// token (the demo): a new key, a certificate signed by the root, made
/// active; the previous certificate stays in the archive.
///
/// # Errors
/// [`Error::KeyNotFound`] when the root key is not on this token (use
/// [`request_intermediate`] then); [`Error::CertificateKeyMismatch`] when
/// the root certificate is not the root key's; HSM, encoding and I/O
/// errors. On any error the new key and files are removed again.
pub fn rotate_intermediate(
    hsm: &Hsm,
    ca_dir: &Path,
    labels: &KeyLabels,
) -> Result<Rotation, Error> {
    take_signer_failure();
    let root_der = read_certificate(&ca_dir.join(ROOT_CERT_FILE))?;
    let root = hsm.signer(&labels.root)?;
    check_root_key(&root, &root_der)?;
    let (organization, site) = active_subject(ca_dir)?;
    let previous_generation = archive_active(ca_dir)?;
    let (generation, label) = free_generation(hsm, ca_dir, labels)?;
    let key = hsm.generate_key(&label)?;
    let result = (|| {
        let issuer = Issuer::from_ca_cert_der(&root_der.as_slice().into(), &root)
            .map_err(|e| rcgen_failure("the root issuer", e))?;
        let params = ca_params(intermediate_dn(&organization, &site, generation), 0, true);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| rcgen_failure("the new site intermediate certificate", e))?;
        let der = cert.der().to_vec();
        let files = activate(ca_dir, generation, &der)?;
        Ok((der, files))
    })();
    match result {
        Ok((certificate_der, files)) => {
            tracing::info!(generation, label, "site intermediate rotated");
            Ok(Rotation {
                generation,
                previous_generation,
                label,
                certificate_der,
                files,
            })
        }
        Err(e) => {
            undo_key(hsm, &label);
            let _ = std::fs::remove_file(intermediate_path(ca_dir, generation));
            Err(e)
        }
    }
}

pub(super) fn undo_key(hsm: &Hsm, label: &str) {
    if let Err(e) = hsm.destroy_key(label) {
        tracing::error!(label, error = %e, "could not remove a key after a failed rotation");
    }
}

/// Starts a rotation when the root is elsewhere: makes the next
/// generation's key on the site token and a PKCS#10 request for it (same
/// organization and site as the active intermediate), written under
/// `intermediates/`. Carry [`IntermediateRequest::csr_pem`] to the hub.
///
/// # Errors
/// HSM, encoding and I/O errors; on any error the new key is removed.
pub fn request_intermediate(
    hsm: &Hsm,
    ca_dir: &Path,
    labels: &KeyLabels,
) -> Result<IntermediateRequest, Error> {
    take_signer_failure();
    let (organization, site) = active_subject(ca_dir)?;
    archive_active(ca_dir)?;
    let (generation, label) = free_generation(hsm, ca_dir, labels)?;
    let key = hsm.generate_key(&label)?;
    let file = request_path(ca_dir, generation);
    let result = (|| {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = intermediate_dn(&organization, &site, generation);
        let csr = params
            .serialize_request(&key)
            .map_err(|e| rcgen_failure("the intermediate request", e))?;
        let der = csr.der().to_vec();
        write_pem(&file, CSR_TAG, &der)?;
        Ok(der)
    })();
    match result {
        Ok(csr_der) => {
            tracing::info!(generation, label, "site intermediate requested");
            Ok(IntermediateRequest {
                generation,
                label,
                csr_der,
                file,
            })
        }
        Err(e) => {
            undo_key(hsm, &label);
            Err(e)
        }
    }
}

/// Signs a site's intermediate request with the OEM root (at the hub, or
/// wherever the root is): checks the request (P-256, ecdsa-with-SHA256,
/// self-signature), takes only its organization, site and common name —
/// the organization must be the root's — and issues a CA certificate
/// (`pathlen:0`, keyCertSign + cRLSign) under `root_cert_der`. Extensions
/// the request asks for are ignored.
///
/// # Errors
/// The CSR errors of [`verify_csr`]; [`Error::RotationRefused`] for a
/// request naming another organization or no site;
/// [`Error::CertificateKeyMismatch`] when `root` is not the key of
/// `root_cert_der`; the HSM error behind a failed signature.
pub fn sign_intermediate_request(
    root: &HsmSigner,
    root_cert_der: &[u8],
    csr_der: &[u8],
) -> Result<Vec<u8>, Error> {
    take_signer_failure();
    check_root_key(root, root_cert_der)?;
    let key = verify_csr(csr_der)?;
    let (_, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|e| Error::CsrMalformed {
            reason: e.to_string(),
        })?;
    let subject = &csr.certification_request_info.subject;
    let root_cert = parse_cert(root_cert_der, "the root certificate")?;
    let root_org = first(root_cert.subject().iter_organization())
        .ok_or_else(|| refused("the root certificate names no organization"))?;
    let org = first(subject.iter_organization())
        .ok_or_else(|| refused("the request names no organization"))?;
    if org != root_org {
        return Err(refused(format!(
            "the request names organization {org:?}, the root is {root_org:?}'s"
        )));
    }
    let site = first(subject.iter_organizational_unit())
        .ok_or_else(|| refused("the request names no site (OU)"))?;
    let cn = first(subject.iter_common_name())
        .ok_or_else(|| refused("the request names no common name"))?;
    for (what, value) in [("site", &site), ("common name", &cn)] {
        check_name(what, value).map_err(|e| refused(e.to_string()))?;
    }
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, org.as_str());
    dn.push(rcgen::DnType::OrganizationalUnitName, site.as_str());
    dn.push(rcgen::DnType::CommonName, cn.as_str());
    let issuer = Issuer::from_ca_cert_der(&root_cert_der.into(), root)
        .map_err(|e| rcgen_failure("the root issuer", e))?;
    let cert = ca_params(dn, 0, true)
        .signed_by(&SubjectPoint(crate::hsm::uncompressed_point(&key)), &issuer)
        .map_err(|e| rcgen_failure("the new site intermediate certificate", e))?;
    tracing::info!(site, cn, "site intermediate request signed by the root");
    Ok(cert.der().to_vec())
}

/// Installs a site intermediate certificate signed elsewhere: checks that
/// it is a CA certificate (`pathlen:0`, keyCertSign, SKI) issued and signed
/// by the root certificate in `ca_dir`, and that its key is the key of a
/// pending [`request_intermediate`] (or [`request_first_intermediate`]) on
/// `hsm`; then archives it, makes it active and removes the request. Nothing
/// changes on a refusal. With no active intermediate yet (a site's first),
/// `previous_generation` is 0.
///
/// # Errors
/// [`Error::RotationRefused`] for every check above; HSM and I/O errors.
pub fn install_intermediate(
    hsm: &Hsm,
    ca_dir: &Path,
    labels: &KeyLabels,
    certificate_der: &[u8],
) -> Result<Rotation, Error> {
    let root_der = read_certificate(&ca_dir.join(ROOT_CERT_FILE))?;
    let root = parse_cert(&root_der, "the root certificate")?;
    let cert = parse_cert(certificate_der, "the new intermediate")?;
    if cert.issuer().as_raw() != root.subject().as_raw() {
        return Err(refused("the certificate is not issued by this CA's root"));
    }
    trustline_proto::ecdsa::verify_x509(
        root.public_key().raw,
        cert.tbs_certificate.as_ref(),
        &cert.signature_value.data,
    )
    .map_err(|_| refused("the certificate is not signed by this CA's root"))?;
    let ca_ok = matches!(
        cert.basic_constraints(),
        Ok(Some(bc)) if bc.value.ca && bc.value.path_len_constraint == Some(0)
    );
    let signs_certs = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
    if !ca_ok || !signs_certs || subject_key_id(&cert).is_none() {
        return Err(refused(
            "the certificate is not a site intermediate (CA:true, pathlen:0, keyCertSign, SKI)",
        ));
    }
    let spki = cert.public_key().raw;
    let mut matched = None;
    for generation in pending_requests(ca_dir)? {
        let label = labels.intermediate_label(generation);
        if !hsm.key_exists(&label)? {
            continue;
        }
        let pending = read_pem(&request_path(ca_dir, generation), CSR_TAG)?;
        let key = hsm.signer(&label)?;
        if key.public_key_spki() == spki && verify_csr(&pending).is_ok() {
            matched = Some((generation, label));
            break;
        }
    }
    let Some((generation, label)) = matched else {
        return Err(refused(
            "the certificate's key matches no pending request on this token",
        ));
    };
    let previous_generation = if ca_dir.join(INTERMEDIATE_CERT_FILE).exists() {
        archive_active(ca_dir)?
    } else {
        0
    };
    let files = activate(ca_dir, generation, certificate_der)?;
    let _ = std::fs::remove_file(request_path(ca_dir, generation));
    tracing::info!(generation, label, "site intermediate installed");
    Ok(Rotation {
        generation,
        previous_generation,
        label,
        certificate_der: certificate_der.to_vec(),
        files,
    })
}
