//! `ca init`: the CA's keys on the token and its certificates on disk,
//! made once.
//!
//! The CA token gets the OEM root (the demo's; offline in production), the
//! site intermediate (generation 1), the OEM order and the OEM voucher keys
//! and the OEM seal key (AES-256-GCM, issue 12 item 10) — no ledger
//! checkpoint key: that lives on the ledger's own token
//! ([`crate::ledger_key`], issue 12.6). That is the single-box layout.
//!
//! In the two-domain layout (issue 13) the OEM's hub runs [`init_oem`] —
//! root, order, voucher and seal keys, no intermediate — and each site makes
//! its intermediate key and a request on its own token
//! ([`super::request_first_intermediate`]), which the root signs
//! ([`super::sign_intermediate_request`]).

use std::path::{Path, PathBuf};

use rcgen::Issuer;

use super::files::{
    intermediate_path, write_atomically, write_pem, INTERMEDIATE_CERT_FILE, ORDER_KEY_FILE,
    ROOT_CERT_FILE, VOUCHER_KEY_FILE,
};
use super::profile::{ca_params, check_name, intermediate_dn, rcgen_failure, root_dn};
use crate::hsm::{Hsm, HsmSigner};
use crate::keys::KeyLabels;
use crate::Error;

/// What `ca init` names the CA after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// The OEM's name (subject O of every certificate).
    pub organization: String,
    /// The factory site (subject OU of the intermediate).
    pub site: String,
    /// The key labels to create.
    pub labels: KeyLabels,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            organization: "Trustline OEM".to_owned(),
            site: "site-1".to_owned(),
            labels: KeyLabels::default(),
        }
    }
}

/// What `ca init` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The OEM root certificate, PEM.
    pub root_pem: String,
    /// The site intermediate certificate, PEM (empty from [`init_oem`]).
    pub intermediate_pem: String,
    /// The OEM order key, PEM SubjectPublicKeyInfo.
    pub order_key_pem: String,
    /// The OEM voucher key, PEM SubjectPublicKeyInfo.
    pub voucher_key_pem: String,
    /// The files written.
    pub files: Vec<PathBuf>,
    /// The keys created on the token.
    pub keys: Vec<String>,
}

/// Creates the CA: generates the OEM root, site intermediate, OEM order and
/// OEM voucher keys and the OEM seal key on the token (each once), issues the root and
/// intermediate (generation 1) certificates, and writes them and the order
/// and voucher public keys as PEM into `ca_dir`.
///
/// Refuses to run on a token or directory that already holds any of them;
/// if anything fails midway, the keys and files it made are removed again.
///
/// # Errors
/// [`Error::AlreadyInitialized`] naming what exists; HSM, encoding and I/O
/// errors otherwise.
pub fn init(hsm: &Hsm, options: &InitOptions, ca_dir: &Path) -> Result<InitReport, Error> {
    check_name("organization", &options.organization)?;
    check_name("site", &options.site)?;
    let labels = &options.labels;
    let mut existing = Vec::new();
    for label in labels.all() {
        if hsm.key_exists(label)? {
            existing.push(format!("key {label:?}"));
        }
    }
    if hsm.secret_key_exists(&labels.seal)? {
        existing.push(format!("key {:?}", labels.seal));
    }
    for file in [ROOT_CERT_FILE, INTERMEDIATE_CERT_FILE] {
        let path = ca_dir.join(file);
        if path.exists() {
            existing.push(format!("file {}", path.display()));
        }
    }
    if !existing.is_empty() {
        return Err(Error::AlreadyInitialized { existing });
    }
    undo_on_error(hsm, |keys, written| {
        init_inner(hsm, options, ca_dir, keys, written)
    })
}

