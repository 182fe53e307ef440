//! The Trustline wire contract.
//!
//! Everything that crosses a process boundary is defined here: the gRPC
//! services and messages of package `trustline.v1` (generated from
//! `proto/trustline/v1/*.proto`), the signed-statement format that devices,
//! owners and the OEM use ([`statement`]), strict ECDSA P-256 (canonical
//! keys, low-S only: [`ecdsa`]), how a root of trust is named
//! ([`identity`]), the witness's `cosignature/v1` lines both trust domains
//! check ([`cosignature`]), the ownership voucher format ([`voucher`]) and its FIDO
//! Device Onboard 1.1 form ([`fdo`]), the framed station ↔ device protocol
//! of `trustline.device.v1` ([`device`]), the refusal reasons services
//! attach to statuses ([`refusal`]), and the [`signer::Signer`] and
//! [`signer::Ed25519Signer`] traits that put every signing key —
//! HSM-backed in production, software in tests — behind one interface.
//!
//! Key design decision: generated prost types are a wire boundary —
//! services convert them into domain types at the edge, and everything
//! both sides of a boundary must agree on (formats, names, reasons) lives
//! here once.

#![forbid(unsafe_code)]

pub mod cosignature;
pub mod device;
pub mod ecdsa;
pub mod fdo;
pub mod identity;
pub mod refusal;
pub mod signer;
pub mod statement;
pub mod voucher;

