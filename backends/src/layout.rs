//! Where a site's data lives inside its data directory: the directory
//! names every crate that reads or writes a data directory uses
//! (`docs/operations.md` describes the whole layout).
//!
//! ```text
//! <data>/
//!   trustline.toml   configuration (optional)
//!   ca/              CA certificates and the OEM public keys
//!   ledger/          custody ledger segments, index, checkpoints, ledger key
//!   pki/             the service CA and every service and client credential
//!   vendors/         IC-vendor root certificates, <name>.pem
//!   lockouts/        lockout state per server process, <server>.json
//!   claim.key        the site's claim-nonce key (32 random bytes, 0600)
//!   hsm/             the embedded SoftHSM2 token (demo and laptops only)
//! ```

/// The configuration file.
pub const CONFIG_FILE: &str = "trustline.toml";
/// The CA directory.
pub const CA_DIR: &str = "ca";
/// The ledger directory.
pub const LEDGER_DIR: &str = "ledger";
/// The service PKI directory (defined by the transport, which reads and
/// writes the credentials in it).
pub use transport::pki::PKI_DIR;
/// The IC-vendor roots directory (the default of `vendor_roots_dir`).
pub const VENDORS_DIR: &str = "vendors";
/// Lockout state of each server process (`<server>.json`).
pub const LOCKOUTS_DIR: &str = "lockouts";
/// The site's claim-nonce key, shared by every provisioner of the site.
pub const CLAIM_KEY_FILE: &str = "claim.key";
/// The ledger checkpoint public key.
pub const LEDGER_KEY_FILE: &str = "ledger/ledger-key.pub.pem";
/// The embedded SoftHSM2 token (demo and laptop default).
pub const EMBEDDED_HSM_DIR: &str = "hsm";
