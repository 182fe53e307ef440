//! The labels of Trustline's HSM keys (docs/operations.md) and the set that
//! `ca init` creates.
//!
//! Every one of these but the seal key is a `CKA_TOKEN`, `CKA_SENSITIVE`,
//! non-extractable, non-modifiable private key that can only sign, with its
//! public key beside it under the same label and `CKA_ID` (invariant 3;
//! 2.4.5.20, 2.4.9.4; attribute table in [`crate::hsm::usage`]). The OEM
//! seal key is an AES-256 secret key, equally sensitive and
//! non-extractable, that can only encrypt and decrypt (issue 12 item 10).
//!
//! Tokens (issue 12.6, issue 13): the CA token holds the root (demo only),
//! the site intermediates and — until the hub exists — the OEM order and
//! voucher keys; the ledger's checkpoint key lives on a token of its own
//! ([`crate::ledger_key`]); the witness key on the hub's token.

/// The OEM root CA key (offline in production, in the HSM in the demo).
pub const OEM_ROOT: &str = "trustline-oem-root";
/// The site intermediate CA key that signs device certificates and CRLs
/// (generation 1; later generations append `-g<n>`, see
/// [`KeyLabels::intermediate_label`]).
pub const SITE_INTERMEDIATE: &str = "trustline-site-intermediate";
/// The OEM production-order signing key (2.4.14.22).
pub const OEM_ORDER: &str = "trustline-oem-order";
/// The OEM ownership-voucher signing key (2.4.14.7).
pub const OEM_VOUCHER: &str = "trustline-oem-voucher";
/// The OEM seal key (AES-256-GCM): seals the voucher entries the OEM voucher
/// key signs, so the ledger keeps them without holding an owner key in
/// clear (issue 12 item 10, invariant 6).
pub const OEM_SEAL: &str = "trustline-oem-seal";
/// The custody ledger's checkpoint signing key, on the ledger's own token
/// (never the CA's: [`crate::ledger_key`]).
pub const LEDGER_CHECKPOINT: &str = "trustline-ledger-checkpoint";
/// The service PKI's CA key (created by the transport layer, not `ca init`).
pub const SERVICE_CA: &str = "trustline-service-ca";
/// The hub's witness key (Ed25519, C2SP `cosignature/v1`; issue 13).
pub const WITNESS: &str = "trustline-witness";

/// The labels of the keys one CA uses. The defaults are the labels above;
/// other sets (for example the benchmark's throw-away keys) use a prefix so
/// they never collide with a real CA on the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLabels {
    /// The OEM root CA key.
    pub root: String,
    /// The site intermediate CA key of generation 1 (the base of every
    /// generation's label).
    pub intermediate: String,
    /// The OEM production-order key.
    pub order: String,
    /// The OEM voucher key.
    pub voucher: String,
    /// The OEM seal key (a secret key, not a signing key).
    pub seal: String,
}

impl Default for KeyLabels {
    fn default() -> Self {
        Self {
            root: OEM_ROOT.to_owned(),
            intermediate: SITE_INTERMEDIATE.to_owned(),
            order: OEM_ORDER.to_owned(),
            voucher: OEM_VOUCHER.to_owned(),
            seal: OEM_SEAL.to_owned(),
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
            seal: format!("{prefix}-seal"),
        }
    }

    /// Every signing key `ca init` creates, in creation order (it also
    /// creates the seal key, [`KeyLabels::seal`]).
    pub fn all(&self) -> [&str; 4] {
        [&self.root, &self.intermediate, &self.order, &self.voucher]
    }

    /// The label of the site intermediate key of `generation` (1 is the one
    /// `ca init` made; each rotation adds one): [`KeyLabels::intermediate`]
    /// for 1, `<intermediate>-g<n>` after.
    pub fn intermediate_label(&self, generation: u32) -> String {
        if generation <= 1 {
            self.intermediate.clone()
        } else {
            format!("{}-g{generation}", self.intermediate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_generations_have_distinct_labels() {
        let labels = KeyLabels::default();
        assert_eq!(labels.intermediate_label(1), SITE_INTERMEDIATE);
        assert_eq!(
            labels.intermediate_label(2),
            "trustline-site-intermediate-g2"
        );
        assert_ne!(labels.intermediate_label(2), labels.intermediate_label(3));
        assert!(!labels.all().contains(&LEDGER_CHECKPOINT));
        assert!(!labels.all().contains(&OEM_SEAL));
        assert_eq!(KeyLabels::with_prefix("b").seal, "b-seal");
    }
}
