//! Logs never carry secrets (issue 7, item 5; 2.4.9.3, 2.4.16.3): the whole
//! demo, run as the real binary with every log at trace level, writes no
//! HSM PIN, no byte of any private key it made, and no owner identity to
//! stdout or stderr.
//!
//! The secrets are read back from what the demo left in its directory
//! (`hsm/user.pin`, every `*.key` and every PEM private key), and each is
//! searched for in every form a log line could carry it: as written, the
//! raw key bytes in hex (either case), base64 and Rust's `Debug` list of
//! decimals, and the private scalar alone in the same forms. The test
//! proves its own eyes: the capture must hold trace-level lines, and the
//! same search must find a string that is known to be in it.

use std::path::{Path, PathBuf};
use std::process::Command;

use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};

const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

/// One secret and the strings that would betray it.
#[derive(Debug)]
struct Secret {
    what: String,
    forms: Vec<String>,
}

impl Secret {
    /// The first form of this secret found in `text`.
    fn found_in(&self, text: &str) -> Option<&str> {
        self.forms
            .iter()
            .find(|f| text.contains(f.as_str()))
            .map(String::as_str)
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `bytes` as a log line could show them: hex in both cases, base64
/// without its padding, and the inside of a `Debug` list of decimals.
fn byte_forms(bytes: &[u8]) -> Vec<String> {
    let debug = format!("{bytes:?}");
    vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        base64(bytes).trim_end_matches('=').to_owned(),
        debug
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    ]
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("readable demo directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every PEM block labelled `... PRIVATE KEY` in `text`: its label, its
/// base64 body lines and its DER.
fn private_pem_blocks(text: &str) -> Vec<(String, Vec<String>, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let Some(end) = block.find("-----END ") else {
            break;
        };
        let end = block[end..].find('\n').map_or(block.len(), |n| end + n + 1);
        let pem = &block[..end];
        rest = &block[end..];
        let Ok((label, der)) = p256::pkcs8::der::pem::decode_vec(pem.as_bytes()) else {
            continue;
        };
        if !label.ends_with("PRIVATE KEY") {
            continue;
        }
        let lines = pem
            .lines()
            .map(str::trim)
            // A short last line could occur in any text by chance.
            .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            .map(str::to_owned)
            .collect();
        blocks.push((label.to_owned(), lines, der));
    }
    blocks
}

/// The PIN and every private key the demo left in `dir`; owner keys also
/// give away their owner through the public key.
fn secrets(dir: &Path) -> Vec<Secret> {
    let mut out = Vec::new();
    for file in ["user.pin", "ledger.pin"] {
        let pin = std::fs::read_to_string(dir.join("hsm").join(file))
            .unwrap_or_else(|e| panic!("the demo's hsm/{file}: {e}"));
        let pin = pin.trim();
        assert!(
            pin.len() >= 4,
            "the demo PIN in {file} is implausibly short"
        );
        out.push(Secret {
            what: format!("the HSM user PIN in {file}"),
            forms: vec![pin.to_owned()],
        });
    }
    let mut all = Vec::new();
    files(dir, &mut all);
    for path in all {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // token objects and index files are binary
        };
        let blocks = private_pem_blocks(&text);
        let is_key_file = path.extension().is_some_and(|e| e == "key");
        assert!(
            !is_key_file || !blocks.is_empty(),
            "{} is a key file without a PEM private key",
            path.display()
        );
        for (label, lines, der) in blocks {
            let mut forms = lines;
            forms.extend(byte_forms(&der));
            let key = p256::SecretKey::from_pkcs8_der(&der)
                .or_else(|_| p256::SecretKey::from_sec1_der(&der))
                .ok();
            if let Some(key) = &key {
                let scalar = key.to_bytes();
                forms.extend(byte_forms(&scalar));
                // Half a scalar is already too much.
                forms.extend(byte_forms(&scalar[..16]));
                forms.extend(byte_forms(&scalar[16..]));
            }
            out.push(Secret {
                what: format!("{label} in {}", path.display()),
                forms,
            });
            let is_owner = path
                .components()
                .any(|c| c.as_os_str().to_string_lossy().contains("owner"));
            if let (true, Some(key)) = (is_owner, key) {
                let spki = key
                    .public_key()
                    .to_public_key_der()
                    .expect("a P-256 public key encodes");
                out.push(Secret {
                    what: format!("the owner identity of {}", path.display()),
                    forms: byte_forms(spki.as_bytes()),
                });
            }
        }
    }
    out
}

#[test]
fn a_trace_level_demo_run_logs_no_pin_no_private_key_and_no_owner() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("demo");
    let output = Command::new(BIN)
        .args([
            "--log",
            "trace",
            "demo",
            "--devices",
            "3",
            "--stations",
            "2",
            "--dir",
        ])
        .arg(&dir)
        .env("TRUSTLINE_LOG", "trace")
        .output()
        .expect("running the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the demo failed ({}):\n{stdout}\n{}",
        output.status,
        &stderr[stderr.len().saturating_sub(4000)..]
    );
    let captured = format!("{stdout}\n{stderr}");

