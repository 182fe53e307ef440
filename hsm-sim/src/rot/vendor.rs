//! A simulated IC vendor: a CA (self-signed P-256 root, optionally an
//! intermediate) that manufactures dies, each with its own attestation key
//! and an attestation certificate naming the vendor's chip serial
//! (2.4.8.18, 2.4.14.17/18). The provisioner is configured with the vendors'
//! root certificates and refuses silicon that does not chain to one
//! (invariant 7).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer,
    KeyUsagePurpose, SerialNumber,
};
use trustline_proto::signer::{Signer, SoftwareSigner};

use super::die::{DieParts, SimulatedRot};
use super::keys::{new_key, RcgenKey};
use crate::Error;

/// X.520 serialNumber (2.5.4.5): the chip serial in a die's subject.
const SERIAL_NUMBER_OID: [u64; 4] = [2, 5, 4, 5];

/// Whether a vendor issues die certificates from its root or from an
/// intermediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VendorShape {
    /// Dies are certified directly by the root.
    RootOnly,
    /// Dies are certified by an intermediate that the root certified; the
    /// intermediate travels in each die's attestation chain.
    WithIntermediate,
}

struct Ca {
    key: p256::ecdsa::SigningKey,
    params: CertificateParams,
    der: Vec<u8>,
}

/// A simulated IC vendor CA.
pub struct IcVendor {
    name: String,
    serial_prefix: String,
    root: Ca,
    intermediate: Option<Ca>,
    next_die: u64,
    rng: StdRng,
}

impl IcVendor {
    /// A vendor with fresh random keys.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty name, [`Error::Certificate`]
    /// when rcgen refuses the parameters.
    pub fn new(name: &str, shape: VendorShape) -> Result<Self, Error> {
        Self::from_rng(name, shape, StdRng::from_entropy())
    }

    /// A vendor whose keys, certificates and dies are all derived from
    /// `seed`: the same seed gives the same vendor.
    ///
    /// # Errors
    /// As [`IcVendor::new`].
    pub fn with_seed(name: &str, shape: VendorShape, seed: u64) -> Result<Self, Error> {
        Self::from_rng(name, shape, StdRng::seed_from_u64(seed))
    }

    pub(crate) fn from_rng(name: &str, shape: VendorShape, mut rng: StdRng) -> Result<Self, Error> {
        if name.trim().is_empty() || name.len() > 64 {
            return Err(Error::InvalidInput(
                "vendor name must be 1 to 64 characters".to_owned(),
            ));
        }
        let serial_prefix: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(4)
            .collect::<String>()
            .to_ascii_uppercase();
        let serial_prefix = if serial_prefix.is_empty() {
            "CHIP".to_owned()
        } else {
            serial_prefix
        };

        let root_key = new_key(&mut rng);
        let root_params = ca_params(name, &format!("{name} Root CA"), None, &mut rng);
        let root_der = root_params
            .self_signed(&RcgenKey::new(&root_key))
            .map_err(cert_err)?
            .der()
            .to_vec();
        let root = Ca {
            key: root_key,
            params: root_params,
            der: root_der,
        };

        let intermediate = match shape {
            VendorShape::RootOnly => None,
            VendorShape::WithIntermediate => {
                let key = new_key(&mut rng);
                let params = ca_params(name, &format!("{name} RoT Issuing CA"), Some(0), &mut rng);
                let root_signer = RcgenKey::new(&root.key);
                let issuer = Issuer::from_params(&root.params, &root_signer);
                let der = params
                    .signed_by(&RcgenKey::new(&key), &issuer)
                    .map_err(cert_err)?
                    .der()
                    .to_vec();
                Some(Ca { key, params, der })
            }
        };

        Ok(Self {
            name: name.to_owned(),
            serial_prefix,
            root,
            intermediate,
            next_die: 1,
            rng,
        })
    }

    /// Reseeds the source of this vendor's next dies, keeping its keys and
    /// certificates: a vendor made with [`IcVendor::with_seed`] (so that a
    /// provisioner can be configured with its root beforehand) can still
    /// manufacture fresh, never-seen dies in each run.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// The vendor's name, as production orders list allowed vendors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The vendor root certificate, DER: what the provisioner is configured
    /// with. It is never part of a die's attestation chain.
    pub fn root_der(&self) -> &[u8] {
        &self.root.der
    }

