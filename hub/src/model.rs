//! The hub's domain types: sites, cosigned checkpoints, forks, devices,
//! clones and orders. Generated protobuf types stop at [`crate::service`].

use std::fmt;

use custody_ledger::checkpoint::LedgerKey;
use custody_ledger::Hash;

/// A site as configured at the hub: its name (the site in its uplink
/// certificate), its checkpoint origin and its ledger's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The site's name, as in its callers' certificates (`site-a`).
    pub site: String,
    /// The site ledger's checkpoint identity: origin and P-256 key.
    pub key: LedgerKey,
}

impl SiteConfig {
    /// A site `site` whose ledger signs checkpoints for `origin` with the
    /// P-256 key `spki`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a bad origin or key.
    pub fn new(site: &str, origin: &str, spki: &[u8]) -> crate::Result<Self> {
        if site.is_empty() || site.len() > 64 {
            return Err(crate::Error::Config(format!(
                "site name {site:?} must be 1 to 64 bytes"
            )));
        }
        let key = LedgerKey::new(origin, spki)
            .map_err(|e| crate::Error::Config(format!("site {site}: {e}")))?;
        Ok(Self {
            site: site.to_string(),
            key,
        })
    }

    /// The checkpoint origin.
    pub fn origin(&self) -> &str {
        self.key.origin()
    }
}

/// The latest checkpoint the witness cosigned for a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// Its tree size.
    pub size: u64,
    /// Its root hash.
    pub root: Hash,
    /// The note with the site's and the witness's signature lines.
    pub note: String,
    /// The cosignature's timestamp, POSIX seconds.
    pub time: u64,
}

/// One checkpoint the witness cosigned, as its history keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CosignedPoint {
    /// Its tree size.
    pub size: u64,
    /// The cosignature's timestamp, POSIX seconds (the hub's clock).
    pub time: u64,
    /// Its root hash.
    pub root: Hash,
}

/// What the hub holds for a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteStatus {
    /// The site.
    pub site: String,
    /// Its checkpoint origin.
    pub origin: String,
    /// Entries mirrored: `[0, mirror_size)`.
    pub mirror_size: u64,
    /// RFC 6962 root of the mirrored entries.
    pub mirror_root: Hash,
    /// The latest cosigned checkpoint.
    pub cosigned: Option<Cosigned>,
    /// Forks recorded against the site.
    pub forks: u64,
}

impl SiteStatus {
    /// The latest cosigned size (0 when none).
    pub fn cosigned_size(&self) -> u64 {
        self.cosigned.as_ref().map_or(0, |c| c.size)
    }
}

/// Per-site ingest state, as the store keeps it. The watermark and the
/// registry change in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRow {
    /// Entries mirrored and applied to the registry: the watermark.
    pub size: u64,
    /// The site ledger's chain head after entry `size - 1`.
    pub head: Hash,
    /// The time of entry `size - 1` (`i64::MIN` before the first).
    pub last_time_ms: i64,
    /// The latest cosigned checkpoint.
    pub cosigned: Option<Cosigned>,
    /// Forks recorded.
    pub forks: u64,
}

impl Default for SiteRow {
    fn default() -> Self {
        Self {
            size: 0,
            head: custody_ledger::merkle::GENESIS_HEAD,
            last_time_ms: i64::MIN,
            cosigned: None,
            forks: 0,
        }
    }
}

/// What kind of fork the hub refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForkKind {
    /// A resent entry at a seq the hub holds, with different bytes: the site
    /// rewrote its history.
    RewrittenEntry,
    /// An entry that fails the checks `trustline ledger verify` applies.
    BadEntry,
    /// A signed checkpoint whose root differs from the root the hub holds
    /// for that size (cosigned, or recomputed from the mirror).
    ConflictingCheckpoint,
}

impl ForkKind {
    /// The stored code.
    pub(crate) fn code(self) -> u8 {
        match self {
            ForkKind::RewrittenEntry => 1,
            ForkKind::BadEntry => 2,
            ForkKind::ConflictingCheckpoint => 3,
        }
    }

    /// From the stored code.
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(ForkKind::RewrittenEntry),
            2 => Some(ForkKind::BadEntry),
            3 => Some(ForkKind::ConflictingCheckpoint),
            _ => None,
        }
    }
}

impl fmt::Display for ForkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForkKind::RewrittenEntry => "rewritten entry",
            ForkKind::BadEntry => "entry fails verification",
            ForkKind::ConflictingCheckpoint => "conflicting checkpoint",
        })
    }
}

/// A refused fork and its evidence, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRecord {
    /// Assigned by the store (0 before it is recorded).
    pub id: u64,
    /// The site.
    pub site: String,
    /// What kind.
    pub kind: ForkKind,
    /// The entry seq or the checkpoint size.
    pub position: u64,
    /// The held leaf hash or root (zeros when the hub holds nothing there).
    pub held_hash: Hash,
    /// The offered leaf hash or root.
    pub offered_hash: Hash,
    /// The held entry bytes (entry forks).
    pub held_entry: Vec<u8>,
    /// The offered entry bytes (entry forks).
    pub offered_entry: Vec<u8>,
    /// The held cosigned note (checkpoint forks).
    pub held_note: String,
    /// The offered signed note (checkpoint forks).
    pub offered_note: String,
    /// What differs.
    pub reason: String,
    /// First seen, Unix milliseconds.
    pub time_ms: i64,
    /// How often the same fork was offered again.
    pub repeats: u64,
}