/// Runs `make`; if it fails, removes the keys and files it made.
fn undo_on_error(
    hsm: &Hsm,
    make: impl FnOnce(&mut Vec<String>, &mut Vec<PathBuf>) -> Result<InitReport, Error>,
) -> Result<InitReport, Error> {
    let mut created_keys = Vec::new();
    let mut written = Vec::new();
    let result = make(&mut created_keys, &mut written);
    if result.is_err() {
        for label in &created_keys {
            if let Err(e) = hsm.destroy_key(label) {
                tracing::error!(label, error = %e, "could not remove a key after a failed init");
            }
        }
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// Creates the OEM's keys at the hub (issue 13): the OEM root, OEM order
/// and OEM voucher keys and the OEM seal key (issue 12 item 10) on the token (each once) and the root certificate,
/// written with the order and voucher public keys into `ca_dir` — no site
/// intermediate. Refuses a token or directory that holds any of them;
/// undone on failure like [`init`].
///
/// # Errors
/// As [`init`].
pub fn init_oem(hsm: &Hsm, options: &InitOptions, ca_dir: &Path) -> Result<InitReport, Error> {
    check_name("organization", &options.organization)?;
    let labels = &options.labels;
    let mut existing = Vec::new();
    for label in [&labels.root, &labels.order, &labels.voucher] {
        if hsm.key_exists(label)? {
            existing.push(format!("key {label:?}"));
        }
    }
    if hsm.secret_key_exists(&labels.seal)? {
        existing.push(format!("key {:?}", labels.seal));
    }
    let root_path = ca_dir.join(ROOT_CERT_FILE);
    if root_path.exists() {
        existing.push(format!("file {}", root_path.display()));
    }
    if !existing.is_empty() {
        return Err(Error::AlreadyInitialized { existing });
    }
    undo_on_error(hsm, |created_keys, written| {
        let mut generate = |label: &str| -> Result<HsmSigner, Error> {
            let signer = hsm.generate_key(label)?;
            created_keys.push(label.to_owned());
            Ok(signer)
        };
        let root = generate(&labels.root)?;
        let order = generate(&labels.order)?;
        let voucher = generate(&labels.voucher)?;
        hsm.generate_seal_key(&labels.seal)?;
        created_keys.push(labels.seal.clone());
        let root_cert = ca_params(root_dn(&options.organization), 1, false)
            .self_signed(&root)
            .map_err(|e| rcgen_failure("the OEM root certificate", e))?;
        std::fs::create_dir_all(ca_dir).map_err(|e| Error::io("creating", ca_dir, e))?;
        let report = InitReport {
            root_pem: root_cert.pem(),
            intermediate_pem: String::new(),
            order_key_pem: order.public_key_pem(),
            voucher_key_pem: voucher.public_key_pem(),
            files: Vec::new(),
            keys: created_keys.clone(),
        };
        for (file, text) in [
            (ROOT_CERT_FILE, &report.root_pem),
            (ORDER_KEY_FILE, &report.order_key_pem),
            (VOUCHER_KEY_FILE, &report.voucher_key_pem),
        ] {
            let path = ca_dir.join(file);
            write_atomically(&path, text.as_bytes())?;
            written.push(path);
        }
        tracing::info!(dir = %ca_dir.display(), "OEM root, order and voucher keys initialised");
        Ok(InitReport {
            files: written.clone(),
            ..report
        })
    })
}

fn init_inner(
    hsm: &Hsm,
    options: &InitOptions,
    ca_dir: &Path,
    created_keys: &mut Vec<String>,
    written: &mut Vec<PathBuf>,
) -> Result<InitReport, Error> {
    let labels = &options.labels;
    let mut generate = |label: &str| -> Result<HsmSigner, Error> {
        let signer = hsm.generate_key(label)?;
        created_keys.push(label.to_owned());
        Ok(signer)
    };
    let root = generate(&labels.root)?;
    let intermediate = generate(&labels.intermediate)?;
    let order = generate(&labels.order)?;
    let voucher = generate(&labels.voucher)?;
    hsm.generate_seal_key(&labels.seal)?;
    created_keys.push(labels.seal.clone());

    let org = &options.organization;
    let root_params = ca_params(root_dn(org), 1, false);
    let root_cert = root_params
        .self_signed(&root)
        .map_err(|e| rcgen_failure("the OEM root certificate", e))?;
    let root_issuer = Issuer::new(root_params, &root);

    let int_params = ca_params(intermediate_dn(org, &options.site, 1), 0, true);
    let int_cert = int_params
        .signed_by(&intermediate, &root_issuer)
        .map_err(|e| rcgen_failure("the site intermediate certificate", e))?;

    std::fs::create_dir_all(ca_dir).map_err(|e| Error::io("creating", ca_dir, e))?;
    let report = InitReport {
        root_pem: root_cert.pem(),
        intermediate_pem: int_cert.pem(),
        order_key_pem: order.public_key_pem(),
        voucher_key_pem: voucher.public_key_pem(),
        files: Vec::new(),
        keys: created_keys.clone(),
    };
    let archive = intermediate_path(ca_dir, 1);
    write_pem(&archive, "CERTIFICATE", int_cert.der())?;
    written.push(archive);
    for (file, text) in [
        (ROOT_CERT_FILE, &report.root_pem),
        (INTERMEDIATE_CERT_FILE, &report.intermediate_pem),
        (ORDER_KEY_FILE, &report.order_key_pem),
        (VOUCHER_KEY_FILE, &report.voucher_key_pem),
    ] {
        let path = ca_dir.join(file);
        write_atomically(&path, text.as_bytes())?;
        written.push(path);
    }
    tracing::info!(dir = %ca_dir.display(), "CA initialised");
    Ok(InitReport {
        files: written.clone(),
        ..report
    })
}
