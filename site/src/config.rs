//! What a site reads from `<data>/trustline.toml` (every key optional) and
//! the environment variables that override it: `TRUSTLINE_PROVISIONER_LISTEN`,
//! `TRUSTLINE_CA_LISTEN`, `TRUSTLINE_LEDGER_LISTEN`,
//! `TRUSTLINE_CA_ENDPOINT`, `TRUSTLINE_LEDGER_ENDPOINT`,
//! `TRUSTLINE_VENDOR_ROOTS_DIR`, `TRUSTLINE_CLAIM_TTL_SECS`,
//! `TRUSTLINE_SITE`, `TRUSTLINE_LEDGER_ORIGIN`, `TRUSTLINE_LEDGER_DATABASE`
//! (docs/operations.md has the whole reference):
//!
//! ```toml
//! [site]                               # written by `trustline site init`
//! name = "site-1"                      # the site's servers accept site-bound callers of it only
//! [provisioner]
//! listen = "127.0.0.1:7400"
//! ca_endpoint = "127.0.0.1:7401"       # when the CA runs apart
//! ledger_endpoint = "127.0.0.1:7402"   # when the ledger runs apart
//! vendor_roots_dir = "vendors"         # <name>.pem: one IC-vendor root each
//! claim_ttl_secs = 1800                # how long a claim nonce is accepted
//! [[vendors]]                          # or name them one by one
//! name = "Acme Silicon"
//! root = "/etc/trustline/acme-root.pem"
//! [ca]
//! listen = "127.0.0.1:7401"
//! [ledger]
//! listen = "127.0.0.1:7402"
//! origin = "trustline.example/custody-ledger"  # the checkpoint origin
//! database = "postgres://trustline@db/ledger"  # else files in <data>/ledger
//! database_pipeline_depth = 2          # batches in flight; 1: one at a time
//!
//! [ownership]
//! challenges_per_caller = 1000         # outstanding challenges per caller
//! challenges_per_site = 10000          # ... per site, for site-bound callers
//! [transport]                          # transport::Limits
//! ```

use std::path::{Path, PathBuf};

use provisioner::vendors::VendorRoot;
use serde::Deserialize;
use transport::Limits;

use crate::error::{Error, Result};

/// The configuration file inside a data directory.
pub const CONFIG_FILE: &str = backends::layout::CONFIG_FILE;

/// Everything `trustline serve` reads from `trustline.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which factory site this data directory is (the two-domain layout,
    /// issue 13); absent in the single-box layout.
    pub site: SiteConfig,
    /// The provisioner.
    pub provisioner: ProvisionerConfig,
    /// The CA service.
    pub ca: ListenConfig,
    /// The ledger service.
    pub ledger: LedgerConfig,
    /// The ownership service.
    pub ownership: OwnershipSettings,
    /// IC-vendor roots named one by one.
    pub vendors: Vec<VendorConfig>,
    /// Transport limits (message sizes, rates, lockouts).
    pub transport: Limits,
    /// The uplink to the OEM hub (issue 13); absent: no hub, no offline
    /// allowance ([`crate::uplink`]).
    pub uplink: Option<crate::uplink::UplinkConfig>,
}

/// The provisioner's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisionerConfig {
    /// Where it listens.
    pub listen: String,
    /// The CA service, when it runs apart.
    pub ca_endpoint: String,
    /// The ledger service, when it runs apart.
    pub ledger_endpoint: String,
    /// A directory of `<vendor name>.pem` root certificates, relative to the
    /// data directory.
    pub vendor_roots_dir: PathBuf,
    /// How long a claim nonce is valid, in seconds.
    pub claim_ttl_secs: u64,
}

impl Default for ProvisionerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7400".into(),
            ca_endpoint: "127.0.0.1:7401".into(),
            ledger_endpoint: "127.0.0.1:7402".into(),
            vendor_roots_dir: PathBuf::from("vendors"),
            claim_ttl_secs: 1800,
        }
    }
}

/// The ownership service's settings (issue 12 item 4).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OwnershipSettings {
    /// Most onboarding and lifecycle challenges one caller may have
    /// outstanding at once.
    pub challenges_per_caller: usize,
    /// Most challenges the callers of one site may have outstanding at
    /// once, for site-bound callers.
    pub challenges_per_site: usize,
}

impl Default for OwnershipSettings {
    fn default() -> Self {
        let budget = ownership::OwnershipConfig::default().challenge_budget;
        Self {
            challenges_per_caller: budget.per_caller,
            challenges_per_site: budget.per_site,
        }
    }
}

impl OwnershipSettings {
    /// The ownership service's configuration with these settings.
    pub fn to_config(&self) -> ownership::OwnershipConfig {
        ownership::OwnershipConfig {
            challenge_budget: ownership::Budget {
                per_caller: self.challenges_per_caller.max(1),
                per_site: self.challenges_per_site.max(1),
            },
            ..ownership::OwnershipConfig::default()
        }
    }
}

