//! The reference device (`reference-device/device.py`, Python with the
//! `cryptography` package, installed by `scripts/install-deps.sh`) for
//! end-to-end tests of the station's `exec:` and `serial:` links: an
//! IC-vendor CA for the provisioner (docs/device-protocol.md §15), dies
//! manufactured from it into state directories (with fault switches), the
//! `exec:` command that serves them, and a device serving a
//! pseudo-terminal for `serial:`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// `reference-device/device.py` in this repository.
pub fn device_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../reference-device/device.py")
}

fn python(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("python3")
        .arg(device_py())
        .args(args)
        .output()
        .context("running python3 reference-device/device.py (run scripts/install-deps.sh)")?;
    if !out.status.success() {
        bail!(
            "device.py {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// An IC-vendor CA of the reference device, in a directory of its own.
pub struct ReferenceVendor {
    dir: tempfile::TempDir,
    /// The vendor's name (the provisioner's vendor roots file name).
    pub name: String,
}

impl ReferenceVendor {
    /// Makes the CA (`device.py vendor-ca`), with an issuing intermediate
    /// when `intermediate`.
    ///
    /// # Errors
    /// When python3 or its `cryptography` package is missing.
    pub fn create(name: &str, intermediate: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().to_string_lossy().into_owned();
        let mut args = vec!["vendor-ca", "--out", &out, "--name", name];
        if intermediate {
            args.push("--intermediate");
        }
        python(&args)?;
        Ok(Self {
            dir,
            name: name.to_owned(),
        })
    }

    /// The root as the provisioner's vendor roots want it: (name, DER).
    ///
    /// # Errors
    /// An unreadable certificate.
    pub fn root(&self) -> anyhow::Result<(String, Vec<u8>)> {
        let text = std::fs::read_to_string(self.dir.path().join("vendor-cert.pem"))?;
        let der = pem::parse(text)?.into_contents();
        Ok((self.name.clone(), der))
    }

    /// Manufactures a blank die into `state` (`device.py init`) with the
    /// given faults stored with it (`die-at=claim`, ...); returns its
    /// rot_id.
    ///
    /// # Errors
    /// When `device.py init` fails.
    pub fn init(&self, state: &Path, faults: &[&str]) -> anyhow::Result<String> {
        let issuing = self.dir.path().join("issuing-key.pem");
        let (key, cert) = if issuing.exists() {
            ("issuing-key.pem", "issuing-cert.pem")
        } else {
            ("vendor-key.pem", "vendor-cert.pem")
        };
        let key = self.dir.path().join(key).to_string_lossy().into_owned();
        let cert = self.dir.path().join(cert).to_string_lossy().into_owned();
        let state = state.to_string_lossy().into_owned();
        let mut args = vec![
            "init",
            "--state",
            &state,
            "--vendor-key",
            &key,
            "--vendor-cert",
            &cert,
        ];
        for fault in faults {
            args.push("--fault");
            args.push(fault);
        }
        python(&args)
    }
}

/// The `exec:` link spec serving the dies `<states>/dev-{index}`.
pub fn exec_spec(states: &Path) -> String {
    format!(
        "exec:python3 '{}' serve --state '{}/dev-{{index}}'",
        device_py().display(),
        states.display()
    )
}

/// A reference device serving a pseudo-terminal (`device.py serve --pty`),
/// killed when dropped.
pub struct PtyDevice {
    child: Child,
    /// The terminal to open as the serial port.
    pub path: String,
}

impl PtyDevice {
    /// Serves the die in `state`; waits for the path it prints.
    ///
    /// # Errors
    /// When it does not start.
    pub fn start(state: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("python3")
            .arg(device_py())
            .args(["serve", "--pty", "--state"])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting python3 reference-device/device.py serve --pty")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let path = line.trim().to_owned();
        if path.is_empty() {
            let _ = child.kill();
            let status = child.wait()?;
            bail!("the pty device printed no path ({status})");
        }
        Ok(Self { child, path })
    }

    /// The `serial:` link spec of its terminal.
    pub fn spec(&self) -> String {
        format!("serial:{}", self.path)
    }
}

impl Drop for PtyDevice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
