//! The `[uplink]` section of `trustline.toml`: where the OEM hub is, who
//! this site is there, the hub witness's key, and the client credentials
//! (role `site`, issued by the hub's service CA) the uplink calls with.
//!
//! ```toml
//! [uplink]
//! hub = "hub.oem.example:7500"           # the hub's Witness endpoint
//! site = "site-a"                        # this site's name at the hub
//! witness_key = "oem.example/hub-witness+1a2b3c4d+BASE64"  # `GetWitnessKey`'s verifier key
//! credentials_dir = "pki/hub"            # uplink.pem, uplink.key, service-ca.pem (the hub's CA)
//! credential_name = "uplink"
//! server_name = "hub.oem.example"        # optional: the hub's TLS name if not the host
//! push_batch = 1024                      # most entries per PushEntries
//! retry_min_ms = 200                     # backoff while the hub is unreachable
//! retry_max_ms = 10000
//! rpc_timeout_ms = 30000
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use transport::{ClientTls, CredentialPaths};
use trustline_proto::cosignature::WitnessKey;

use crate::error::{Error, Result};

/// The uplink's settings (every key but `hub`, `site` and `witness_key`
/// has a default).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkConfig {
    /// The hub's `Witness` endpoint, `host:port`.
    pub hub: String,
    /// This site's name at the hub (the site of its uplink certificate).
    pub site: String,
    /// The hub witness's verifier key, `<name>+<key id>+<base64 key>`:
    /// every cosignature is checked against it before it is kept.
    pub witness_key: String,
    /// The directory (relative to the data directory) holding the uplink's
    /// certificate, key and the hub's service CA.
    pub credentials_dir: PathBuf,
    /// The credential's file name stem (`<name>.pem`, `<name>.key`).
    pub credential_name: String,
    /// The hub's TLS server name, when it differs from the endpoint's host.
    pub server_name: Option<String>,
    /// Most entries per `PushEntries` (the hub takes at most 4096).
    pub push_batch: usize,
    /// Most entry bytes per `PushEntries`.
    pub push_max_bytes: usize,
    /// First retry delay while the hub is unreachable, milliseconds.
    pub retry_min_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// Deadline of each call to the hub, milliseconds.
    pub rpc_timeout_ms: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            hub: String::new(),
            site: String::new(),
            witness_key: String::new(),
            credentials_dir: PathBuf::from("pki/hub"),
            credential_name: "uplink".into(),
            server_name: None,
            push_batch: 1024,
            push_max_bytes: 8 << 20,
            retry_min_ms: 200,
            retry_max_ms: 10_000,
            rpc_timeout_ms: 30_000,
        }
    }
}

/// The checked settings the uplink runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) hub: String,
    pub(crate) site: String,
    pub(crate) witness: WitnessKey,
    pub(crate) push_batch: usize,
    pub(crate) push_max_bytes: usize,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) rpc_timeout: Duration,
}

impl UplinkConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad key.
    pub(crate) fn settings(&self) -> Result<Settings> {
        let bad = |what: String| Error::Config(format!("[uplink] {what}"));
        if self.hub.is_empty() {
            return Err(bad("hub is not set".into()));
        }
        if self.site.is_empty() {
            return Err(bad("site is not set".into()));
        }
        let witness = WitnessKey::from_verifier_key(&self.witness_key)
            .map_err(|e| bad(format!("witness_key: {e}")))?;
        if self.retry_min_ms == 0 || self.retry_max_ms < self.retry_min_ms {
            return Err(bad(
                "retry_min_ms must be at least 1 and at most retry_max_ms".into(),
            ));
        }
        Ok(Settings {
            hub: self.hub.clone(),
            site: self.site.clone(),
            witness,
            push_batch: self.push_batch.clamp(1, hub_push_limit()),
            push_max_bytes: self.push_max_bytes.max(1 << 16),
            retry_min: Duration::from_millis(self.retry_min_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            rpc_timeout: Duration::from_millis(self.rpc_timeout_ms.max(100)),
        })
    }

    /// The uplink's credential paths in `data_dir`.
    pub fn credentials(&self, data_dir: &Path) -> CredentialPaths {
        CredentialPaths::in_dir(&data_dir.join(&self.credentials_dir), &self.credential_name)
    }

    /// A channel to the hub over mTLS with the uplink's credentials. It
    /// connects on first use and reconnects after failures, so a site
    /// starts while its hub is down.
    ///
    /// # Errors
    /// [`Error::Config`] for missing or bad credentials or a malformed
    /// endpoint.
    pub fn connect(&self, data_dir: &Path) -> Result<tonic::transport::Channel> {
        let mut tls = ClientTls::from_files(&self.credentials(data_dir)).map_err(|e| {
            Error::Config(format!(
                "[uplink] credentials in {}: {e}",
                self.credentials_dir.display()
            ))
        })?;
        if let Some(name) = &self.server_name {
            tls = tls
                .with_server_name(name)
                .map_err(|e| Error::Config(format!("[uplink] server_name: {e}")))?;
        }
        tls.connect_lazy(&self.hub)
            .map_err(|e| Error::Config(format!("[uplink] hub: {e}")))
    }
}

/// Most entries the hub takes in one push (`hub::MAX_PUSH_ENTRIES`).
const fn hub_push_limit() -> usize {
    4096
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    #[test]
    fn the_operators_guide_uplink_example_is_a_valid_configuration() {
        let guide = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
        )
        .unwrap();
        let start = guide.find("```toml\n[uplink]").unwrap() + "```toml\n".len();
        let end = start + guide[start..].find("```").unwrap();
        let parsed: crate::Config = toml::from_str(&guide[start..end]).unwrap();
        let uplink = parsed.uplink.unwrap();
        assert_eq!(uplink.site, "site-1");
        assert_eq!(uplink.credentials_dir, PathBuf::from("pki/hub"));
        assert_eq!(uplink.push_batch, UplinkConfig::default().push_batch);
        // The example's witness key is a placeholder: refused, by name.
        let e = uplink.settings().unwrap_err().to_string();
        assert!(e.contains("witness_key"), "{e}");
    }
}
