//! The synthetic OEM (software order key, root CA and one site
//! intermediate) and synthetic devices (random RoT ids, real P-256 keys and
//! X.509 certificates).

use std::path::Path;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, DnValue, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;

use crate::certs::ROT_URI_PREFIX;
use crate::error::Result;
use backends::layout;

use super::*;

/// A synthetic OEM: order key, root CA and one site intermediate, all in
/// memory.
pub struct SyntheticOem {
    pub(super) order_key: SoftwareSigner,
    pub(super) root: CertifiedIssuer<'static, KeyPair>,
    pub(super) intermediate: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for SyntheticOem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticOem").finish_non_exhaustive()
    }
}

pub(super) fn ca_params(cn: &str, pathlen: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Synthetic OEM");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(pathlen));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl SyntheticOem {
    /// Fresh keys and CA certificates.
    ///
    /// # Errors
    /// [`Error::Config`] when rcgen fails.
    pub fn generate() -> Result<Self> {
        let root_key = KeyPair::generate().map_err(|e| synth_err("root key", e))?;
        let root = CertifiedIssuer::self_signed(ca_params("Synthetic OEM root", 1), root_key)
            .map_err(|e| synth_err("root", e))?;
        let int_key = KeyPair::generate().map_err(|e| synth_err("intermediate key", e))?;
        let intermediate =
            CertifiedIssuer::signed_by(ca_params("Synthetic site intermediate", 0), int_key, &root)
                .map_err(|e| synth_err("intermediate", e))?;
        Ok(Self {
            order_key: SoftwareSigner::generate(),
            root,
            intermediate,
        })
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    /// The site intermediate, DER.
    pub fn intermediate_der(&self) -> Vec<u8> {
        self.intermediate.der().to_vec()
    }

    /// The CA certificates, DER: intermediate, root.
    pub fn ca_chain(&self) -> Vec<Vec<u8>> {
        vec![self.intermediate_der(), self.root_der()]
    }

    /// The OEM order key, SubjectPublicKeyInfo DER.
    pub fn order_key_spki(&self) -> &[u8] {
        self.order_key.public_key_der()
    }

    /// Signs a production order with the OEM order key (2.4.14.22).
    ///
    /// # Errors
    /// [`Error::Config`] when signing fails.
    pub fn sign_order(&self, order: &v1::ProductionOrder) -> Result<v1::SignedStatement> {
        trustline_proto::statement::sign(&self.order_key, order).map_err(|e| synth_err("order", e))
    }

    /// A device certificate in the CA's profile: subject CN and
    /// serialNumber = product serial, SAN URI naming the RoT, signed by the
    /// site intermediate.
    ///
    /// # Errors
    /// [`Error::Config`] when rcgen fails.
    pub fn device_certificate(&self, serial: &str, rot_id: &str, key: &KeyPair) -> Result<Vec<u8>> {
        self.certificate_signed_by(serial, rot_id, key, &self.intermediate)
    }

    /// The same profile signed by another issuer (for a certificate that is
    /// not the OEM's).
    ///
    /// # Errors
    /// [`Error::Config`] when rcgen fails.
    pub fn certificate_signed_by(
        &self,
        serial: &str,
        rot_id: &str,
        key: &KeyPair,
        issuer: &CertifiedIssuer<'static, KeyPair>,
    ) -> Result<Vec<u8>> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Synthetic OEM");
        let printable =
            rcgen::string::PrintableString::try_from(serial).map_err(|e| synth_err("serial", e))?;
        dn.push(
            DnType::CommonName,
            DnValue::PrintableString(printable.clone()),
        );
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString(printable),
        );
        params.distinguished_name = dn;
        let uri = rcgen::string::Ia5String::try_from(format!("{ROT_URI_PREFIX}{rot_id}"))
            .map_err(|e| synth_err("rot uri", e))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(key, issuer)
            .map_err(|e| synth_err("certificate", e))?;
        Ok(cert.der().to_vec())
    }

    /// Writes the OEM's public material where `trustline audit --data-dir`
    /// looks by default: `<data>/ca/oem-root.pem`, `site-intermediate.pem`,
    /// `order-key.pub.pem`.
    ///
    /// # Errors
    /// [`Error::Config`] on a file error.
    pub fn write_public_files(&self, data_dir: &Path) -> Result<()> {
        let ca = data_dir.join(layout::CA_DIR);
        std::fs::create_dir_all(&ca).map_err(|e| synth_err("ca dir", e))?;
        let write = |name: &str, text: String| {
            std::fs::write(ca.join(name), text).map_err(|e| synth_err(name, e))
        };
        write("oem-root.pem", self.root.pem())?;
        write("site-intermediate.pem", self.intermediate.pem())?;
        write(
            "order-key.pub.pem",
            pem::encode(&pem::Pem::new("PUBLIC KEY", self.order_key_spki().to_vec())),
        )
    }
}

/// A synthetic device: a random RoT id and a real P-256 identity key.
pub struct SyntheticDevice {
    /// The RoT.
    pub rot_id: String,
    /// The product serial.
    pub serial: String,
    /// The identity key.
    pub key: KeyPair,
    /// Its SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
}

impl std::fmt::Debug for SyntheticDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticDevice")
            .field("rot_id", &self.rot_id)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl SyntheticDevice {
    /// A device with a fresh RoT and key.
    ///
    /// # Errors
    /// [`Error::Config`] when key generation fails.
    pub fn new(serial: impl Into<String>) -> Result<Self> {
        let mut die = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut die);
        let key = KeyPair::generate().map_err(|e| synth_err("device key", e))?;
        Ok(Self {
            rot_id: trustline_proto::identity::rot_id(&die),
            serial: serial.into(),
            spki: key.subject_public_key_info(),
            key,
        })
    }
}
