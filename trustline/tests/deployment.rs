//! The deployment commands through the binary: no silent embedded HSM
//! (issue 12.8), a copied embedded token directory opens its own tokens
//! (issue 12, "smaller"), and the two trust domains set up from the command
//! line — `hub init`, `site init`, `hub enroll-site`, `site install`,
//! `serve site`, `serve hub`, and an intermediate rotation whose request the
//! hub signs (`ca rotate-intermediate --request|--install`, `ca
//! sign-intermediate`) (issue 13).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_trustline");

/// Runs the binary; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run trustline");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, Some(0), "{args:?}:\n{stdout}\n{stderr}");
    stdout
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn serve_without_hsm_options_is_an_error_naming_them_and_creates_no_token() {
    let dir = tempfile::tempdir().expect("dir");
    for args in [
        vec!["serve", "all", "--data-dir", s(dir.path())],
        vec!["serve", "site", "--data-dir", s(dir.path())],
        vec!["serve", "ca", "--data-dir", s(dir.path())],
        vec!["serve", "ledger", "--data-dir", s(dir.path())],
        vec!["ca", "init", "--data-dir", s(dir.path())],
        vec!["pki", "init", "--data-dir", s(dir.path())],
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        for option in [
            "--pkcs11-module",
            "--token-label",
            "--pin-file",
            "--embedded-hsm",
        ] {
            assert!(
                stderr.contains(option),
                "{args:?}: {option} not named: {stderr}"
            );
        }
    }
    assert!(!dir.path().join("hsm").exists(), "a token was made anyway");
}

#[test]
fn a_copied_embedded_token_directory_opens_its_own_tokens() {
    let work = tempfile::tempdir().expect("dir");
    let original = work.path().join("original");
    let copy = work.path().join("copy");
    ok(&["pki", "init", "--data-dir", s(&original), "--embedded-hsm"]);
    let status = Command::new("cp")
        .args(["-a", s(&original), s(&copy)])
        .status()
        .expect("cp");
    assert!(status.success());
    std::fs::remove_dir_all(&original).expect("remove the original");
    // The service CA key is on the copied token: issuing needs it.
    let out = ok(&[
        "pki",
        "issue",
        "--data-dir",
        s(&copy),
        "--embedded-hsm",
        "--role",
        "admin",
        "--site",
        "hq",
        "--name",
        "someone",
    ]);
    assert!(out.contains("issued a client certificate"), "{out}");
    let conf = std::fs::read_to_string(copy.join("hsm").join("softhsm2.conf")).expect("conf");
    assert!(conf.contains(s(&copy.join("hsm"))), "{conf}");
    assert!(!original.exists());
}

/// A server child that is killed when the test ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve WHICH` and waits for its `listening` line.
fn serve(which: &str, dir: &Path, env: (&str, &str)) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["serve", which, "--data-dir", s(dir), "--embedded-hsm"])
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let prefix = format!("listening {which} ");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(addr) = line.strip_prefix(&prefix) {
            return (server, addr.trim().to_owned());
        }
    }
    panic!("serve {which} exited before listening");
}

#[test]
fn the_two_domains_are_set_up_and_served_from_the_command_line() {
    let work = tempfile::tempdir().expect("dir");
    let hub = work.path().join("hub");
    let site = work.path().join("site");
    let bundle = work.path().join("site-a.bundle");

    ok(&["hub", "init", "--data-dir", s(&hub), "--embedded-hsm"]);
    let init = ok(&[
        "site",
        "init",
        "--data-dir",
        s(&site),
        "--site",
        "site-a",
        "--embedded-hsm",
        "--json",
    ]);
    let init: serde_json::Value = serde_json::from_str(&init).expect("json");
    ok(&[
        "hub",
        "enroll-site",
        "--data-dir",
        s(&hub),
        "--site",
        "site-a",
        "--csr",
        init["csr"].as_str().expect("csr"),
        "--ledger-key",
        init["ledger_key"].as_str().expect("ledger key"),
        "--station",
        "st-01",
        "--out",
        s(&bundle),
        "--embedded-hsm",
    ]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&bundle)
        .expect("bundle")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let installed = ok(&[
        "site",
        "install",
        "--data-dir",
        s(&site),
        "--bundle",
        s(&bundle),
        "--embedded-hsm",
    ]);
    assert!(installed.contains("station-site-a-st-01"), "{installed}");
    assert!(site.join("pki/uplink.pem").exists());

    // Both serve; the site's station and the hub's admin reach the site.
    let (_site_server, site_addr) = serve(
        "site",
        &site,
        ("TRUSTLINE_PROVISIONER_LISTEN", "127.0.0.1:0"),
    );
    let (_hub_server, _hub_addr) = serve("hub", &hub, ("TRUSTLINE_HUB_LISTEN", "127.0.0.1:0"));
    let status = run(&[
        "order",
        "status",
        "--id",
        "PO-NONE",
        "--server",
        &site_addr,
        "--data-dir",
        s(&hub),
        "--identity",
        "admin",
    ]);
    assert_eq!(status.0, Some(2));
    assert!(status.2.contains("NotFound"), "{}", status.2);

    // An intermediate rotation with the root at the hub.
    let request = work.path().join("g2.csr.pem");
    let signed = work.path().join("g2.pem");
    ok(&[
        "ca",
        "rotate-intermediate",
        "--data-dir",
        s(&site),
        "--request",
        "--out",
        s(&request),
        "--embedded-hsm",
    ]);
    ok(&[
        "ca",
        "sign-intermediate",
        "--data-dir",
        s(&hub),
        "--csr",
        s(&request),
        "--out",
        s(&signed),
        "--embedded-hsm",
    ]);
    let rotated = ok(&[
        "ca",
        "rotate-intermediate",
        "--data-dir",
        s(&site),
        "--install",
        s(&signed),
        "--embedded-hsm",
        "--json",
    ]);
    let rotated: serde_json::Value = serde_json::from_str(&rotated).expect("json");
    assert_eq!(rotated["generation"], 2);
    // The root is not on the site's token: a one-call rotation is refused.
    let (code, _, stderr) = run(&[
        "ca",
        "rotate-intermediate",
        "--data-dir",
        s(&site),
        "--embedded-hsm",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
}
