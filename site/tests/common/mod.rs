//! The uplink tests' shared fixture: a site key, a real hub in this
//! process on its embedded store, and the site's `Role::Site` channel to
//! it through the transport guard.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // Shared by several test binaries; tests may unwrap.

use std::path::Path;
use std::sync::Arc;

use hub::{Cosigner, Hub, HubConfig, SiteConfig, SoftwareWitnessSigner};
use site::uplink::UplinkConfig;
use transport::{Caller, Guard, InProcessChannel, Limits, Metrics, Role};
use trustline_proto::signer::{Signer, SoftwareSigner};

pub const SITE: &str = "site-a";
pub const ORIGIN: &str = "site-a.example/ledger";
pub const WITNESS: &str = "oem.example/hub-witness";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub signer: Arc<SoftwareSigner>,
    pub hub: Hub,
    pub guard: Guard,
    pub witness_pkcs8: Vec<u8>,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let signer = Arc::new(SoftwareSigner::generate());
        let rng = ring::rand::SystemRandom::new();
        let witness_pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let hub = open_hub(dir.path(), &signer, &witness_pkcs8);
        let limits = Limits {
            unlimited_roles: Role::ALL.to_vec(),
            ..Limits::default()
        };
        Self {
            dir,
            signer,
            hub,
            guard: Guard::new(limits, Metrics::new()),
            witness_pkcs8,
        }
    }

    pub fn cosigner(&self) -> Cosigner {
        cosigner(&self.witness_pkcs8)
    }

    pub fn config(&self) -> UplinkConfig {
        UplinkConfig {
            hub: "in-process".into(),
            site: SITE.into(),
            witness_key: self.cosigner().verifier_key(),
            retry_min_ms: 5,
            retry_max_ms: 20,
            push_batch: 7,
            ..UplinkConfig::default()
        }
    }

    pub fn channel(&self) -> InProcessChannel {
        let routes = hub::server::routes(&self.hub, &self.guard).unwrap();
        InProcessChannel::new(
            routes,
            &self.guard,
            Caller::new(Role::Site, SITE, "uplink").unwrap(),
        )
    }
}

pub fn cosigner(pkcs8: &[u8]) -> Cosigner {
    Cosigner::new(
        WITNESS,
        Box::new(SoftwareWitnessSigner::from_pkcs8(pkcs8).unwrap()),
    )
    .unwrap()
}

pub fn open_hub(dir: &Path, signer: &SoftwareSigner, witness: &[u8]) -> Hub {
    Hub::open_embedded(
        &dir.join("hub"),
        HubConfig {
            sites: vec![SiteConfig::new(SITE, ORIGIN, signer.public_key_der()).unwrap()],
            order_key: None,
        },
        cosigner(witness),
    )
    .unwrap()
}
