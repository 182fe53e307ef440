//! Field sightings: device certificates collected from onboarding or from
//! devices in the field, matched against what the ledger recorded
//! (2.4.14.3: cloned or duplicated devices can be identified).
//!
//! A sighting is recorded when the ledger holds the very same certificate
//! (same SHA-256). One that is not, but carries a serial or key that a
//! recorded certificate (or another sighting) also carries, is a clone. One
//! that shares nothing is unrecorded: if it still chains to the OEM CA, the
//! CA key signed a device outside the line — overproduction through a
//! leaked or misused key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::certs::{certificates_in, CaSet, DeviceCert};
use crate::error::{Error, Result};

/// Most files read from a sightings directory (a guard against pointing the
/// audit at the wrong directory).
pub const MAX_FIELD_FILES: usize = 10_000_000;
/// Largest sighting file read, in bytes.
const MAX_FILE_LEN: u64 = 1 << 20;
/// Entries remembered per sighting as the ones it clashes with.
const MAX_CLASH_ENTRIES: usize = 8;

/// One certificate seen in the field.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// The file it came from.
    pub file: String,
    /// What it names.
    pub cert: DeviceCert,
    /// SHA-256 of its key.
    key_sha256: [u8; 32],
    /// Whether it chains to the OEM CA.
    pub issued_by_oem_ca: bool,
    /// The ledger recorded this very certificate, in this entry.
    pub recorded_entry: Option<u64>,
    /// Recorded entries whose certificate shares its serial or key but is
    /// another certificate.
    pub clashes: Vec<u64>,
    /// Another sighting shares its serial or key but is another certificate.
    pub clashes_with_sighting: bool,
}

/// The sightings, indexed for matching during the ledger pass.
#[derive(Debug, Default)]
pub struct FieldIndex {
    sightings: Vec<Sighting>,
    by_sha: HashMap<[u8; 32], Vec<usize>>,
    by_serial: HashMap<String, Vec<usize>>,
    by_key: HashMap<[u8; 32], Vec<usize>>,
    /// Files that held no certificate.
    pub unreadable: Vec<String>,
}

impl FieldIndex {
    /// Reads every file under `dir` (recursively): PEM bundles or single
    /// DER certificates. CA certificates in them are skipped.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be read; [`Error::Config`]
    /// when it holds more than [`MAX_FIELD_FILES`] files.
    pub fn load(dir: &Path, ca: &CaSet) -> Result<Self> {
        let mut files = Vec::new();
        collect_files(dir, &mut files)?;
        files.sort();
        let mut index = Self::default();
        for path in files {
            let name = path.display().to_string();
            let bytes = match std::fs::metadata(&path) {
                Ok(m) if m.len() <= MAX_FILE_LEN => std::fs::read(&path).ok(),
                _ => None,
            };
            let Some(bytes) = bytes else {
                index.unreadable.push(name);
                continue;
            };
            let mut any = false;
            for der in certificates_in(&bytes) {
                if is_ca_certificate(&der) {
                    continue;
                }
                if let Ok(cert) = DeviceCert::parse(&der) {
                    let issued_by_oem_ca = ca.check_issued(&der).is_ok();
                    index.add(name.clone(), cert, issued_by_oem_ca);
                    any = true;
                }
            }
            if !any {
                index.unreadable.push(name);
            }
        }
        index.mark_sighting_clashes();
        Ok(index)
    }

    /// Adds one sighting.
    pub fn add(&mut self, file: String, cert: DeviceCert, issued_by_oem_ca: bool) {
        let i = self.sightings.len();
        let key_sha256: [u8; 32] = Sha256::digest(&cert.spki).into();
        self.by_sha.entry(cert.sha256).or_default().push(i);
        self.by_serial
            .entry(cert.serial.clone())
            .or_default()
            .push(i);
        self.by_key.entry(key_sha256).or_default().push(i);
        self.sightings.push(Sighting {
            file,
            cert,
            key_sha256,
            issued_by_oem_ca,
            recorded_entry: None,
            clashes: Vec::new(),
            clashes_with_sighting: false,
        });
    }

    /// Marks sightings that share a serial or key with a different
    /// sighting.
    pub fn mark_sighting_clashes(&mut self) {
        let mut clashing = Vec::new();
        for group in self.by_serial.values().chain(self.by_key.values()) {
            let first = group.first().map(|i| self.sightings[*i].cert.sha256);
            if group
                .iter()
                .any(|i| Some(self.sightings[*i].cert.sha256) != first)
            {
                clashing.extend(group.iter().copied());
            }
        }
        for i in clashing {
            self.sightings[i].clashes_with_sighting = true;
        }
    }

    /// Whether there are no sightings.
    pub fn is_empty(&self) -> bool {
        self.sightings.is_empty()
    }

    /// The sightings.
    pub fn sightings(&self) -> &[Sighting] {
        &self.sightings
    }

    /// Notes a certificate the ledger recorded in entry `seq`.
    pub fn observe_recorded(&mut self, seq: u64, cert_der: &[u8], serial: &str, spki: &[u8]) {
        if self.sightings.is_empty() {
            return;
        }
        let sha: [u8; 32] = Sha256::digest(cert_der).into();
        if let Some(found) = self.by_sha.get(&sha) {
            for i in found {
                self.sightings[*i].recorded_entry.get_or_insert(seq);
            }
        }
        let key: [u8; 32] = Sha256::digest(spki).into();
        let by_serial = self.by_serial.get(serial).into_iter().flatten();
        let by_key = self.by_key.get(&key).into_iter().flatten();
        let mut hits: Vec<usize> = by_serial.chain(by_key).copied().collect();
        hits.sort_unstable();
        hits.dedup();
        for i in hits {
            let s = &mut self.sightings[i];
            if s.cert.sha256 != sha && s.clashes.len() < MAX_CLASH_ENTRIES {
                s.clashes.push(seq);
            }
        }
    }

    /// SHA-256 of a sighting's key.
    pub fn key_sha256(sighting: &Sighting) -> [u8; 32] {
        sighting.key_sha256
    }
}

fn is_ca_certificate(der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .ok()
        .and_then(|(_, c)| c.basic_constraints().ok().flatten().map(|bc| bc.value.ca))
        .unwrap_or(false)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Config(format!(
            "cannot read field sightings {}: {e}",
            dir.display()
        ))
    })?;
    for entry in entries.flatten() {
        if out.len() >= MAX_FIELD_FILES {
            return Err(Error::Config(format!(
                "more than {MAX_FIELD_FILES} files under {}",
                dir.display()
            )));
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}
