//! The Trustline wire contract.
//!
//! Everything that crosses a process boundary is defined here: the gRPC
//! services and messages of package `trustline.v1` (generated from
//! `proto/trustline/v1/*.proto`), the signed-statement format that devices,
//! owners and the OEM use ([`statement`]), how a root of trust is named
//! ([`identity`]), and the [`signer::Signer`] trait that puts every signing key
//! — HSM-backed in production, software in tests — behind one interface.
//!
//! Generated prost types are a wire boundary: services convert them into
//! domain types at the edge.

#![forbid(unsafe_code)]

pub mod identity;
pub mod signer;
pub mod statement;

/// Generated code for package `trustline.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("trustline.v1");
}

/// The encoded `FileDescriptorSet` of every Trustline proto, for gRPC
/// reflection and for tests that enumerate every RPC.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("trustline_descriptor");

/// Why a statement, key or signature was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A statement body is larger than [`statement::MAX_BODY_LEN`]; refused
    /// before any parsing.
    #[error("statement body of {len} bytes exceeds the limit of {max}")]
    BodyTooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A public key is not a well-formed P-256 SubjectPublicKeyInfo (wrong
    /// algorithm, wrong curve, bad encoding).
    #[error("{0}")]
    NotP256(String),
    /// A signature does not verify; names the statement type it was for.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// The signed body does not decode as the expected message.
    #[error("{domain} does not decode: {source}")]
    Decode {
        /// The statement type.
        domain: &'static str,
        /// The decoder's complaint.
        source: prost::DecodeError,
    },
    /// A private key could not be loaded.
    #[error("{0}")]
    KeyFormat(String),
    /// A signer could not sign.
    #[error("signer failed: {0}")]
    Signer(String),
}
