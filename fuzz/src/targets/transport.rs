//! Caller identity from a client certificate: `transport::Caller`'s
//! parsing of the verified leaf certificate's subjectAltName caller URI
//! (2.4.13.25). The TLS layer verifies the chain first, but the parser
//! still reads bytes a client chose.

use rustls_pki_types::CertificateDer;
use transport::Caller;

use crate::input::selector;
use crate::Outcome;

/// Selector: the rest is a leaf certificate, DER.
pub const CERTIFICATE: u8 = 0;
/// Selector: the rest is a caller URI.
pub const URI: u8 = 1;

/// The `caller_identity` harness.
pub fn caller_identity(data: &[u8]) -> Outcome {
    let Some((sel, rest)) = selector(data) else {
        return Outcome::Refused;
    };
    let caller = if sel % 2 == CERTIFICATE {
        let from_chain = Caller::from_verified_chain(&[CertificateDer::from(rest)]);
        let from_cert = Caller::from_certificate(rest);
        assert_eq!(from_chain.as_ref().ok(), from_cert.as_ref().ok());
        from_cert
    } else {
        match std::str::from_utf8(rest) {
            Ok(uri) => Caller::from_uri(uri),
            Err(_) => return Outcome::Refused,
        }
    };
    let Ok(caller) = caller else {
        return Outcome::Refused;
    };
    // A caller's URI names it exactly.
    let uri = caller.to_uri();
    assert_eq!(Caller::from_uri(&uri).ok().as_ref(), Some(&caller));
    assert_eq!(
        caller.id().split('/').count(),
        3,
        "site or name holds a '/'"
    );
    Outcome::Accepted
}
