//! Helpers for the ownership end-to-end tests: operator credentials, owners
//! and their signed authorizations, devices provisioned through the real
//! factory line (the first owner named by the OEM afterwards, never by the
//! station), raw voucher surgery for forged and reordered entries, entries
//! planted in the ledger as a compromised writer would, the privacy scan of
//! the data directory, and `openssl crl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use hsm_sim::rot::SimulatedRot;
use p256::pkcs8::DecodePublicKey;
use station::run::{self, Job, Mode, Outcome, Provisioned, RunConfig};
use station::sim::SimLink;
use tonic::transport::Channel;
use transport::pki::{self, CertificateKind, LeafParams, Validity};
use transport::{Caller, Role};
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;
use trustline_proto::v1::ownership_client::OwnershipClient;

use crate::{station, Stack, SITE};

/// The credential name of the operator the ownership tests use.
pub const OPERATOR: &str = "operator";

/// Issues an operator's client credential (`<data>/pki/operator.*`) from the
/// stack's service CA: `setup::init_pki` makes none, since operators are the
/// OEM's customers.
///
/// # Errors
/// HSM, PKI or I/O failures.
pub fn issue_operator(stack: &Stack) -> anyhow::Result<&'static str> {
    issue_operator_named(stack, OPERATOR, "fleet-operator")?;
    Ok(OPERATOR)
}

/// Issues the client credential `<data>/pki/<file>.*` of the operator
/// `name` (site `hq`), unless it exists.
///
/// # Errors
/// HSM, PKI or I/O failures.
pub fn issue_operator_named(stack: &Stack, file: &str, name: &str) -> anyhow::Result<()> {
    let dir = stack.dir.path().join(pki::PKI_DIR);
    if dir.join(format!("{file}.pem")).exists() {
        return Ok(());
    }
    let key = stack.hsm.signer(pki::SERVICE_CA_KEY_LABEL)?;
    let ca = pki::read_ca_certificate(&dir.join(transport::tls::SERVICE_CA_FILE))?;
    let params = LeafParams {
        caller: Caller::new(Role::Operator, "hq", name)?,
        kind: CertificateKind::Client,
        validity: Validity::days_from_now(30),
    };
    let issued = pki::issue_with_new_key(&ca, &key, &params)?;
    pki::write_credentials(&dir, file, &issued, &ca)?;
    Ok(())
}

/// An ownership client as `identity`.
///
/// # Errors
/// Credential or connection failure.
pub async fn ownership(stack: &Stack, identity: &str) -> anyhow::Result<OwnershipClient<Channel>> {
    Ok(OwnershipClient::new(stack.channel(identity).await?))
}

/// An owner: a P-256 key held in software.
pub struct Owner {
    /// The key.
    pub key: SoftwareSigner,
}

impl Owner {
    /// A fresh owner.
    pub fn new() -> Self {
        Self {
            key: SoftwareSigner::generate(),
        }
    }

    /// The owner's SubjectPublicKeyInfo DER.
    pub fn spki(&self) -> Vec<u8> {
        self.key.public_key_der().to_vec()
    }

    /// Every encoding of the owner's public key a leak could take: the SPKI
    /// DER, the raw uncompressed point and its x-coordinate.
    pub fn key_encodings(&self) -> Vec<Vec<u8>> {
        let key =
            p256::PublicKey::from_public_key_der(self.key.public_key_der()).expect("p256 key");
        let point = p256::EncodedPoint::from(key).as_bytes().to_vec();
        vec![self.spki(), point.clone(), point[1..33].to_vec()]
    }

    /// Signs an `OwnerAuthorization` for `action` on the device, answering
    /// `challenge`, naming `voucher`.
    pub fn authorize(
        &self,
        rot_id: &str,
        challenge: &[u8],
        action: &str,
        voucher: &[u8],
    ) -> v1::SignedStatement {
        use sha2::Digest;
        trustline_proto::statement::sign(
            &self.key,
            &v1::OwnerAuthorization {
                rot_id: rot_id.into(),
                challenge: challenge.to_vec(),
                action: action.into(),
                voucher_sha256: sha2::Sha256::digest(voucher).to_vec(),
            },
        )
        .expect("sign")
    }
}

impl Default for Owner {
    fn default() -> Self {
        Self::new()
    }
}

/// Extends `voucher` from `from` to `to` (as `trustline voucher extend`).
pub fn extend(voucher: &[u8], from: &Owner, to: &Owner) -> Vec<u8> {
    let mut v = trustline_proto::voucher::Voucher::decode(voucher).expect("voucher");
    v.extend(&from.key, &to.spki()).expect("extend");
    v.encode()
}

