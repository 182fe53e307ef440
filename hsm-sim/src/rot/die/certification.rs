//! What the identity key signs at the factory and in the field — proofs of
//! possession, CSRs, live identity proofs — and the certification the device
//! stores (its chain and the voucher it binds).

use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue};
use trustline_proto::signer::Signer;
use trustline_proto::statement::sign;
use trustline_proto::v1;
use trustline_proto::voucher::{cert_chain_hash, Voucher};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{check_challenge, check_serial, SimulatedRot, MAX_STORED_CHAIN};
use crate::rot::keys::RcgenKey;
use crate::Error;

impl SimulatedRot {
    /// Proves possession of the identity key for a certificate request for
    /// `serial` (signed by the identity key).
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn proof_of_possession(
        &self,
        serial: &str,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement, Error> {
        check_challenge(challenge)?;
        check_serial(serial)?;
        let identity = self.identity()?;
        Ok(sign(
            identity,
            &v1::ProofOfPossession {
                rot_id: self.rot_id.clone(),
                serial: serial.to_owned(),
                device_public_key: identity.public_key_der().to_vec(),
                challenge: challenge.to_vec(),
            },
        )?)
    }

    /// A PKCS#10 CSR (DER) for `serial`, signed by the identity key; the
    /// subject carries the serial as X.520 serialNumber.
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`],
    /// [`Error::Certificate`].
    pub fn csr(&self, serial: &str) -> Result<Vec<u8>, Error> {
        check_serial(serial)?;
        let identity = self.identity()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let value = serial
            .try_into()
            .map(DnValue::PrintableString)
            .unwrap_or_else(|_| DnValue::Utf8String(serial.to_owned()));
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), value);
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&RcgenKey::new(identity.key()))
            .map_err(crate::rot::vendor::cert_err)?;
        Ok(csr.der().to_vec())
    }

    /// Answers a live challenge with the identity key (onboarding, physical
    /// inspection, 2.4.14.10).
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::InvalidInput`].
    pub fn identity_proof(&self, challenge: &[u8]) -> Result<v1::SignedStatement, Error> {
        check_challenge(challenge)?;
        Ok(sign(
            self.identity()?,
            &v1::IdentityProof {
                rot_id: self.rot_id.clone(),
                challenge: challenge.to_vec(),
            },
        )?)
    }

    /// Stores the certificate chain (leaf first) and the ownership voucher
    /// returned by `Certify`, and binds the voucher header with the identity
    /// key (as FDO binds it with a device secret). Returns the bound voucher.
    /// The device refuses a chain whose leaf does not certify its identity
    /// key, and a voucher that names another device or chain. Storing the
    /// same certification again (a retry) returns the same voucher.
    ///
    /// # Errors
    /// [`Error::NotPersonalised`], [`Error::WrongCertification`],
    /// [`Error::InvalidInput`], [`Error::Proto`] (voucher decoding).
    pub fn store_certification(
        &mut self,
        chain: &[Vec<u8>],
        voucher: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let identity = self.identity()?;
        if chain.is_empty() || chain.len() > MAX_STORED_CHAIN {
            return Err(Error::InvalidInput(format!(
                "certificate chain must hold 1 to {MAX_STORED_CHAIN} certificates"
            )));
        }
        let (_, leaf) = X509Certificate::from_der(&chain[0])
            .map_err(|e| Error::WrongCertification(format!("leaf does not parse: {e}")))?;
        if leaf.public_key().raw != identity.public_key_der() {
            return Err(Error::WrongCertification(
                "leaf certificate names another key".to_owned(),
            ));
        }
        let mut voucher = Voucher::decode(voucher)?;
        if voucher.header().rot_id != self.rot_id {
            return Err(Error::WrongCertification(
                "voucher names another device".to_owned(),
            ));
        }
        if voucher.header().cert_chain_sha256 != cert_chain_hash(chain) {
            return Err(Error::WrongCertification(
                "voucher names another certificate chain".to_owned(),
            ));
        }
        match voucher.device_binding() {
            Some(_) => voucher.verify_device_binding(chain, identity.public_key_der())?,
            None => voucher.bind_to_device(identity)?,
        }
        let bound = voucher.encode();
        self.certificate_chain = chain.to_vec();
        self.voucher = Some(bound.clone());
        Ok(bound)
    }

    /// The stored certificate chain (empty before certification).
    pub fn certificate_chain(&self) -> &[Vec<u8>] {
        &self.certificate_chain
    }

    /// The stored (device-bound) voucher.
    pub fn voucher(&self) -> Option<&[u8]> {
        self.voucher.as_deref()
    }
}