/// The site a data directory belongs to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// The site's name as the OEM enrolled it (`trustline site init
    /// --site`). When set, the site's servers accept stations,
    /// provisioners and uplinks of this site only
    /// (`transport::Guard::pinned_to_site`).
    pub name: Option<String>,
}

/// The ledger service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    /// Where it listens.
    pub listen: String,
    /// The checkpoint origin (and signed-note key name) of this ledger; the
    /// hub knows each site by it.
    pub origin: String,
    /// The PostgreSQL database holding the ledger (a `postgres://` URL,
    /// issue 14); empty: segment files in `<data>/ledger`.
    pub database: String,
    /// With `database`: batches of appends in flight at once (1 to 8; 2 by
    /// default). 1 places each batch on the locked head row, the setting
    /// for a PostgreSQL-compatible engine not yet checked with the
    /// pipeline (docs/operations.md).
    pub database_pipeline_depth: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7402".into(),
            origin: custody_ledger::DEFAULT_ORIGIN.into(),
            database: String::new(),
            database_pipeline_depth: 2,
        }
    }
}

/// A listening service's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Where it listens.
    pub listen: String,
}

/// One IC vendor named in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    /// The name orders use.
    pub name: String,
    /// Its root certificate (PEM or DER), relative to the data directory.
    pub root: PathBuf,
}

impl Config {
    /// Reads `<data>/trustline.toml` if present, then applies environment
    /// overrides.
    ///
    /// # Errors
    /// [`Error::Config`] for an unreadable or malformed file.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(CONFIG_FILE);
        let mut config: Config = if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
        } else {
            Config::default()
        };
        if config.ca.listen.is_empty() {
            config.ca.listen = "127.0.0.1:7401".into();
        }
        if config.ledger.listen.is_empty() {
            config.ledger.listen = "127.0.0.1:7402".into();
        }
        if config.ledger.origin.is_empty() {
            config.ledger.origin = custody_ledger::DEFAULT_ORIGIN.into();
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = env("TRUSTLINE_PROVISIONER_LISTEN") {
            config.provisioner.listen = v;
        }
        if let Some(v) = env("TRUSTLINE_CA_LISTEN") {
            config.ca.listen = v;
        }
        if let Some(v) = env("TRUSTLINE_LEDGER_LISTEN") {
            config.ledger.listen = v;
        }
        if let Some(v) = env("TRUSTLINE_CA_ENDPOINT") {
            config.provisioner.ca_endpoint = v;
        }
        if let Some(v) = env("TRUSTLINE_LEDGER_ENDPOINT") {
            config.provisioner.ledger_endpoint = v;
        }
        if let Some(v) = env("TRUSTLINE_VENDOR_ROOTS_DIR") {
            config.provisioner.vendor_roots_dir = PathBuf::from(v);
        }
        if let Some(v) = env("TRUSTLINE_SITE") {
            config.site.name = Some(v);
        }
        if let Some(v) = env("TRUSTLINE_LEDGER_ORIGIN") {
            config.ledger.origin = v;
        }
        if let Some(v) = env("TRUSTLINE_LEDGER_DATABASE") {
            config.ledger.database = v;
        }
        if let Some(v) = env("TRUSTLINE_CLAIM_TTL_SECS") {
            config.provisioner.claim_ttl_secs = v
                .parse()
                .map_err(|e| Error::Config(format!("TRUSTLINE_CLAIM_TTL_SECS: {e}")))?;
        }
        let depth = config.ledger.database_pipeline_depth;
        if !(1..=8).contains(&depth) {
            return Err(Error::Config(format!(
                "{}: [ledger] database_pipeline_depth must be between 1 and 8, not {depth}",
                path.display()
            )));
        }
        Ok(config)
    }

    /// The configured IC-vendor roots: those named in `[[vendors]]` and
    /// every `<name>.pem`/`<name>.der` in the roots directory.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Config`] for unreadable certificates.
    pub fn vendor_roots(&self, data_dir: &Path) -> Result<Vec<VendorRoot>> {
        let mut roots = Vec::new();
        for v in &self.vendors {
            roots.push(VendorRoot {
                name: v.name.clone(),
                certificate: read_der(&data_dir.join(&v.root), "CERTIFICATE")?,
            });
        }
        let dir = data_dir.join(&self.provisioner.vendor_roots_dir);
        if dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| Error::io(&dir, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pem" | "der")))
                .collect();
            files.sort();
            for path in files {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .ok_or_else(|| Error::Config(format!("{}: not a vendor name", path.display())))?
                    .to_owned();
                roots.push(VendorRoot {
                    name,
                    certificate: read_der(&path, "CERTIFICATE")?,
                });
            }
        }
        Ok(roots)
    }
}