/// Provisions `rots` through the real factory line (station `st-01` of
/// [`SITE`], on-device keys) under the order `order_id` (opened for 1000
/// devices unless it is open already). When `first_owner` is given, the
/// OEM then transfers every device to it (`TransferFromManufacturer` as the
/// admin: the station never names an owner, issue 12 item 1) and the
/// result's voucher is the one holding entry 0. Returns each device's
/// result and its link (the device in its socket), in order; refused
/// devices come back as `None`.
///
/// # Errors
/// Set-up or RPC failures.
pub async fn provision(
    stack: &Stack,
    order_id: &str,
    rots: Vec<SimulatedRot>,
    first_owner: Option<&Owner>,
) -> anyhow::Result<Vec<(Option<Provisioned>, SimLink)>> {
    if stack
        .provisioning(site::setup::ADMIN)
        .await?
        .get_order(v1::GetOrderRequest {
            order_id: order_id.into(),
        })
        .await
        .is_err()
    {
        stack.open(&stack.order(order_id, SITE, 1000)).await?;
    }
    let config = RunConfig {
        order_id: order_id.into(),
        mode: Mode::OnDevice,
        concurrency: 1,
        out_dir: None,
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: run::Protocol::Stream,
    };
    let jobs = rots
        .into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect();
    let channel = stack.channel(&station(SITE, "st-01")).await?;
    let (report, links) = run::run(channel, config, jobs).await?;
    let mut out = Vec::with_capacity(links.len());
    for (outcome, link) in report.outcomes.into_iter().zip(links) {
        match outcome {
            Outcome::Provisioned(mut p) => {
                if let Some(owner) = first_owner {
                    p.voucher = first_transfer(stack, &p.voucher, &owner.spki(), &[])
                        .await?
                        .voucher;
                }
                out.push((Some(p), link));
            }
            _ => out.push((None, link)),
        }
    }
    Ok(out)
}

/// The OEM's `TransferFromManufacturer` of `voucher` to `owner_spki` (with
/// `salt` for an order that commits to its first owner), as the admin.
///
/// # Errors
/// The refusal, or connection failures.
pub async fn first_transfer(
    stack: &Stack,
    voucher: &[u8],
    owner_spki: &[u8],
    salt: &[u8],
) -> anyhow::Result<v1::TransferResponse> {
    Ok(ownership(stack, site::setup::ADMIN)
        .await?
        .transfer_from_manufacturer(v1::TransferFromManufacturerRequest {
            voucher: voucher.to_vec(),
            next_owner_public_key: owner_spki.to_vec(),
            first_owner_salt: salt.to_vec(),
        })
        .await?
        .into_inner())
}

/// Appends an entry straight to the ledger with the provisioner's own
/// credential — what a compromised ledger writer could plant — and returns
/// its seq.
///
/// # Errors
/// The ledger's refusal, or connection failures.
pub async fn plant(
    stack: &Stack,
    draft: v1::EntryDraft,
    unique_keys: Vec<v1::UniqueKey>,
) -> anyhow::Result<u64> {
    let mut ledger = trustline_proto::v1::custody_ledger_client::CustodyLedgerClient::new(
        stack.channel(site::setup::PROVISIONER).await?,
    );
    Ok(ledger
        .append(backends::append_request(draft, unique_keys, None))
        .await?
        .into_inner()
        .seq)
}

/// The ledger entries naming `rot_id`, read as the auditor.
///
/// # Errors
/// RPC failures.
pub async fn device_entries(stack: &Stack, rot_id: &str) -> anyhow::Result<Vec<v1::LedgerEntry>> {
    Ok(stack
        .ledger_entries()
        .await?
        .into_iter()
        .filter(|e| e.rot_id == rot_id)
        .collect())
}

/// A voucher's raw parts: everything before the entries array, and each
/// entry's COSE bytes — for building forged, reordered and truncated
/// vouchers byte by byte.
pub struct RawVoucher {
    prefix: Vec<u8>,
    /// The entries' COSE bytes.
    pub entries: Vec<Vec<u8>>,
}

impl RawVoucher {
    /// Splits an encoded voucher (fewer than 24 entries).
    pub fn split(voucher: &[u8]) -> Self {
        let v = trustline_proto::voucher::Voucher::decode(voucher).expect("voucher");
        let mut prefix_len = 2 + head_len(v.header_bytes().len()) + v.header_bytes().len();
        prefix_len += v
            .device_binding()
            .map_or(1, |b| head_len(b.len()) + b.len());
        let prefix = voucher[..prefix_len].to_vec();
        let count = usize::from(voucher[prefix_len] & 0x1f);
        assert!(count < 24, "test vouchers hold fewer than 24 entries");
        let mut at = prefix_len + 1;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let (len, head) = read_bytes_head(&voucher[at..]);
            entries.push(voucher[at + head..at + head + len].to_vec());
            at += head + len;
        }
        assert_eq!(at, voucher.len());
        Self { prefix, entries }
    }

    /// Encodes the parts again.
    pub fn join(&self) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.push(0x80 | u8::try_from(self.entries.len()).expect("few entries"));
        for e in &self.entries {
            put_bytes_head(&mut out, e.len());
            out.extend_from_slice(e);
        }
        out
    }
}

