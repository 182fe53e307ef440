//! FDO 1.1 vouchers end to end (issue 17; 2.4.14.7): a production order
//! with an FDO block, a simulated die provisioned by a station over real
//! gRPC (TLS 1.3, client certificates) against a SoftHSM2 token, the
//! station's `<serial>.fdo-voucher.pem`, and the `trustline voucher`
//! commands — each result checked by the independent implementation
//! `fdo-check/fdocheck.py` (PyPI `cbor2` + `cryptography`, run as a
//! subprocess; `scripts/install-deps.sh` installs both).
//!
//! Shown here: `Certify` records the FDO header's hash and the GUID in the
//! `CERTIFIED` entry; the device's HMAC (step 17) is recorded once by
//! `BindFdoHeader`, a retry is replayed, another HMAC is refused with
//! nothing recorded; the exported voucher verifies with fdocheck.py, HMAC
//! hash and header hash equal to the recorded ones; a voucher fdocheck.py
//! extended verifies and imports in Trustline (one FDO-only transfer);
//! export → import keeps every field; a broken entry is refused by both.

use std::path::{Path, PathBuf};
use std::process::Command;

use hsm_sim::rot::Fleet;
use prost::Message;
use serde_json::Value;
use station::run::{self, Job, Mode, Outcome, RunConfig};
use station::sim::SimLink;
use tonic::Code;
use trustline_proto::fdo::rendezvous::protocol;
use trustline_proto::fdo::{
    assemble, sign_entry, FdoDeviceData, FdoEntryPayload, FdoHeader, FdoVoucher, RendezvousInfo,
};
use trustline_proto::v1;
use trustline_proto::v1::EventKind;
use trustline_proto::voucher::Voucher;
use trustline_tests::ownership::{first_transfer, issue_operator, ownership, Owner};
use trustline_tests::{station, Stack, SITE};

