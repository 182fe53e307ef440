//! The labels of Trustline's HSM keys (docs/operations.md) and the set that
//! `ca init` creates.
//!
//! Every one of these is a `CKA_TOKEN`, `CKA_SENSITIVE`, non-extractable
//! P-256 private key with its public key beside it under the same label and
//! `CKA_ID` (invariant 3; 2.4.5.20, 2.4.9.4).

/// The OEM root CA key (offline in production, in the HSM in the demo).
pub const OEM_ROOT: &str = "trustline-oem-root";
/// The site intermediate CA key that signs device certificates and CRLs.
pub const SITE_INTERMEDIATE: &str = "trustline-site-intermediate";
/// The OEM production-order signing key (2.4.14.22).
pub const OEM_ORDER: &str = "trustline-oem-order";
/// The OEM ownership-voucher signing key (2.4.14.7).
pub const OEM_VOUCHER: &str = "trustline-oem-voucher";
/// The custody ledger's checkpoint signing key.
pub const LEDGER_CHECKPOINT: &str = "trustline-ledger-checkpoint";
/// The service PKI's CA key (created by the transport layer, not `ca init`).
pub const SERVICE_CA: &str = "trustline-service-ca";

/// The labels of the keys one CA uses. The defaults are the labels above;
/// other sets (for example the benchmark's throw-away keys) use a prefix so
/// they never collide with a real CA on the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLabels {
    /// The OEM root CA key.
    pub root: String,
    /// The site intermediate CA key.
    pub intermediate: String,
    /// The OEM production-order key.
    pub order: String,
    /// The OEM voucher key.
    pub voucher: String,
    /// The ledger checkpoint key.
    pub checkpoint: String,
}

impl Default for KeyLabels {
    fn default() -> Self {
        Self {
            root: OEM_ROOT.to_owned(),
            intermediate: SITE_INTERMEDIATE.to_owned(),
            order: OEM_ORDER.to_owned(),
            voucher: OEM_VOUCHER.to_owned(),
            checkpoint: LEDGER_CHECKPOINT.to_owned(),
        }
    }
}

impl KeyLabels {
    /// Labels `<prefix>-root`, `<prefix>-intermediate`, ... .
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            root: format!("{prefix}-root"),
            intermediate: format!("{prefix}-intermediate"),
            order: format!("{prefix}-order"),
            voucher: format!("{prefix}-voucher"),
            checkpoint: format!("{prefix}-checkpoint"),
        }
    }

    /// Every label, in creation order.
    pub fn all(&self) -> [&str; 5] {
        [
            &self.root,
            &self.intermediate,
            &self.order,
            &self.voucher,
            &self.checkpoint,
        ]
    }
}