/// Records in `<data>/trustline.toml` that the directory is site `site`
/// whose ledger signs as `origin` (`trustline site init`): writes the file
/// when it does not exist; an existing file must already say the same.
///
/// # Errors
/// [`Error::Config`] when an existing file names another site or origin, or
/// does not parse; [`Error::Io`].
pub fn write_site(data_dir: &Path, site: &str, origin: &str) -> Result<()> {
    custody_ledger::checkpoint::validate_origin(origin)
        .map_err(|e| Error::Config(format!("ledger origin: {e}")))?;
    let path = data_dir.join(CONFIG_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let existing: Config =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let ledger_origin = if existing.ledger.origin.is_empty() {
            custody_ledger::DEFAULT_ORIGIN
        } else {
            existing.ledger.origin.as_str()
        };
        if existing.site.name.as_deref() != Some(site) || ledger_origin != origin {
            return Err(Error::Config(format!(
                "{} exists: add `[site] name = {site:?}` and `[ledger] origin = {origin:?}` to it",
                path.display()
            )));
        }
        return Ok(());
    }
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let text = format!(
        "# Written by `trustline site init`: this directory is an enrolled site.\n\
         [site]\nname = {site:?}\n\n[ledger]\norigin = {origin:?}\n"
    );
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// Reads a PEM block with `tag` (or raw DER) from `path`.
///
/// # Errors
/// [`Error::Io`] when unreadable, [`Error::Config`] for the wrong PEM block.
pub fn read_der(path: &Path, tag: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes);
    }
    let block = pem::parse(&bytes).map_err(|e| Error::io(path, e))?;
    if block.tag() != tag {
        return Err(Error::Config(format!(
            "{}: expected a {tag} PEM block, found {}",
            path.display(),
            block.tag()
        )));
    }
    Ok(block.into_contents())
}

/// Writes IC-vendor roots as `<dir>/<name>.pem` (what the provisioner
/// reads from its vendor roots directory).
///
/// # Errors
/// [`Error::Io`].
pub fn write_vendor_roots(dir: &Path, roots: &[(String, Vec<u8>)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, der) in roots {
        let path = dir.join(format!("{name}.pem"));
        let text = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `trustline.toml` example of the operator's guide.
    fn documented_example() -> String {
        let guide = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
        )
        .expect("docs/operations.md");
        let start = guide.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + guide[start..].find("```").expect("the block ends");
        guide[start..end].to_owned()
    }

    #[test]
    fn the_operators_guide_example_is_a_valid_configuration_with_the_defaults() {
        let parsed: Config = toml::from_str(&documented_example()).expect("the example parses");
        let defaults = Config::default();
        assert_eq!(parsed.provisioner.listen, defaults.provisioner.listen);
        assert_eq!(
            parsed.provisioner.claim_ttl_secs,
            defaults.provisioner.claim_ttl_secs
        );
        assert_eq!(parsed.ca.listen, "127.0.0.1:7401");
        assert_eq!(parsed.ledger.listen, "127.0.0.1:7402");
        assert_eq!(parsed.ledger.origin, defaults.ledger.origin);
        assert_eq!(parsed.site.name.as_deref(), Some("site-1"));
        assert_eq!(parsed.vendors.len(), 1);
        assert_eq!(
            parsed.ownership.challenges_per_caller,
            defaults.ownership.challenges_per_caller
        );
        assert_eq!(
            parsed.ownership.challenges_per_site,
            defaults.ownership.challenges_per_site
        );
        // The [transport] values shown are the defaults.
        let shown = serde_json::to_value(&parsed.transport).expect("json");
        let default = serde_json::to_value(transport::Limits::default()).expect("json");
        assert_eq!(shown, default);
    }

    #[test]
    fn a_site_directory_records_its_site_and_origin_once() {
        let dir = tempfile::tempdir().expect("dir");
        write_site(dir.path(), "site-a", "trustline/site-a").expect("write");
        let config = Config::load(dir.path()).expect("load");
        assert_eq!(config.site.name.as_deref(), Some("site-a"));
        assert_eq!(config.ledger.origin, "trustline/site-a");
        write_site(dir.path(), "site-a", "trustline/site-a").expect("same again");
        assert!(write_site(dir.path(), "site-b", "trustline/site-a").is_err());
        assert!(write_site(dir.path(), "site-a", "bad origin").is_err());
    }

    #[test]
    fn the_postgresql_pipeline_depth_is_read_and_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let config = |text: &str| {
            std::fs::write(dir.path().join(CONFIG_FILE), text).expect("write");
            Config::load(dir.path())
        };
        assert_eq!(
            config("").expect("defaults").ledger.database_pipeline_depth,
            2
        );
        let one = config("[ledger]\ndatabase_pipeline_depth = 1\n").expect("one");
        assert_eq!(one.ledger.database_pipeline_depth, 1);
        for bad in [0, 9] {
            let err = config(&format!("[ledger]\ndatabase_pipeline_depth = {bad}\n"))
                .expect_err("out of range");
            assert!(err.to_string().contains("between 1 and 8"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "[provisioner]\nlisten_on = \"x\"\n",
        )
        .expect("write");
        assert!(matches!(Config::load(dir.path()), Err(Error::Config(_))));
    }
}