const BIN: &str = env!("CARGO_BIN_EXE_trustline-e2e");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Runs fdocheck.py; its exit code and JSON.
fn fdocheck(args: &[&str]) -> (i32, Value) {
    let script = repo().join("fdo-check/fdocheck.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 (run scripts/install-deps.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the FDO checker lacks a package (run scripts/install-deps.sh): {stderr}"
    );
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("fdocheck printed no JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json)
}

/// Runs the trustline binary; its stdout, asserting the exit code (0 ok,
/// 1 a failed check, 2 an error: nothing done).
fn cli(args: &[&str], code: i32) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run trustline");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "trustline {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn write_owner(dir: &Path, name: &str, owner: &Owner) -> (PathBuf, PathBuf) {
    use p256::pkcs8::EncodePrivateKey;
    let key = dir.join(format!("{name}.pem"));
    let pem = owner
        .key
        .key()
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .expect("pem");
    std::fs::write(&key, pem.as_bytes()).expect("write key");
    let public = dir.join(format!("{name}.pub.pem"));
    std::fs::write(
        &public,
        pem::encode(&pem::Pem::new("PUBLIC KEY", owner.spki())),
    )
    .expect("write public key");
    (key, public)
}

fn payload<P: Message + Default>(entry: &v1::LedgerEntry) -> P {
    P::decode(entry.payload.as_slice()).expect("payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fdo_order_gives_each_device_an_fdo_voucher_that_fdo_tools_verify_and_extend() {
    let fleet = Fleet::builder()
        .seed(171)
        .genuine(1)
        .build()
        .expect("fleet");
    let stack = Stack::start("fdo-line", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("devices");
    std::fs::create_dir(&out).expect("out dir");

    // The OEM's order names its rendezvous server (2.4.14.7, issue 17).
    let data = FdoDeviceData {
        rv_info: RendezvousInfo::server("rv.acme.example", 8041, protocol::HTTPS),
        device_info: "Acme Sensor X1".into(),
    };
    let mut order = stack.order("PO-FDO", SITE, 10);
    order.fdo = Some(data.to_order());
    stack.open(&order).await.expect("open order");

    // A station provisions the die; it writes the FDO voucher beside the
    // chain and the Trustline voucher.
    let config = RunConfig {
        order_id: "PO-FDO".into(),
        mode: Mode::OnDevice,
        concurrency: 1,
        out_dir: Some(out.clone()),
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: station::run::Protocol::Stream,
    };
    let jobs = fleet
        .into_devices()
        .into_iter()
        .map(|d| Job {
            link: SimLink::new(d.rot),
            serial: None,
        })
        .collect();
    let channel = stack
        .channel(&station(SITE, "st-01"))
        .await
        .expect("channel");
    let (report, mut links) = run::run(channel.clone(), config, jobs).await.expect("run");
    let Outcome::Provisioned(provisioned) = &report.outcomes[0] else {
        panic!("not provisioned: {:?}", report.outcomes[0]);
    };
    let fdo_path = out.join(format!("{}.fdo-voucher.pem", provisioned.serial));
    let fdo = FdoVoucher::from_pem(&std::fs::read_to_string(&fdo_path).expect("fdo voucher"))
        .expect("decodes");
    assert_eq!(
        Some(fdo.encode()),
        provisioned.fdo_voucher,
        "the file is the run's voucher"
    );
    let rot = links.remove(0).into_rot();
    assert_eq!(
        rot.fdo_header_sha256(),
        Some(fdo.header_sha256()),
        "the die bound this header"
    );

    // The ledger: CERTIFIED holds the header hash and the GUID key; one
    // FDO_HEADER_BOUND holds the header and the HMAC.
    let entries = stack.ledger_entries().await.expect("entries");
    let certified = entries
        .iter()
        .find(|e| e.kind == EventKind::Certified as i32 && e.rot_id == provisioned.rot_id)
        .expect("certified");
    let cp: v1::CertifiedPayload = payload(certified);
    assert_eq!(cp.fdo_header_sha256, fdo.header_sha256().to_vec());
    let bound: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == EventKind::FdoHeaderBound as i32)
        .collect();
    assert_eq!(bound.len(), 1);
    let bp: v1::FdoHeaderBoundPayload = payload(bound[0]);
    assert_eq!(bp.ov_header, fdo.header().encode());
    assert_eq!(bp.header_hmac, fdo.header_hmac().to_vec());
    assert_eq!(bp.header_hmac_sha256, fdo.header_hmac_sha256().to_vec());
    fdo.check_recorded(
        &cp.fdo_header_sha256.as_slice().try_into().expect("32"),
        &bp.header_hmac_sha256.as_slice().try_into().expect("32"),
    )
    .expect("carries the recorded header and hmac");

    // BindFdoHeader again: the same HMAC is a replay, another is refused;
    // neither records anything.
    let before = entries.len();
    let mut client = stack
        .provisioning(&station(SITE, "st-01"))
        .await
        .expect("client");
    let replay = client
        .bind_fdo_header(v1::BindFdoHeaderRequest {
            rot_id: provisioned.rot_id.clone(),
            header_hmac: fdo.header_hmac().to_vec(),
        })
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.ledger_seq, bound[0].seq);
    let other = client
        .bind_fdo_header(v1::BindFdoHeaderRequest {
            rot_id: provisioned.rot_id.clone(),
            header_hmac: vec![0x55; 32],
        })
        .await
        .expect_err("another hmac");
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    assert_eq!(
        trustline_proto::refusal::refusal_reason(&other),
        Some("fdo-bound")
    );
    let short = client
        .bind_fdo_header(v1::BindFdoHeaderRequest {
            rot_id: provisioned.rot_id.clone(),
            header_hmac: vec![1; 31],
        })
        .await
        .expect_err("short hmac");
    assert_eq!(short.code(), Code::InvalidArgument, "{short:?}");
    assert_eq!(stack.ledger_entries().await.expect("entries").len(), before);

    // fdocheck.py verifies the station's voucher from the OEM voucher key
    // and reports what Trustline recorded.
    let voucher_key = stack
        .dir
        .path()
        .join("ca")
        .join(ca_service::ca::VOUCHER_KEY_FILE);
    let (code, json) = fdocheck(&[
        "verify",
        "--voucher",
        p(&fdo_path),
        "--manufacturer-key",
        p(&voucher_key),
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["guid"], hex::encode(fdo.header().guid));
    assert_eq!(json["device_info"], "Acme Sensor X1");
    assert_eq!(json["header_sha256"], hex::encode(cp.fdo_header_sha256));
    assert_eq!(
        json["header_hmac_sha256"],
        hex::encode(&bp.header_hmac_sha256)
    );
    cli(
        &[
            "voucher",
            "verify",
            "--voucher",
            p(&fdo_path),
            "--manufacturer-key",
            p(&voucher_key),
            "--chain",
            p(&out.join(format!("{}.pem", provisioned.serial))),
        ],
        0,
    );

    // The OEM sells the device to A: the ownership service returns the
    // Trustline entry 0 and its FDO twin, both signed by the OEM voucher key
    // in the CA (nobody outside the CA touches the key).
    let (a, b, c, d) = (Owner::new(), Owner::new(), Owner::new(), Owner::new());
    let dir = work.path();
    let (a_key, _) = write_owner(dir, "a", &a);
    let (b_key, b_pub) = write_owner(dir, "b", &b);
    let (c_key, c_pub) = write_owner(dir, "c", &c);
    let (_, d_pub) = write_owner(dir, "d", &d);
    let first = first_transfer(&stack, &provisioned.voucher, &a.spki(), &[])
        .await
        .expect("first transfer");
    let voucher_a = first.voucher;
    let fdo_a = FdoVoucher::decode(&first.fdo_voucher).expect("the fdo voucher with entry 0");
    assert_eq!(fdo_a.len(), 1);
    assert_eq!(fdo_a.header_bytes(), fdo.header_bytes());
    let tl_a = Voucher::decode(&voucher_a).expect("voucher");
    let view = fdo_a
        .to_trustline(&provisioned.rot_id, &provisioned.serial, None)
        .expect("mirrors");
    assert_eq!(
        view.voucher.entry_payloads().collect::<Vec<_>>(),
        tl_a.entry_payloads().collect::<Vec<_>>(),
        "fdo entry 0 carries the trustline entry 0"
    );
    let voucher_a_path = dir.join("a.cbor");
    std::fs::write(&voucher_a_path, &voucher_a).expect("write");
    // `voucher export` refuses to start from a voucher without entry 0 (the
    // OEM's: no key for it is ever given to the CLI).
    let fdo_a_path = dir.join("fdo-a.pem");
    cli(
        &[
            "voucher",
            "export",
            "--format",
            "fdo",
            "--voucher",
            p(&voucher_a_path),
            "--fdo",
            p(&fdo_path),
            "--key",
            p(&a_key),
            "--out",
            p(&fdo_a_path),
        ],
        2,
    );
    // The service's CBOR is what `--fdo` takes; fdocheck.py verifies it.
    let fdo_a_cbor = dir.join("fdo-a.cbor");
    std::fs::write(&fdo_a_cbor, &first.fdo_voucher).expect("write");
    std::fs::write(&fdo_a_path, fdo_a.to_pem()).expect("write");
    let (code, json) = fdocheck(&[
        "verify",
        "--voucher",
        p(&fdo_a_path),
        "--manufacturer-key",
        p(&voucher_key),
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["current_owner_spki"], hex::encode(a.spki()));

    // A hands the device to B in Trustline, then exports the FDO voucher:
    // A's key signs the FDO twin of entry 1.
    let voucher_b_path = dir.join("b.cbor");
    cli(
        &[
            "voucher",
            "extend",
            "--voucher",
            p(&voucher_a_path),
            "--key",
            p(&a_key),
            "--to",
            p(&b_pub),
            "--out",
            p(&voucher_b_path),
            "--manufacturer-key",
            p(&voucher_key),
        ],
        0,
    );
    let fdo_b_path = dir.join("fdo-b.pem");
    // Without the key for entry 1, nothing is written.
    cli(
        &[
            "voucher",
            "export",
            "--format",
            "fdo",
            "--voucher",
            p(&voucher_b_path),
            "--fdo",
            p(&fdo_a_path),
            "--out",
            p(&fdo_b_path),
        ],
        2,
    );
    assert!(!fdo_b_path.exists());
    cli(
        &[
            "voucher",
            "export",
            "--format",
            "fdo",
            "--voucher",
            p(&voucher_b_path),
            "--fdo",
            p(&fdo_a_cbor),
            "--key",
            p(&a_key),
            "--out",
            p(&fdo_b_path),
        ],
        0,
    );
    let (code, json) = fdocheck(&[
        "verify",
        "--voucher",
        p(&fdo_b_path),
        "--manufacturer-key",
        p(&voucher_key),
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["current_owner_spki"], hex::encode(b.spki()));

    // Export → import keeps every field: the Trustline voucher comes back
    // with the same header and entries, the FDO bytes are unchanged.
    let imported_path = dir.join("imported.cbor");
    let shown = cli(
        &[
            "voucher",
            "import",
            "--voucher",
            p(&fdo_b_path),
            "--manufacturer-key",
            p(&voucher_key),
            "--out",
            p(&imported_path),
            "--json",
        ],
        0,
    );
    let shown: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["mirrored_trustline_entries"], 2);
    assert_eq!(shown["fdo_only_transfers"], 0);
    let original = Voucher::decode(&std::fs::read(&voucher_b_path).expect("read")).expect("b");
    let imported = Voucher::decode(&std::fs::read(&imported_path).expect("read")).expect("imp");
    assert_eq!(imported.header().encode(), original.header().encode());
    assert_eq!(
        imported.entry_payloads().collect::<Vec<_>>(),
        original.entry_payloads().collect::<Vec<_>>()
    );
    let fdo_b_text = std::fs::read_to_string(&fdo_b_path).expect("read");
    let fdo_b = FdoVoucher::from_pem(&fdo_b_text).expect("fdo b");
    assert_eq!(fdo_b.to_pem(), fdo_b_text);
    assert_eq!(
        FdoVoucher::decode(&fdo_b.encode()).expect("dec").encode(),
        fdo_b.encode()
    );

    // B hands it to C with the FDO tool; Trustline verifies and imports it
    // (one FDO-only transfer), and C extends it in FDO with Trustline.
    let fdo_c_path = dir.join("fdo-c.pem");
    let (code, json) = fdocheck(&[
        "extend",
        "--voucher",
        p(&fdo_b_path),
        "--owner-key",
        p(&b_key),
        "--next-owner",
        p(&c_pub),
        "--out",
        p(&fdo_c_path),
    ]);
    assert_eq!(code, 0, "{json}");
    cli(
        &[
            "voucher",
            "verify",
            "--voucher",
            p(&fdo_c_path),
            "--manufacturer-key",
            p(&voucher_key),
        ],
        0,
    );
    let shown: Value = serde_json::from_str(&cli(
        &[
            "voucher",
            "import",
            "--voucher",
            p(&fdo_c_path),
            "--manufacturer-key",
            p(&voucher_key),
            "--json",
        ],
        0,
    ))
    .expect("json");
    assert_eq!(shown["fdo_only_transfers"], 1);
    assert_eq!(shown["current_owner"], trustline_fingerprint(&c.spki()));
    let fdo_d_path = dir.join("fdo-d.pem");
    // B is no longer the owner: nothing is signed.
    cli(
        &[
            "voucher",
            "extend",
            "--voucher",
            p(&fdo_c_path),
            "--key",
            p(&b_key),
            "--to",
            p(&d_pub),
            "--out",
            p(&fdo_d_path),
        ],
        2,
    );
    cli(
        &[
            "voucher",
            "extend",
            "--voucher",
            p(&fdo_c_path),
            "--key",
            p(&c_key),
            "--to",
            p(&d_pub),
            "--out",
            p(&fdo_d_path),
        ],
        0,
    );
    let (code, json) = fdocheck(&[
        "verify",
        "--voucher",
        p(&fdo_d_path),
        "--manufacturer-key",
        p(&voucher_key),
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["current_owner_spki"], hex::encode(d.spki()));

    // A broken entry (a flipped signature bit) is refused by both, and
    // Trustline's verify fails closed.
    let mut broken = FdoVoucher::decode(&fdo_b.encode()).expect("dec").encode();
    let last = broken.len() - 1;
    broken[last] ^= 1;
    let broken_pem = pem::encode_config(
        &pem::Pem::new("OWNERSHIP VOUCHER", broken),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    let broken_path = dir.join("broken.pem");
    std::fs::write(&broken_path, broken_pem).expect("write");
    let (code, _) = fdocheck(&[
        "verify",
        "--voucher",
        p(&broken_path),
        "--manufacturer-key",
        p(&voucher_key),
    ]);
    assert_eq!(code, 1);
    cli(
        &[
            "voucher",
            "verify",
            "--voucher",
            p(&broken_path),
            "--manufacturer-key",
            p(&voucher_key),
        ],
        1,
    );
    cli(
        &[
            "voucher",
            "import",
            "--voucher",
            p(&broken_path),
            "--manufacturer-key",
            p(&voucher_key),
        ],
        2,
    );
}

/// The fingerprint `trustline voucher` prints for a key.
fn trustline_fingerprint(spki: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(spki))
}

/// The FDO voucher of `rot_id` as fdocheck.py wrote it, CBOR.
fn read_pem_voucher(path: &Path) -> FdoVoucher {
    FdoVoucher::from_pem(&std::fs::read_to_string(path).expect("read")).expect("fdo voucher")
}

/// `voucher` with one more entry: `payload` signed by `signer`, unchecked
/// (for vouchers that must be refused).
fn with_entry(voucher: &FdoVoucher, payload: &FdoEntryPayload, signer: &Owner) -> Vec<u8> {
    let entry = sign_entry(&payload.encode(), &signer.key).expect("sign");
    let mut entries: Vec<Vec<u8>> = (0..voucher.len())
        .map(|i| voucher.entry_bytes(i).expect("entry").to_vec())
        .collect();
    entries.push(entry);
    assemble(
        voucher.header_bytes(),
        voucher.header_hmac(),
        voucher.cert_chain(),
        &entries,
    )
}

/// `voucher`'s parts under another header (its HMAC, chain and entries
/// unchanged).
fn with_header(voucher: &FdoVoucher, header: &FdoHeader, hmac: &[u8; 32]) -> Vec<u8> {
    let entries: Vec<Vec<u8>> = (0..voucher.len())
        .map(|i| voucher.entry_bytes(i).expect("entry").to_vec())
        .collect();
    assemble(&header.encode(), hmac, voucher.cert_chain(), &entries)
}

/// Issue 17 (2.4.14.7): the Ownership service registers a transfer made by
/// an FDO tool. The OEM's `TransferFromManufacturer` returns the FDO
/// voucher with entry 0 signed in the CA; fdocheck.py extends it A → B;
/// `RegisterTransfer` takes the FDO voucher, finds the device by its GUID,
/// checks the recorded header and HMAC and the mirrored prefix, and records
/// `OWNERSHIP_TRANSFERRED` with a fresh salted commitment (no owner key in
/// the ledger); a retry is replayed. Refused with their statuses and
/// nothing recorded: a bad signature, a wrong `OVEHashPrevEntry`, a wrong
/// `OVEHashHdrInfo`, a rewritten header, another HMAC, a GUID reused by
/// another device's voucher, an unknown GUID, an entry signed by a former
/// owner, a voucher cut back, and the Trustline voucher forking from the
/// FDO-only transfer. Two FDO-only entries at once are both recorded, and
/// `trustline ledger verify` accepts the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ownership_service_registers_fdo_transfers_and_refuses_bad_fdo_vouchers() {
    let fleet = Fleet::builder()
        .seed(172)
        .genuine(2)
        .build()
        .expect("fleet");
    let mut stack = Stack::start("fdo-own", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    let operator = issue_operator(&stack).expect("operator");
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    let out = dir.join("devices");
    std::fs::create_dir(&out).expect("out dir");
    let data = FdoDeviceData {
        rv_info: RendezvousInfo::server("rv.acme.example", 8041, protocol::HTTPS),
        device_info: "Acme Sensor X1".into(),
    };
    let mut order = stack.order("PO-FDO2", SITE, 10);
    order.fdo = Some(data.to_order());
    stack.open(&order).await.expect("open order");
    let config = RunConfig {
        order_id: "PO-FDO2".into(),
        mode: Mode::OnDevice,
        concurrency: 1,
        out_dir: Some(out.clone()),
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: station::run::Protocol::Stream,
    };
    let jobs = fleet
        .into_devices()
        .into_iter()
        .map(|d| Job {
            link: SimLink::new(d.rot),
            serial: None,
        })
        .collect();
    let channel = stack
        .channel(&station(SITE, "st-01"))
        .await
        .expect("channel");
    let (report, _links) = run::run(channel, config, jobs).await.expect("run");
    let devices: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::Provisioned(p) => p.clone(),
            other => panic!("not provisioned: {other:?}"),
        })
        .collect();
    let (x, y) = (&devices[0], &devices[1]);
    let fdo_x = read_pem_voucher(&out.join(format!("{}.fdo-voucher.pem", x.serial)));
    let fdo_y = read_pem_voucher(&out.join(format!("{}.fdo-voucher.pem", y.serial)));
    let voucher_key = stack
        .dir
        .path()
        .join("ca")
        .join(ca_service::ca::VOUCHER_KEY_FILE);

    // The OEM sells X to A: the FDO voucher with entry 0 comes back, and a
    // retry returns a twin of the same recorded entry 0.
    let (a, b, c, d, e) = (
        Owner::new(),
        Owner::new(),
        Owner::new(),
        Owner::new(),
        Owner::new(),
    );
    let (a_key, _) = write_owner(dir, "a", &a);
    let (b_key, b_pub) = write_owner(dir, "b", &b);
    let (c_key, c_pub) = write_owner(dir, "c", &c);
    let (_, d_pub) = write_owner(dir, "d", &d);
    let (_, e_pub) = write_owner(dir, "e", &e);
    let first = first_transfer(&stack, &x.voucher, &a.spki(), &[])
        .await
        .expect("first transfer");
    let fdo_a = FdoVoucher::decode(&first.fdo_voucher).expect("fdo voucher");
    let oem = pem::parse(std::fs::read(&voucher_key).expect("voucher key"))
        .expect("pem")
        .into_contents();
    assert_eq!(
        fdo_a.verify(&oem).expect("verifies").current_owner,
        a.spki()
    );
    let again = first_transfer(&stack, &x.voucher, &a.spki(), &[])
        .await
        .expect("retry");
    assert!(again.replayed);
    let fdo_again = FdoVoucher::decode(&again.fdo_voucher).expect("fdo voucher");
    fdo_again.verify(&oem).expect("verifies");
    assert_eq!(
        fdo_again.entry_payloads().next(),
        fdo_a.entry_payloads().next(),
        "the same entry 0 payload"
    );
    // The device without a sale gets nothing.
    assert_eq!(fdo_y.len(), 0);

    // A hands X to B with the FDO tool (no Trustline entry).
    let fdo_a_path = dir.join("fdo-a.pem");
    std::fs::write(&fdo_a_path, fdo_a.to_pem()).expect("write");
    let fdo_b_path = dir.join("fdo-b.pem");
    let (code, json) = fdocheck(&[
        "extend",
        "--voucher",
        p(&fdo_a_path),
        "--owner-key",
        p(&a_key),
        "--next-owner",
        p(&b_pub),
        "--out",
        p(&fdo_b_path),
    ]);
    assert_eq!(code, 0, "{json}");
    let fdo_b = read_pem_voucher(&fdo_b_path);
    let mut owners = ownership(&stack, operator).await.expect("client");
    let before = stack.ledger_entries().await.expect("entries").len();
    let registered = owners
        .register_transfer(v1::RegisterTransferRequest {
            voucher: fdo_b.encode(),
        })
        .await
        .expect("the fdo transfer is registered")
        .into_inner();
    assert!(!registered.replayed);
    assert_eq!(registered.fdo_voucher, fdo_b.encode());
    let entries = stack.ledger_entries().await.expect("entries");
    assert_eq!(entries.len(), before + 1, "one transfer recorded");
    let recorded = entries.last().expect("entry");
    assert_eq!(recorded.seq, registered.ledger_seq);
    assert_eq!(recorded.kind, EventKind::OwnershipTransferred as i32);
    assert_eq!(recorded.rot_id, x.rot_id);
    let op: v1::OwnershipPayload = payload(recorded);
    assert_eq!(op.voucher_entry_index, 1);
    let verified_b = fdo_b.verify(&oem).expect("verifies");
    assert_eq!(
        op.voucher_entry_sha256,
        verified_b.entries[1].entry_sha256.to_vec()
    );
    assert_eq!(op.owner_commitment, registered.owner_commitment);
    assert_eq!(op.owner_commitment.len(), 32);
    for encoding in b.key_encodings() {
        assert!(
            !recorded
                .payload
                .windows(encoding.len())
                .any(|w| w == encoding.as_slice()),
            "no owner key in the ledger (invariant 6)"
        );
    }
    // A retry is the recorded transfer.
    let retry = owners
        .register_transfer(v1::RegisterTransferRequest {
            voucher: fdo_b.encode(),
        })
        .await
        .expect("retry")
        .into_inner();
    assert!(retry.replayed);
    assert_eq!(retry.ledger_seq, registered.ledger_seq);
    assert_eq!(retry.owner_commitment, registered.owner_commitment);
    let state = owners
        .get_device_state(v1::GetDeviceStateRequest {
            rot_id: x.rot_id.clone(),
        })
        .await
        .expect("state")
        .into_inner();
    assert_eq!(state.transfers, 2);

    // Refusals: each with its status and reason, nothing recorded.
    let fdo_c_path = dir.join("fdo-c.pem");
    let (code, json) = fdocheck(&[
        "extend",
        "--voucher",
        p(&fdo_b_path),
        "--owner-key",
        p(&b_key),
        "--next-owner",
        p(&c_pub),
        "--out",
        p(&fdo_c_path),
    ]);
    assert_eq!(code, 0, "{json}");
    let fdo_c = read_pem_voucher(&fdo_c_path);
    let mut flipped = fdo_c.encode();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let next = FdoEntryPayload::decode(
        &fdo_b
            .next_entry_payload(&c.spki(), None)
            .expect("next payload"),
    )
    .expect("payload");
    let wrong_prev = with_entry(
        &fdo_b,
        &FdoEntryPayload {
            prev_hash: [7; 32],
            ..next.clone()
        },
        &b,
    );
    let wrong_info = with_entry(
        &fdo_b,
        &FdoEntryPayload {
            header_info_hash: [7; 32],
            ..next.clone()
        },
        &b,
    );
    let by_former_owner = with_entry(&fdo_b, &next, &a);
    let rewritten = with_header(
        &fdo_c,
        &FdoHeader {
            rv_info: RendezvousInfo::server("rv.evil.example", 8041, protocol::HTTPS),
            ..fdo_c.header().clone()
        },
        fdo_c.header_hmac(),
    );
    let other_hmac = with_header(&fdo_c, fdo_c.header(), &[0x55; 32]);
    let reused_guid = with_header(
        &fdo_y,
        &FdoHeader {
            guid: fdo_x.header().guid,
            ..fdo_y.header().clone()
        },
        fdo_y.header_hmac(),
    );
    let unknown_guid = with_header(
        &fdo_c,
        &FdoHeader {
            guid: [0xee; 16],
            ..fdo_c.header().clone()
        },
        fdo_c.header_hmac(),
    );
    // B's Trustline extension of the Trustline voucher: a fork of the
    // recorded FDO-only entry 1.
    let voucher_a_path = dir.join("a.cbor");
    std::fs::write(&voucher_a_path, &first.voucher).expect("write");
    let voucher_fork_path = dir.join("fork.cbor");
    cli(
        &[
            "voucher",
            "extend",
            "--voucher",
            p(&voucher_a_path),
            "--key",
            p(&a_key),
            "--to",
            p(&c_pub),
            "--out",
            p(&voucher_fork_path),
            "--manufacturer-key",
            p(&voucher_key),
        ],
        0,
    );
    let fork = std::fs::read(&voucher_fork_path).expect("read");
    let cases: Vec<(&str, Vec<u8>, Code, &str)> = vec![
        (
            "a flipped signature bit",
            flipped,
            Code::InvalidArgument,
            "bad-signature",
        ),
        (
            "a wrong OVEHashPrevEntry",
            wrong_prev,
            Code::InvalidArgument,
            "invalid",
        ),
        (
            "a wrong OVEHashHdrInfo",
            wrong_info,
            Code::InvalidArgument,
            "invalid",
        ),
        (
            "a rewritten header",
            rewritten,
            Code::InvalidArgument,
            "fdo-header",
        ),
        (
            "another hmac",
            other_hmac,
            Code::InvalidArgument,
            "fdo-header",
        ),
        (
            "a reused guid",
            reused_guid,
            Code::AlreadyExists,
            "fdo-guid",
        ),
        (
            "an unknown guid",
            unknown_guid,
            Code::NotFound,
            "unknown-device",
        ),
        (
            "a former owner's entry",
            by_former_owner,
            Code::PermissionDenied,
            "not-owner",
        ),
        (
            "a voucher cut back",
            fdo_a.encode(),
            Code::FailedPrecondition,
            "voucher-stale",
        ),
        (
            "a trustline fork",
            fork,
            Code::AlreadyExists,
            "transfer-recorded",
        ),
    ];
    let before = stack.ledger_entries().await.expect("entries").len();
    for (what, voucher, code, reason) in cases {
        let status = owners
            .register_transfer(v1::RegisterTransferRequest { voucher })
            .await
            .expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert_eq!(
            trustline_proto::refusal::refusal_reason(&status),
            Some(reason),
            "{what}: {status:?}"
        );
        assert_eq!(
            stack.ledger_entries().await.expect("entries").len(),
            before,
            "{what}: nothing recorded"
        );
    }

    // C hands it to D, D to E, both in FDO: one registration records both.
    let fdo_d_path = dir.join("fdo-d.pem");
    let fdo_e_path = dir.join("fdo-e.pem");
    for (from, key, to, dest) in [
        (&fdo_c_path, &c_key, &d_pub, &fdo_d_path),
        (&fdo_d_path, &dir.join("d.pem"), &e_pub, &fdo_e_path),
    ] {
        let (code, json) = fdocheck(&[
            "extend",
            "--voucher",
            p(from),
            "--owner-key",
            p(key),
            "--next-owner",
            p(to),
            "--out",
            p(dest),
        ]);
        assert_eq!(code, 0, "{json}");
    }
    let fdo_e = read_pem_voucher(&fdo_e_path);
    let registered = owners
        .register_transfer(v1::RegisterTransferRequest {
            voucher: fdo_e.encode(),
        })
        .await
        .expect("three fdo-only transfers")
        .into_inner();
    assert!(!registered.replayed);
    let entries = stack.ledger_entries().await.expect("entries");
    assert_eq!(entries.len(), before + 3);
    let verified_e = fdo_e.verify(&oem).expect("verifies");
    for (i, entry) in entries[before..].iter().enumerate() {
        let op: v1::OwnershipPayload = payload(entry);
        assert_eq!(op.voucher_entry_index as usize, 2 + i);
        assert_eq!(
            op.voucher_entry_sha256,
            verified_e.entries[2 + i].entry_sha256.to_vec()
        );
    }
    let commitments: std::collections::BTreeSet<Vec<u8>> = entries
        .iter()
        .filter(|e| e.kind == EventKind::OwnershipTransferred as i32)
        .map(|e| payload::<v1::OwnershipPayload>(e).owner_commitment)
        .collect();
    assert_eq!(commitments.len(), 5, "every commitment is fresh");

    // The offline verifier accepts the ledger.
    stack.stop().await.expect("stop");
    cli(&["ledger", "verify", "--data-dir", p(stack.dir.path())], 0);
}