/// Where a device is in the factory's custody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustodyState {
    /// Certified, not yet shipped.
    Certified,
    /// Shipped from the site.
    Shipped,
    /// Received at its destination.
    Received,
    /// Scrapped (final, 2.4.14.14).
    Scrapped,
}

impl CustodyState {
    pub(crate) fn code(self) -> u8 {
        match self {
            CustodyState::Certified => 1,
            CustodyState::Shipped => 2,
            CustodyState::Received => 3,
            CustodyState::Scrapped => 4,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(CustodyState::Certified),
            2 => Some(CustodyState::Shipped),
            3 => Some(CustodyState::Received),
            4 => Some(CustodyState::Scrapped),
            _ => None,
        }
    }
}

/// One site's record of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device's RoT id.
    pub rot_id: String,
    /// The site that certified it.
    pub site: String,
    /// Its product serial.
    pub serial: String,
    /// The order it was certified under.
    pub order_id: String,
    /// Its custody state.
    pub state: CustodyState,
    /// Seq of its `CERTIFIED` entry in the site ledger.
    pub certified_seq: u64,
    /// Seq of its latest entry.
    pub last_seq: u64,
    /// The certificate (DER) as recorded.
    pub certificate: Vec<u8>,
    /// SHA-256 of the device key's SubjectPublicKeyInfo.
    pub device_key_sha256: Hash,
    /// Its serial, rot_id or device key was certified at another site too
    /// (onboarding refuses it).
    pub cross_site_clone: bool,
}

/// Which identity of a device two sites both certified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKind {
    /// The product serial.
    Serial,
    /// The RoT id.
    RotId,
    /// SHA-256 of the device key's SPKI.
    DeviceKey,
}

impl IdentityKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            IdentityKind::Serial => 1,
            IdentityKind::RotId => 2,
            IdentityKind::DeviceKey => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(IdentityKind::Serial),
            2 => Some(IdentityKind::RotId),
            3 => Some(IdentityKind::DeviceKey),
            _ => None,
        }
    }
}

/// A site holding an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneHolder {
    /// The site.
    pub site: String,
    /// Seq of the `CERTIFIED` entry there.
    pub seq: u64,
    /// The rot_id certified.
    pub rot_id: String,
    /// The serial certified.
    pub serial: String,
}

/// A serial, rot_id or device key certified at more than one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneRecord {
    /// Which identity.
    pub kind: IdentityKind,
    /// The serial or rot_id (UTF-8) or the key hash.
    pub value: Vec<u8>,
    /// Every site holding it.
    pub holders: Vec<CloneHolder>,
    /// When the second holder was ingested, Unix milliseconds.
    pub detected_ms: i64,
}

/// What one site's opened order says, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderSiteRow {
    /// The order.
    pub order_id: String,
    /// The site.
    pub site: String,
    /// Whether the site's ledger has an `ORDER_OPENED` for it.
    pub opened: bool,
    /// Its seq.
    pub opened_seq: u64,
    /// The signed order's total quantity.
    pub quantity: u64,
    /// What the signed order allocates to this site.
    pub allocation: u64,
    /// SHA-256 of the signed order body the site opened.
    pub terms_sha256: Hash,
    /// `CERTIFIED` entries under the order at this site.
    pub certified: u64,
    /// `SCRAPPED` entries of its devices at this site.
    pub scrapped: u64,
}

/// An order's figures across sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFigures {
    /// The order.
    pub order_id: String,
    /// The signed quantity (the largest any site opened; see
    /// `terms_differ`).
    pub quantity: u64,
    /// One row per site that opened or certified under it.
    pub sites: Vec<OrderSiteRow>,
    /// Certified across sites.
    pub certified: u64,
    /// More certified across sites than the quantity.
    pub over_quantity: bool,
    /// Two sites opened different signed orders under this id.
    pub terms_differ: bool,
}

impl OrderFigures {
    /// Sums the per-site rows of one order.
    pub fn from_rows(order_id: &str, sites: Vec<OrderSiteRow>) -> Self {
        let certified = sites.iter().map(|r| r.certified).sum();
        let opened: Vec<&OrderSiteRow> = sites.iter().filter(|r| r.opened).collect();
        let quantity = opened.iter().map(|r| r.quantity).max().unwrap_or(0);
        let terms_differ = opened
            .windows(2)
            .any(|w| w[0].terms_sha256 != w[1].terms_sha256);
        Self {
            order_id: order_id.to_string(),
            quantity,
            over_quantity: certified > quantity,
            certified,
            terms_differ,
            sites,
        }
    }
}

impl OrderSiteRow {
    /// More certified at this site than its allocation.
    pub fn over_allocation(&self) -> bool {
        self.certified > self.allocation
    }
}

/// Per-site entry counts of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SiteCounts {
    /// `CERTIFIED` entries.
    pub certified: u64,
    /// `SHIPPED` entries.
    pub shipped: u64,
    /// `RECEIVED` entries.
    pub received: u64,
    /// `SCRAPPED` entries.
    pub scrapped: u64,
}

impl SiteCounts {
    /// Counts one custody entry that moved a device to `state`.
    pub(crate) fn count_custody(&mut self, state: CustodyState) {
        match state {
            CustodyState::Shipped => self.shipped += 1,
            CustodyState::Received => self.received += 1,
            CustodyState::Scrapped => self.scrapped += 1,
            CustodyState::Certified => {}
        }
    }
}