fn head_len(len: usize) -> usize {
    match len {
        0..=23 => 1,
        24..=255 => 2,
        256..=65535 => 3,
        _ => 5,
    }
}

fn read_bytes_head(b: &[u8]) -> (usize, usize) {
    assert_eq!(b[0] >> 5, 2, "a byte string");
    match b[0] & 0x1f {
        n @ 0..=23 => (usize::from(n), 1),
        24 => (usize::from(b[1]), 2),
        25 => (usize::from(u16::from_be_bytes([b[1], b[2]])), 3),
        other => panic!("unexpected length encoding {other}"),
    }
}

fn put_bytes_head(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=23 => out.push(0x40 | len as u8),
        24..=255 => out.extend_from_slice(&[0x58, len as u8]),
        _ => {
            out.push(0x59);
            out.extend_from_slice(&u16::try_from(len).expect("short").to_be_bytes());
        }
    }
}

/// Every file under `dir` holding any of `needles`, with the needle's
/// index: the privacy scan (invariant 6).
///
/// # Errors
/// I/O failures.
pub fn files_containing(dir: &Path, needles: &[Vec<u8>]) -> anyhow::Result<Vec<(PathBuf, usize)>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0usize;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            for (i, needle) in needles.iter().enumerate() {
                if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    found.push((path.clone(), i));
                }
            }
        }
    }
    if files == 0 {
        bail!("no file under {}", dir.display());
    }
    Ok(found)
}

/// Runs `openssl crl -verify` on `crl` (DER) against `issuer_chain` (the
/// site intermediate and the OEM root, DER); returns whether it verified and
/// the listed serials (uppercase hex, as openssl prints them).
///
/// # Errors
/// When openssl cannot be run.
pub fn openssl_crl(
    crl: &[u8],
    issuer_chain: &[Vec<u8>],
    work: &Path,
) -> anyhow::Result<(bool, Vec<String>)> {
    let crl_path = work.join("devices.crl");
    std::fs::write(&crl_path, crl)?;
    let ca_path = work.join("crl-issuers.pem");
    std::fs::write(&ca_path, station::run::chain_pem(issuer_chain))?;
    let out = Command::new("openssl")
        .args([
            "crl", "-inform", "DER", "-noout", "-text", "-verify", "-CAfile",
        ])
        .arg(&ca_path)
        .arg("-in")
        .arg(&crl_path)
        .output()
        .context("running openssl (install the openssl package)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let verified =
        out.status.success() && (stderr.contains("verify OK") || stdout.contains("verify OK"));
    let serials = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|s| s.trim().to_uppercase())
        .collect();
    Ok((verified, serials))
}

/// The serial of a certificate as openssl prints it (uppercase hex, no
/// leading zero bytes). The serial is the first INTEGER of tbsCertificate
/// after the optional `[0]` version; parsed by hand to keep the harness free
/// of an X.509 dependency.
pub fn certificate_serial_hex(certificate: &[u8]) -> String {
    let tbs = der_children(der_content(certificate))[0];
    let mut fields = der_children(der_content(tbs)).into_iter();
    let mut serial = fields.next().expect("a tbsCertificate field");
    if serial[0] == 0xa0 {
        serial = fields.next().expect("the serial");
    }
    let bytes = der_content(serial);
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    hex::encode_upper(&bytes[start..])
}

fn der_header(b: &[u8]) -> (usize, usize) {
    let first = b[1];
    if first < 0x80 {
        return (usize::from(first), 2);
    }
    let n = usize::from(first & 0x7f);
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(b[2 + i]);
    }
    (len, 2 + n)
}

fn der_content(b: &[u8]) -> &[u8] {
    let (len, head) = der_header(b);
    &b[head..head + len]
}

fn der_children(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (len, head) = der_header(b);
        out.push(&b[..head + len]);
        b = &b[head + len..];
    }
    out
}

/// The ledger entries appended since `before` entries.
///
/// # Errors
/// RPC failures.
pub async fn entries_since(stack: &Stack, before: usize) -> anyhow::Result<Vec<v1::LedgerEntry>> {
    let all = stack.ledger_entries().await?;
    Ok(all.into_iter().skip(before).collect())
}