    /// The intermediate certificate, DER, for vendors that have one.
    pub fn intermediate_der(&self) -> Option<&[u8]> {
        self.intermediate.as_ref().map(|ca| ca.der.as_slice())
    }

    /// Manufactures the next die: a blank RoT with a fresh attestation key,
    /// an attestation certificate naming the next chip serial, and a
    /// transport key attested by the attestation key.
    ///
    /// # Errors
    /// [`Error::Certificate`] or [`Error::Proto`] if issuing fails.
    pub fn manufacture(&mut self) -> Result<SimulatedRot, Error> {
        self.die(None)
    }

    /// Manufactures a die whose on-device entropy source is seeded with
    /// `die_seed` instead of the vendor's: two dies made with the same
    /// `die_seed` have distinct attestation keys (distinct `rot_id`s) but
    /// generate the same identity key on the device — silicon with weak
    /// entropy (2.4.9.9), which the line must catch as a duplicate device
    /// key (invariant 2).
    ///
    /// # Errors
    /// As [`IcVendor::manufacture`].
    pub fn manufacture_weak_entropy(&mut self, die_seed: u64) -> Result<SimulatedRot, Error> {
        self.die(Some(die_seed))
    }

    /// One die; its on-device entropy is seeded with `die_seed`, or from the
    /// vendor's generator when `None`.
    fn die(&mut self, die_seed: Option<u64>) -> Result<SimulatedRot, Error> {
        let chip_serial = format!("{}-{:010}", self.serial_prefix, self.next_die);
        self.next_die += 1;
        let attestation_key = new_key(&mut self.rng);
        let transport_key = p256::SecretKey::random(&mut self.rng);
        let leaf = self.issue_attestation_cert(&chip_serial, &attestation_key)?;
        let mut chain = vec![leaf];
        if let Some(intermediate) = &self.intermediate {
            chain.push(intermediate.der.clone());
        }
        let attestation = SoftwareSigner::from_key(attestation_key);
        let certified_spki = attestation.public_key_der().to_vec();
        let die_seed = die_seed.unwrap_or_else(|| self.rng.gen());
        SimulatedRot::assemble(DieParts {
            vendor: self.name.clone(),
            chip_serial,
            attestation,
            certified_spki,
            chain,
            transport_key,
            rng: StdRng::seed_from_u64(die_seed),
        })
    }

    /// Certifies `key` as a die attestation key with `chip_serial` in the
    /// subject, from the intermediate if there is one, else the root.
    fn issue_attestation_cert(
        &mut self,
        chip_serial: &str,
        key: &p256::ecdsa::SigningKey,
    ) -> Result<Vec<u8>, Error> {
        let params = die_params(&self.name, chip_serial, &mut self.rng)?;
        let ca = self.intermediate.as_ref().unwrap_or(&self.root);
        let ca_signer = RcgenKey::new(&ca.key);
        let issuer = Issuer::from_params(&ca.params, &ca_signer);
        Ok(params
            .signed_by(&RcgenKey::new(key), &issuer)
            .map_err(cert_err)?
            .der()
            .to_vec())
    }
}

/// Parameters of a die attestation certificate (also used, self-signed, by
/// counterfeits that imitate one).
pub(crate) fn die_params(
    vendor: &str,
    chip_serial: &str,
    rng: &mut StdRng,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, vendor);
    dn.push(DnType::CommonName, format!("{vendor} RoT attestation key"));
    dn.push(
        DnType::CustomDnType(SERIAL_NUMBER_OID.to_vec()),
        DnValue::PrintableString(
            chip_serial
                .try_into()
                .map_err(|e| Error::InvalidInput(format!("chip serial {chip_serial:?}: {e}")))?,
        ),
    );
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial(rng));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    // IEEE 802.1AR: device certificates do not expire.
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn ca_params(
    vendor: &str,
    common_name: &str,
    path_len: Option<u8>,
    rng: &mut StdRng,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, vendor);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial(rng));
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    params.use_authority_key_identifier_extension = path_len.is_some();
    params
}

/// A positive 128-bit certificate serial.
pub(crate) fn random_serial(rng: &mut StdRng) -> SerialNumber {
    let mut bytes: [u8; 16] = rng.gen();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn cert_err(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}
