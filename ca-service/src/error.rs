//! The crate's one error type and its one mapping to `tonic::Status`.
//!
//! Every PKCS#11 failure is turned into a precise variant here — never a
//! panic — so that an operator reading a refusal knows whether to install a
//! package, fix a PIN, restore a key or retry. Caller mistakes (bad CSR, bad
//! proof of possession, bad CRL request) are kept apart from server-side
//! conditions (HSM down, key missing), and only the former carry their detail
//! to the gRPC caller; server-side detail goes to the log.

use std::path::PathBuf;
use std::time::Duration;

/// Why the CA or its HSM layer refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- PKCS#11 module and token -------------------------------------------------
    /// No PKCS#11 module was found: none was configured and none of the usual
    /// SoftHSM2 locations exists. The CA cannot start until one is installed
    /// or configured.
    #[error(
        "no PKCS#11 module found (tried {}); install the `softhsm2` package \
         (apt-get install softhsm2 / dnf install softhsm) or name your HSM's module \
         with --pkcs11-module or TRUSTLINE_PKCS11_MODULE",
        display_paths(tried)
    )]
    ModuleNotFound {
        /// Every path that was looked at.
        tried: Vec<PathBuf>,
    },
    /// The module file exists but could not be loaded as a PKCS#11 library.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    ModuleLoad {
        /// The module's path.
        path: PathBuf,
        /// The loader's complaint.
        reason: String,
    },
    /// `C_Initialize` failed.
    #[error("cannot initialise PKCS#11 module {path}: {reason}")]
    ModuleInit {
        /// The module's path.
        path: PathBuf,
        /// The module's complaint.
        reason: String,
    },
    /// No initialised token carries this label. Tokens are found by label
    /// because slot ids change when tokens are initialised.
    #[error(
        "no PKCS#11 token labelled {label:?} (tokens present: {})",
        display_labels(available)
    )]
    TokenNotFound {
        /// The label asked for.
        label: String,
        /// Labels of the initialised tokens that were found.
        available: Vec<String>,
    },
    /// Several initialised tokens carry this label; refusing to guess.
    #[error("{count} PKCS#11 tokens are labelled {label:?}; token labels must be unique")]
    AmbiguousToken {
        /// The label asked for.
        label: String,
        /// How many tokens carry it.
        count: usize,
    },
    /// The token disappeared (removed, HSM rebooted) while in use.
    #[error("PKCS#11 token {label:?} is no longer present")]
    TokenNotPresent {
        /// The token's label.
        label: String,
    },
    /// The user PIN was refused by the token.
    #[error("the user PIN for token {label:?} is incorrect")]
    WrongPin {
        /// The token's label.
        label: String,
    },
    /// The token has locked the user PIN after too many failures.
    #[error("the user PIN for token {label:?} is locked")]
    PinLocked {
        /// The token's label.
        label: String,
    },
    /// Logging in failed for another reason (PIN not initialised, expired...).
    #[error("cannot log in to token {label:?}: {reason}")]
    Login {
        /// The token's label.
        label: String,
        /// The token's complaint.
        reason: String,
    },
    /// The PIN could not be read from its configured source (file or
    /// environment variable). The PIN itself is never part of the message.
    #[error("cannot read the HSM PIN from {source_name}: {reason}")]
    PinSource {
        /// Where the PIN was to come from (a path or a variable name).
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The token does not offer a mechanism this operation needs (for example
    /// an ECDH key-derivation function).
    #[error("the token does not support {mechanism}: {reason}")]
    MechanismUnsupported {
        /// The mechanism or parameter.
        mechanism: String,
        /// The token's complaint.
        reason: String,
    },

    // ----- Sessions -------------------------------------------------------------------
    /// A session was closed or became invalid and a fresh one could not
    /// replace it. Retrying later may succeed.
    #[error("HSM session closed during {operation}: {reason}")]
    SessionClosed {
        /// What was being done.
        operation: &'static str,
        /// The token's complaint.
        reason: String,
    },
    /// The session's login state was lost (e.g. the HSM was reset) and logging
    /// in again failed.
    #[error("HSM session is not logged in during {operation}")]
    NotLoggedIn {
        /// What was being done.
        operation: &'static str,
    },
    /// Every pooled session stayed busy for the whole checkout timeout.
    #[error("all {size} HSM sessions stayed busy for {waited:?}")]
    PoolExhausted {
        /// The pool size.
        size: usize,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The token refused to open another session.
    #[error("the token refused another session: {reason}")]
    SessionLimit {
        /// The token's complaint.
        reason: String,
    },

    // ----- Keys -------------------------------------------------------------------------
    /// No key object with this label (or URI) and class is on the token.
    #[error("no {class} key {label:?} on token {token:?}")]
    KeyNotFound {
        /// The key's label or URI.
        label: String,
        /// "private" or "public".
        class: &'static str,
        /// The token's label.
        token: String,
    },
    /// More than one key object matches; refusing to guess.
    #[error("{count} {class} keys match {label:?}; labels must be unique")]
    AmbiguousKey {
        /// The key's label or URI.
        label: String,
        /// "private" or "public".
        class: &'static str,
        /// How many matched.
        count: usize,
    },
    /// A key with this label already exists; keys are created once.
    #[error("a key labelled {label:?} already exists on the token")]
    KeyExists {
        /// The key's label.
        label: String,
    },
    /// The key is not an EC P-256 key.
    #[error("key {label:?} is not an EC P-256 key")]
    KeyNotP256 {
        /// The key's label.
        label: String,
    },
    /// The key is not an Ed25519 key (another key type, or another Edwards
    /// curve such as Ed448).
    #[error("key {label:?} is not an Ed25519 key: the token holds {found}")]
    KeyNotEd25519 {
        /// The key's label.
        label: String,
        /// What the token holds instead (key type or curve).
        found: String,
    },
    /// A token meant for one key (the ledger's checkpoint key) also holds
    /// other private keys: a host holding its PIN could use them. Refused so
    /// that a ledger host never logs into a CA token (issue 12.6).
    #[error(
        "token {token:?} holds other private keys besides {label:?} ({}); \
         the ledger's checkpoint key needs a token of its own",
        others.join(", ")
    )]
    TokenShared {
        /// The token's label.
        token: String,
        /// The key that should be alone.
        label: String,
        /// Labels of the other private keys found.
        others: Vec<String>,
    },
    /// A PKCS#11 URI is malformed or names something this CA cannot use.
    #[error("invalid PKCS#11 URI: {reason}")]
    InvalidUri {
        /// What is wrong with it.
        reason: String,
    },
    /// A PKCS#11 URI names a token other than the one this HSM session pool
    /// is logged in to.
    #[error("PKCS#11 URI names token {uri_token:?} but the pool is logged in to {token:?}")]
    UriTokenMismatch {
        /// The token the URI names.
        uri_token: String,
        /// The pool's token.
        token: String,
    },

    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {operation} failed: {reason}")]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// The module's complaint.
        reason: String,
    },

    // ----- CA state -----------------------------------------------------------------------
    /// `ca init` found CA keys on the token or CA certificates on disk
    /// already: keys are created once and never replaced silently.
    #[error(
        "the CA is already initialised ({} already exist); keys are created once — \
         use the existing CA or a fresh token and directory",
        existing.join(", ")
    )]
    AlreadyInitialized {
        /// What already exists (keys by label, files by path).
        existing: Vec<String>,
    },
    /// The CA's certificates are missing or unreadable: run `trustline ca init`.
    #[error("the CA is not initialised: {reason}")]
    NotInitialized {
        /// What is missing.
        reason: String,
    },
    /// A CA certificate on disk does not match the key of the same role in the
    /// HSM.
    #[error("the {role} certificate does not match the HSM key {label:?}")]
    CertificateKeyMismatch {
        /// "site intermediate" or "OEM root".
        role: &'static str,
        /// The key's label.
        label: String,
    },
    /// A site intermediate rotation step was refused: the certificate to
    /// install is not a CA certificate signed by this CA's root, names
    /// another organisation, or matches no pending request. Nothing was
    /// changed.
    #[error("intermediate rotation refused: {reason}")]
    RotationRefused {
        /// Why.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Building a certificate or CRL failed.
    #[error("cannot build {what}: {reason}")]
    Encoding {
        /// What was being built.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// A blocking worker running an HSM operation panicked or was cancelled.
    #[error("CA worker failed: {reason}")]
    WorkerFailed {
        /// The runtime's report.
        reason: String,
    },

    // ----- Caller input -------------------------------------------------------------------
    /// The request has no subject key (neither a possessed key nor a CSR).
    #[error("the request carries neither a public key with proof of possession nor a CSR")]
    MissingSubjectKey,
    /// The product serial cannot go into the subject's serialNumber attribute.
    #[error("invalid product serial: {reason}")]
    InvalidProductSerial {
        /// Why.
        reason: String,
    },
    /// The `rot_id` is not 64 lowercase hex characters.
    #[error("invalid rot_id {rot_id:?}: expected 64 lowercase hex characters")]
    InvalidRotId {
        /// The value sent (truncated).
        rot_id: String,
    },
    /// A public key is not a well-formed P-256 SubjectPublicKeyInfo.
    #[error("invalid {what}: {reason}")]
    InvalidPublicKey {
        /// Which key ("device public key", "transport public key").
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The proof of possession does not verify, or names another key, serial
    /// or RoT.
    #[error("proof of possession refused: {reason}")]
    ProofOfPossession {
        /// Why.
        reason: String,
    },
    /// A CSR is larger than the limit; refused before parsing.
    #[error("CSR of {len} bytes exceeds the limit of {max}")]
    CsrTooLarge {
        /// The CSR's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A CSR is not a well-formed PKCS#10 request.
    #[error("malformed CSR: {reason}")]
    CsrMalformed {
        /// Why.
        reason: String,
    },
    /// A CSR's key is not EC P-256 (another curve, RSA, Ed25519...).
    #[error("CSR key is not EC P-256: {key}")]
    CsrUnsupportedKey {
        /// The key algorithm (and curve) found.
        key: String,
    },
    /// A CSR is signed with an algorithm other than ECDSA with SHA-256.
    #[error("CSR signature algorithm {algorithm} is not ecdsa-with-SHA256")]
    CsrUnsupportedSignature {
        /// The algorithm found.
        algorithm: String,
    },
    /// A CSR's self-signature does not verify with its own key.
    #[error("CSR signature does not verify")]
    CsrBadSignature,
    /// A CRL request is inconsistent (times, serials).
    #[error("invalid CRL request: {reason}")]
    InvalidCrlRequest {
        /// Why.
        reason: String,
    },
    /// A voucher entry payload was refused (see `trustline_proto::voucher`).
    #[error("voucher entry refused: {0}")]
    VoucherEntry(String),
    /// A sealed voucher entry does not open under the OEM seal key for the
    /// device and index it is presented with: altered, truncated, or made
    /// for another device or entry (issue 12 item 10). The stored copy is
    /// lost; nothing is re-signed in its place.
    #[error("sealed voucher entry refused: {reason}")]
    SealBroken {
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whether the caller's input is at fault (as opposed to the CA or HSM).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            Error::MissingSubjectKey
                | Error::InvalidProductSerial { .. }
                | Error::InvalidRotId { .. }
                | Error::InvalidPublicKey { .. }
                | Error::ProofOfPossession { .. }
                | Error::CsrTooLarge { .. }
                | Error::CsrMalformed { .. }
                | Error::CsrUnsupportedKey { .. }
                | Error::CsrUnsupportedSignature { .. }
                | Error::CsrBadSignature
                | Error::InvalidCrlRequest { .. }
                | Error::VoucherEntry(_)
                | Error::SealBroken { .. }
        )
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn display_labels(labels: &[String]) -> String {
    if labels.is_empty() {
        return "none".to_owned();
    }
    labels
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one mapping from CA errors to gRPC statuses.
///
/// Caller errors carry their message; server-side failures carry a short
/// class message and are logged with their detail, so that module paths and
/// token internals do not reach callers.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::MissingSubjectKey
            | Error::InvalidProductSerial { .. }
            | Error::InvalidRotId { .. }
            | Error::InvalidPublicKey { .. }
            | Error::CsrTooLarge { .. }
            | Error::CsrMalformed { .. }
            | Error::CsrUnsupportedKey { .. }
            | Error::CsrUnsupportedSignature { .. }
            | Error::InvalidCrlRequest { .. }
            | Error::VoucherEntry(_) => Code::InvalidArgument,
            Error::SealBroken { .. } => Code::DataLoss,
            Error::ProofOfPossession { .. } | Error::CsrBadSignature => Code::PermissionDenied,
            Error::SessionClosed { .. }
            | Error::NotLoggedIn { .. }
            | Error::TokenNotPresent { .. }
            | Error::PoolExhausted { .. }
            | Error::SessionLimit { .. } => Code::Unavailable,
            Error::AlreadyInitialized { .. } | Error::KeyExists { .. } => Code::AlreadyExists,
            Error::MechanismUnsupported { .. } => Code::Unimplemented,
            Error::ModuleNotFound { .. }
            | Error::ModuleLoad { .. }
            | Error::ModuleInit { .. }
            | Error::TokenNotFound { .. }
            | Error::AmbiguousToken { .. }
            | Error::WrongPin { .. }
            | Error::PinLocked { .. }
            | Error::Login { .. }
            | Error::PinSource { .. }
            | Error::KeyNotFound { .. }
            | Error::AmbiguousKey { .. }
            | Error::KeyNotP256 { .. }
            | Error::KeyNotEd25519 { .. }
            | Error::TokenShared { .. }
            | Error::InvalidUri { .. }
            | Error::UriTokenMismatch { .. }
            | Error::NotInitialized { .. }
            | Error::CertificateKeyMismatch { .. }
            | Error::RotationRefused { .. } => Code::FailedPrecondition,
            Error::Pkcs11 { .. }
            | Error::Io { .. }
            | Error::Encoding { .. }
            | Error::WorkerFailed { .. } => Code::Internal,
        };
        if e.is_caller_error() {
            return tonic::Status::new(code, e.to_string());
        }
        tracing::error!(error = %e, "CA request failed");
        let message = match code {
            Code::Unavailable => "the CA's HSM is temporarily unavailable; retry",
            Code::AlreadyExists => "the CA is already initialised",
            Code::Unimplemented => "the CA's HSM does not support this operation",
            Code::FailedPrecondition => "the CA is not configured correctly (see the CA log)",
            _ => "internal CA error (see the CA log)",
        };
        tonic::Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_errors_carry_their_message_and_server_errors_do_not_leak() {
        let status = tonic::Status::from(Error::CsrTooLarge {
            len: 5000,
            max: 4096,
        });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("5000"), "{}", status.message());

        let status = tonic::Status::from(Error::CsrBadSignature);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);

        let status = tonic::Status::from(Error::ModuleLoad {
            path: "/secret/path/libvendor.so".into(),
            reason: "boom".to_owned(),
        });
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            !status.message().contains("/secret/path"),
            "{}",
            status.message()
        );

        let status = tonic::Status::from(Error::PoolExhausted {
            size: 4,
            waited: Duration::from_secs(30),
        });
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let status = tonic::Status::from(Error::AlreadyInitialized { existing: vec![] });
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
    }
}