/// The subjectAltName URI prefix that names a device's `rot_id` in its
/// certificate (`urn:trustline:rot:<rot_id>`): the CA writes it, the audit
/// and physical inspection read it. (`ca_service::ca::ROT_URI_PREFIX` is
/// the same string; a test in `tests/` holds them equal.)
pub const ROT_URI_PREFIX: &str = "urn:trustline:rot:";

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
    /// A signed note or its `cosignature/v1` line is malformed, or holds no
    /// valid cosignature by the expected witness key ([`cosignature`]).
    /// Bad peer data; nothing was accepted.
    #[error("cosigned note: {0}")]
    Note(String),
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
    /// An encoded voucher, header, entry or binding is larger than its limit
    /// (see [`voucher::MAX_VOUCHER_LEN`]); refused before parsing.
    #[error("voucher part of {len} bytes exceeds the limit of {max}")]
    VoucherTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A voucher (or one of its parts) does not decode strictly: wrong CBOR
    /// type or length, trailing or non-canonical bytes, wrong COSE algorithm
    /// or content type. Bad peer data; nothing was verified.
    #[error("malformed voucher: {0}")]
    VoucherMalformed(String),
    /// The voucher or its header has a version this code does not know.
    #[error("unsupported voucher version {0}")]
    VoucherVersion(u64),
    /// A voucher already holds [`voucher::MAX_ENTRIES`] entries (or claims
    /// to hold more).
    #[error("voucher has more than {max} entries")]
    VoucherTooManyEntries {
        /// The limit.
        max: usize,
    },
    /// The voucher header names a different manufacturer key from the one
    /// the verifier trusts.
    #[error("voucher names a different manufacturer key")]
    VoucherManufacturerMismatch,
    /// Caller misuse: a key that is not the voucher's current owner tried to
    /// extend it. Nothing was signed.
    #[error("the signing key is not the voucher's current owner")]
    VoucherNotCurrentOwner,
    /// An entry's header hash does not match the header: the header was
    /// altered, or the entry belongs to another voucher.
    #[error("voucher entry {entry} does not match the header")]
    VoucherHeaderMismatch {
        /// Index of the entry.
        entry: usize,
    },
    /// An entry does not hash its predecessor: entries were reordered,
    /// removed or inserted.
    #[error("voucher entry {entry} does not follow the entry before it")]
    VoucherBrokenChain {
        /// Index of the entry.
        entry: usize,
    },
    /// An entry names (by key id) a signer other than the owner before it.
    #[error("voucher entry {entry} is not signed by the owner before it")]
    VoucherWrongSigner {
        /// Index of the entry.
        entry: usize,
    },
    /// An entry's signature does not verify under the owner before it: the
    /// entry was forged or altered.
    #[error("bad signature on voucher entry {entry}")]
    VoucherBadSignature {
        /// Index of the entry.
        entry: usize,
    },
    /// The voucher holds fewer entries than the transfers recorded for the
    /// device: it was cut back to an earlier owner.
    #[error("voucher has {found} entries but {recorded} transfers are recorded")]
    VoucherTruncated {
        /// Transfers recorded.
        recorded: usize,
        /// Entries in the voucher.
        found: usize,
    },
    /// The voucher header does not describe the presented certificate chain.
    #[error("voucher header does not match the device certificate chain")]
    VoucherChainMismatch,
    /// The device has not bound the voucher header.
    #[error("voucher header is not bound by the device")]
    VoucherNotBound,
    /// The device binding does not verify under the device key.
    #[error("voucher device binding does not verify")]
    VoucherBadBinding,
    /// Caller misuse: the voucher already carries a device binding.
    #[error("voucher is already bound to its device")]
    VoucherAlreadyBound,
    /// A device-protocol frame header announces an empty frame or one larger
    /// than [`device::MAX_FRAME_LEN`]; nothing was allocated. The stream is
    /// out of step and the session must end.
    #[error("frame of {len} bytes is outside 1 to {max}")]
    FrameLength {
        /// The announced length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// The link ended inside a frame (the peer died or the line dropped).
    #[error("link ended inside a frame: {got} of {expected} bytes")]
    FrameTruncated {
        /// Bytes the frame part needed.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// Reading or writing the link failed.
    #[error("device link i/o: {0}")]
    FrameIo(std::io::Error),
    /// A frame's body is not the expected device-protocol message.
    #[error("frame does not decode: {0}")]
    FrameDecode(prost::DecodeError),
    /// An FDO voucher, header or entry is larger than its limit (see
    /// [`fdo::MAX_VOUCHER_LEN`]); refused before parsing.
    #[error("fdo voucher part of {len} bytes exceeds the limit of {max}")]
    FdoTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An FDO voucher (or part) does not decode strictly: wrong CBOR type
    /// or length, trailing, indefinite-length or non-canonical bytes, a
    /// malformed COSE_Sign1. Bad peer data; nothing was verified.
    #[error("malformed fdo voucher: {0}")]
    FdoMalformed(String),
    /// `OVProtVer` or `OVHProtVer` is not 101 (FDO 1.1).
    #[error("unsupported fdo protocol version {0} (expected 101)")]
    FdoVersion(u64),
    /// Valid FDO that Trustline does not take: a key that is not SECP256R1
    /// in X509 encoding, a hash other than SHA-256 / HMAC-SHA256, a COSE
    /// algorithm other than ES256 or a critical COSE parameter, an EPID
    /// device (null certificate chain).
    #[error("unsupported fdo voucher: {0}")]
    FdoUnsupported(String),
    /// An FDO voucher holds (or would hold) more than [`fdo::MAX_ENTRIES`]
    /// entries.
    #[error("fdo voucher has more than {max} entries")]
    FdoTooManyEntries {
        /// The limit.
        max: usize,
    },
    /// The text is not PEM, or holds no (or more than one) `OWNERSHIP
    /// VOUCHER` block.
    #[error("fdo voucher pem: {0}")]
    FdoPem(String),
    /// The FDO header names a different manufacturer key from the one the
    /// verifier trusts.
    #[error("fdo voucher names a different manufacturer key")]
    FdoManufacturerMismatch,
    /// `OVDevCertChainHash` is not the hash of `OVDevCertChain`.
    #[error("fdo voucher header does not match its device certificate chain")]
    FdoChainMismatch,
    /// The header HMAC does not verify under the device secret, or the
    /// header or HMAC is not the one recorded when the device computed it.
    #[error("fdo voucher header hmac does not verify")]
    FdoBadHeaderHmac,
    /// An entry's `OVEHashHdrInfo` is not the hash of the header's GUID and
    /// device info: the header was altered, or the entry belongs to another
    /// voucher.
    #[error("fdo voucher entry {entry} does not match the header")]
    FdoHeaderMismatch {
        /// Index of the entry.
        entry: usize,
    },
    /// An entry's `OVEHashPrevEntry` is not the hash of the entry before it
    /// (for entry 0: of the header and its HMAC): entries were reordered,
    /// removed or inserted, or the header was altered.
    #[error("fdo voucher entry {entry} does not follow the entry before it")]
    FdoBrokenChain {
        /// Index of the entry.
        entry: usize,
    },
    /// An entry's signature does not verify under the owner before it: the
    /// entry was forged or altered, or signed by someone else.
    #[error("bad signature on fdo voucher entry {entry}")]
    FdoBadSignature {
        /// Index of the entry.
        entry: usize,
    },
    /// Caller misuse: a key that is not the FDO voucher's current owner
    /// tried to extend it. Nothing was signed.
    #[error("the signing key is not the fdo voucher's current owner")]
    FdoNotCurrentOwner,
    /// An FDO voucher and a Trustline voucher (or the data converted
    /// between them) do not describe the same device and transfers.
    #[error("fdo and trustline vouchers do not match: {0}")]
    FdoTrustlineMismatch(String),
}
