//! The servers' client-certificate verifier: rustls' WebPKI verifier (chain
//! to the service CA, validity, signatures), then two checks of our own:
//! the leaf must carry EKU clientAuth — WebPKI accepts a leaf without any
//! EKU, and a server certificate (serverAuth only) must never pass as a
//! client (issue 12.5) — and its serial must not be on the current CRL
//! (issue 12.7; the guard checks the CRL again on every request).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::revocation::Revocations;

/// See the module documentation.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) revocations: Option<Arc<Revocations>>,
}

/// Whether the certificate's EKU extension is present and names clientAuth.
pub(crate) fn has_client_auth(der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth)
}

/// The serial number bytes of a certificate (empty when it does not parse).
pub(crate) fn serial(der: &[u8]) -> Vec<u8> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.raw_serial().to_vec())
        .unwrap_or_default()
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !has_client_auth(end_entity) {
            tracing::info!(
                "refused a client certificate without EKU clientAuth (a server certificate?)"
            );
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            ));
        }
        if let Some(revocations) = &self.revocations {
            if let Err(reason) = revocations.check(&serial(end_entity)) {
                tracing::info!(%reason, "refused a revoked client certificate");
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