    // The capture holds the logs, at trace level.
    assert!(
        stderr.lines().any(|l| l.contains("TRACE")),
        "no trace-level line was captured: the log filter did not reach trace"
    );
    let marker = "created the embedded SoftHSM2 token";
    let probe = Secret {
        what: "a string known to be logged".into(),
        forms: vec![marker.to_owned()],
    };
    assert_eq!(
        probe.found_in(&captured),
        Some(marker),
        "the search does not see what the demo logged"
    );

    let secrets = secrets(&dir);
    let keys = secrets
        .iter()
        .filter(|s| s.what.contains("PRIVATE KEY"))
        .count();
    assert!(
        keys >= 3,
        "found only {keys} private keys under {}: the demo writes client keys for \
         its admin, auditor and stations",
        dir.display()
    );
    // The search would also catch a PIN written out in full: the PIN and
    // the file it came from are both in hand.
    let leaks: Vec<String> = secrets
        .iter()
        .filter_map(|s| {
            s.found_in(&captured)
                .map(|form| format!("{}: {form:?}", s.what))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets in the demo's output:\n  {}",
        leaks.join("\n  ")
    );
}

#[test]
fn the_search_finds_a_secret_in_each_form() {
    let scalar = [0x11u8; 32];
    let key = p256::SecretKey::from_bytes(&scalar.into()).expect("valid scalar");
    let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&key).expect("encodes");
    let pem = p256::pkcs8::der::pem::encode_string(
        "PRIVATE KEY",
        p256::pkcs8::LineEnding::LF,
        der.as_bytes(),
    )
    .expect("encodes");
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(work.path().join("hsm")).expect("mkdir");
    std::fs::write(
        work.path().join("hsm").join("user.pin"),
        "0123456789abcdef\n",
    )
    .expect("pin");
    std::fs::write(
        work.path().join("hsm").join("ledger.pin"),
        "fedcba9876543210\n",
    )
    .expect("ledger pin");
    std::fs::create_dir_all(work.path().join("owners")).expect("mkdir");
    std::fs::write(work.path().join("owners").join("first.key"), &pem).expect("key");
    let found = secrets(work.path());
    assert_eq!(found.len(), 4, "{found:#?}");
    let spki = key.public_key().to_public_key_der().expect("spki");
    for (line, what) in [
        (
            "unlocking with pin=0123456789abcdef".to_owned(),
            "PIN in user.pin",
        ),
        (
            "ledger pin=fedcba9876543210".to_owned(),
            "PIN in ledger.pin",
        ),
        (
            format!("key={}", pem.lines().nth(1).expect("a body line")),
            "PRIVATE KEY",
        ),
        (format!("scalar={}", hex::encode(scalar)), "PRIVATE KEY"),
        (format!("scalar={:?}", &scalar[..]), "PRIVATE KEY"),
        (
            format!("der={}", hex::encode_upper(der.as_bytes())),
            "PRIVATE KEY",
        ),
        (format!("half={}", base64(&scalar[16..])), "PRIVATE KEY"),
        (
            format!("owner={}", hex::encode(spki.as_bytes())),
            "owner identity",
        ),
    ] {
        assert!(
            found
                .iter()
                .any(|s| s.what.contains(what) && s.found_in(&line).is_some()),
            "{what} not found in {line:?}"
        );
    }
    assert!(found
        .iter()
        .all(|s| s.found_in("nothing secret here").is_none()));
    assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
}
