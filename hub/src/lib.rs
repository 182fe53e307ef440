//! The OEM hub: a witness that cosigns every factory site's checkpoints, a
//! re-verified mirror of every site's custody ledger, and a registry of
//! devices across sites (issue 13; 2.4.14.3, 2.4.14.6, 2.4.14.20,
//! 2.4.14.22).
//!
//! Key design decision: the hub trusts no site. It accepts a site's entries
//! only after re-running the checks `trustline ledger verify` runs, and
//! cosigns a site checkpoint only when its root is the root of the entries
//! it mirrored *and* it is consistent with the last checkpoint it cosigned
//! — so a checkpoint carrying both signatures proves that the OEM holds a
//! copy of exactly that history. The hub knows nothing about X.509
//! issuance, HSM sessions (the witness key comes in through
//! [`cosign::WitnessSigner`]), factory policy or stations.
//!
//! - [`Hub`] is the core (blocking, over a [`store::HubStore`]);
//!   [`service::HubService`] serves it as `trustline.v1.Witness` and
//!   `trustline.v1.Registry`; [`server::run`] serves those behind
//!   `transport`'s guard; [`bench`] measures it (`trustline bench hub`,
//!   with the sites' real uplinks through [`bench::UplinkDriver`]).
//! - [`cosign`] is C2SP `cosignature/v1` (Ed25519).
//! - [`embedded::EmbeddedStore`] is the default store (redb on the hub's
//!   disk); PostgreSQL comes later (issue 14) behind the same trait.
//!
//! # The uplink contract (`proto/trustline/v1/hub.proto`)
//!
//! A site's uplink (role `site`, site-scoped) calls `Witness`:
//! `PushEntries(site, start, entries)` with each entry's exact stored
//! bytes, `AddCheckpoint(old_size, consistency_proof, checkpoint)` with the
//! C2SP tlog-witness `add-checkpoint` semantics, and `GetSiteState(site)`.
//! Auditors read `Registry`: `GetDevice` (by rot_id or serial), `ListSites`,
//! `ListOrders`, `ListForks`, `ListClones`. The tlog-witness HTTP answers
//! map onto gRPC codes as the table in [`service`] (and the proto) says:
//! 404 → `NOT_FOUND`, 403 → `PERMISSION_DENIED`, 400 and 422 →
//! `INVALID_ARGUMENT`, 409 for a stale old size → `ABORTED`, 409 for a
//! different root at a known size (a fork) → `ALREADY_EXISTS`; every
//! `ABORTED` and fork status carries a `SiteState` (mirror size and root,
//! cosigned size and root) in its details.
//!
//! # The witness state machine
//!
//! Per site, the hub holds one cosigned checkpoint `(size, root, note,
//! time)`, starting at none (size 0, the empty tree's root). For
//! `AddCheckpoint(old, proof, note)`, in this order:
//!
//! 1. the note parses and names a configured origin (else 404), the caller
//!    is that site, the site's ledger key signed it (else 403), `old ≤
//!    size` (else 400), at most 63 proof hashes;
//! 2. under the site's lock, with the state read from the store: if the
//!    hub cosigned this size with another root, or mirrors at least `size`
//!    entries whose root is not the signed one, it is a fork — recorded
//!    with both roots and notes, `ALREADY_EXISTS`;
//! 3. `old` must equal the cosigned size (else `ABORTED`, "409", with the
//!    held size and root);
//! 4. the consistency proof from `(old, cosigned root)` to `(size, root)`
//!    must verify (else 422);
//! 5. the mirror must hold `size` entries (else `ABORTED`: push first) —
//!    the cosignature's additional statement, as tlog-cosignature allows,
//!    is "the OEM mirrors this tree and re-verified every entry in it";
//! 6. cosign (timestamp never below the last one), then
//!    [`store::HubStore::commit_cosigned`] — a durable compare-and-set on
//!    the size read in step 2 — and only then answer.
//!
//! Because the cosigned state is re-read from the store on every call, a
//! restarted hub (or a second one on the same database) never cosigns
//! anything inconsistent with what was cosigned before; the cosigned size
//! never goes back. A truncated history is refused by step 3 (and by step 2
//! when the shorter tree's root differs from the mirror's).
//!
//! # The mirror
//!
//! `PushEntries(site, start, entries)`: a start beyond the mirror is
//! `ABORTED` (with the mirror size to resume from). Entries the hub holds
//! must be byte-identical (compared by leaf hash) — else a rewritten history,
//! recorded as a fork with both entries; they are skipped, so a resent batch
//! or a replay from an older size adds and counts nothing twice. The rest
//! are re-verified in order (see `check.rs`: custody-ledger's
//! `entry::check_stored`, then seq, `prev_hash`, time, `device_prev`, the
//! entries' unique keys and quotas within the site's ledger, the Merkle
//! tree by custody-ledger's `Frontier`); the first failure refuses the whole
//! batch and is recorded as a fork. A verified batch, every derived value
//! (Merkle nodes, device heads, keys, quota counts), the registry's updates
//! and the site's watermark are committed in one durable transaction
//! ([`store::HubStore::commit_ingest`], a compare-and-set on the
//! watermark), so a hub killed mid-ingest has either all of the batch or
//! none, and the site's resend replays exactly. [`Hub::export_site`] writes
//! a site's mirror in custody-ledger's export format, which `trustline
//! ledger verify` checks offline with the site's key.
//!
//! # The registry
//!
//! From the mirrored entries: device → site, seq, custody state,
//! certificate (bytes), order; per-(order, site) counts; per-site counts. A
//! serial, rot_id or device key `CERTIFIED` at two sites is a cross-site
//! clone: the store detects it inside the ingest transaction, records it
//! once per identity with every holder, and marks each holder's device
//! record `cross_site_clone`, which onboarding at the hub (phase 2) refuses.
//!
//! # Orders split across sites
//!
//! A signed `ProductionOrder` keeps its total `quantity` and may name
//! per-site `allocations` (`SiteAllocation {site, quantity,
//! offline_allowance}`, fields added to `common.proto`); a single-site
//! order is `site` plus `quantity` as before, its allowance in
//! `offline_allowance`. The OEM signs allocations that sum to at most the
//! quantity, and the factory refuses to open an order whose allocations do
//! not (`provisioner::orders`: distinct sites, each above 0, `site` empty).
//! Each site enforces only its own share (`Order::share`), locally and
//! offline: its ledger's quota counter for the order is limited to its
//! allocation, so no site needs the others' counts to stay within the
//! quantity, and a site
//! cut off from the hub still cannot exceed its share (and certifies at most
//! its `offline_allowance` beyond its last cosigned checkpoint, 2.4.14.20).
//! The hub sums what every site certified under the order and flags a site
//! over its allocation, a total over the quantity, an order that does not
//! verify under the OEM order key (it allocates nothing, so anything
//! certified under it is over), and two sites that opened different signed
//! terms under one order id. Moving capacity between sites is a new signed
//! order version with new allocations (phase 2).
//!
//! # The site side (`site::uplink`)
//!
//! A site's uplink is this contract's client: `GetSiteState`, then
//! `PushEntries` from the mirror size, then `AddCheckpoint` with the old
//! size the hub holds and the consistency proof from it, resynchronising
//! on every `ABORTED` from the `SiteState` in its details, backing off
//! while the hub is unreachable, and stopping for good on a fork answer
//! (`ALREADY_EXISTS`, or a refusal whose `trustline-refusal` reason starts
//! with `fork`). It checks what the hub says against its own ledger (the
//! mirrored and cosigned roots) and every cosignature against the
//! configured witness key ([`trustline_proto::cosignature`], the same code
//! [`cosign::verify_cosignature`] uses), keeps each cosigned note beside
//! its checkpoint, and counts the factory's offline allowance from the
//! last one (`provisioner::allowance`: a site certifies at most
//! `min(quantity, certified in its last cosigned checkpoint + the order's
//! offline allowance)`).
//!
//! # Around it
//!
//! `trustline serve hub` (calls [`server::run`] with the witness key from
//! the hub's HSM token behind [`cosign::WitnessSigner`]), ownership at the
//! hub over [`Hub::devices`] and the two-site demo live in `deploy` and the
//! binary; the audit across sites (`audit::hub`) reads a stopped hub's
//! store through [`EmbeddedStore::open_existing`], every cosigned
//! checkpoint ([`store::HubStore::cosignatures`]) and [`export_mirror`].

#![forbid(unsafe_code)]

pub mod bench;
mod check;
pub mod cosign;
pub mod embedded;
mod error;
mod hub;
pub mod model;
pub mod pg;
pub mod server;
pub mod service;
pub mod store;

pub use check::allocation_of;
pub use cosign::{Cosigner, SoftwareWitnessSigner, WitnessSigner};
pub use embedded::EmbeddedStore;
pub use error::{Error, Result};
pub use hub::{export_mirror, Cosignature, Hub, HubConfig, MAX_PROOF_LINES, MAX_PUSH_ENTRIES};
pub use model::{CosignedPoint, SiteConfig, SiteStatus};
pub use pg::PgHubStore;
