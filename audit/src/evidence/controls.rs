//! How each requirement is met: the control Trustline implements, the tests
//! that prove it, the live ledger evidence that goes with it, and what the
//! OEM must supply where Trustline cannot meet the requirement alone.
//!
//! Keep this table honest: claim only what the code does, and name only
//! tests that would fail without the control. `trustline/tests/evidence.rs`
//! checks that every named test exists; review checks that it proves what
//! the row says.

/// Who meets a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Trustline meets it.
    Trustline,
    /// Trustline meets part of it; the OEM supplies the rest.
    Shared,
    /// A business process, policy or physical measure Trustline cannot
    /// meet; the OEM supplies it.
    Oem,
}

/// A test: the file (from the repository root) and the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRef {
    /// Path from the repository root.
    pub file: &'static str,
    /// The test function's name.
    pub function: &'static str,
}

/// Live ledger figures that bear on a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Orders opened and closed.
    Orders,
    /// RoTs claimed.
    Claims,
    /// Devices certified.
    Certified,
    /// HSM-made keys delivered wrapped.
    KeysDelivered,
    /// Duplicate attempts refused.
    Duplicates,
    /// Counterfeit attempts refused.
    Counterfeits,
    /// Over-quota attempts refused.
    QuotaRefusals,
    /// Shipped, received, scrapped.
    Custody,
    /// Ownership transfers and onboardings.
    Ownership,
    /// Decommissioned, recommissioned, retired.
    Lifecycle,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Control {
    /// The requirement number.
    pub req: &'static str,
    /// Who meets it.
    pub status: Status,
    /// How it is met (Trustline's part), or why Trustline has no part.
    pub how: &'static str,
    /// Tests that prove Trustline's part.
    pub tests: &'static [TestRef],
    /// Live figures that bear on it (the verify result and latest
    /// checkpoint are added to every row Trustline takes part in).
    pub live: &'static [Live],
    /// What the OEM must supply (empty when Trustline meets it alone).
    pub oem: &'static str,
}

const fn t(file: &'static str, function: &'static str) -> TestRef {
    TestRef { file, function }
}

// Test files, once each.
const AUDIT: &str = "trustline/tests/audit.rs";
const AUDIT_UNIT: &str = "audit/src/tests.rs";
const FACTORY_E2E: &str = "tests/tests/factory_line.rs";
const FACTORY_UNIT: &str = "provisioner/src/tests.rs";
const ORDERS_UNIT: &str = "provisioner/src/orders.rs";
const NONCE_UNIT: &str = "provisioner/src/nonce.rs";
const LABEL_UNIT: &str = "provisioner/src/label.rs";
const LEDGER: &str = "custody-ledger/tests/ledger.rs";
const TAMPER: &str = "custody-ledger/tests/tamper.rs";
const KILL9: &str = "custody-ledger/tests/kill9.rs";
const HSM: &str = "ca-service/tests/hsm.rs";
const CA: &str = "ca-service/tests/ca.rs";
const AUTHZ: &str = "transport/tests/authz.rs";
const MTLS: &str = "transport/tests/mtls.rs";
const LIMITS: &str = "transport/tests/limits.rs";
const VOUCHER: &str = "proto/src/voucher/tests.rs";
const CRASH: &str = "tests/tests/provisioner_crash.rs";
const AUDIT_E2E: &str = "tests/tests/audit_line.rs";
const OWNERSHIP: &str = "tests/tests/ownership.rs";
const DEVICE: &str = "hsm-sim/src/rot/tests.rs";
const LIFE: &str =
    "a_device_lives_from_the_factory_to_retirement_with_every_step_recorded_and_proven";
const FORGED: &str =
    "forged_reordered_forked_and_unauthorised_transfers_are_refused_and_only_the_refusal_recorded";
const ONBOARD: &str =
    "onboarding_refuses_replays_clones_scrapped_devices_and_steps_without_a_user_reset";
const AUDIT_LINE: &str = "the_audit_of_a_running_line_over_mtls_matches_what_the_line_did";
const UPLINK_E2E: &str = "tests/tests/uplink.rs";
const DEMO_SITES: &str = "tests/tests/demo_sites.rs";
const HUB_AUDIT: &str =
    "the_hub_audit_reports_every_site_the_planted_fork_clone_and_offline_production_and_fails_closed";
const HUB_OWNERSHIP: &str = "tests/tests/hub_ownership.rs";
const HUB_FIELD: &str =
    "the_hub_onboards_a_device_whose_factory_is_stopped_and_refuses_a_cross_site_clone";

/// The table, in framework order.
pub static CONTROLS: &[Control] = &[
    // ------------------------------------------------ identity and keys
    Control {
        req: "2.4.5.19",
        status: Status::Shared,
        how: "Trustline's signing keys (OEM root and site intermediate CA, order, voucher and ledger checkpoint keys) \
              are HSM token objects used only through the CA and ledger services; HSM login needs the PIN from a file \
              or an environment variable, never an argument; only the provisioner role may call the CA (one role x RPC table).",
        tests: &[
            t(HSM, "a_wrong_pin_is_refused_by_name"),
            t(AUTHZ, "the_table_says_what_the_design_says"),
            t(AUTHZ, "the_layer_allows_exactly_what_the_table_says_for_every_role_and_method"),
        ],
        live: &[],
        oem: "access control over the product's firmware signing keys, and custody of the HSM PINs and of the OEM \
              order key's approvals (people, roles, approvals).",
    },
    Control {
        req: "2.4.5.20",
        status: Status::Shared,
        how: "Every Trustline signing key is generated inside the HSM as a sensitive, non-extractable PKCS#11 object \
              and never leaves it.",
        tests: &[t(HSM, "ca_keys_are_sensitive_and_never_extractable")],
        live: &[],
        oem: "an HSM validated to FIPS 140-2/140-3 level 2 or higher, and its certificate; the demo's SoftHSM2 token \
              is not validated.",
    },
    Control {
        req: "2.4.5.32",
        status: Status::Shared,
        how: "Claiming installs the OEM trust anchor (the root that validates later software) in each RoT's one-time \
              claim slot; the RoT's signed receipt naming the anchor's hash is verified and recorded (CLAIMED), and a \
              receipt naming any other anchor, a forged one or a replayed one is refused.",
        tests: &[
            t(FACTORY_UNIT, "expired_forged_and_foreign_anchor_receipts_are_refused"),
            t(NONCE_UNIT, "edited_and_malformed_nonces_are_refused"),
        ],
        live: &[Live::Claims],
        oem: "the update-signing keys and update process themselves (Trustline provisions the anchor, not the updates).",
    },
    Control {
        req: "2.4.7.7",
        status: Status::Oem,
        how: "Trustline issues no passwords or passcodes: devices authenticate with their own key and certificate \
              (see 2.4.8.18).",
        tests: &[],
        live: &[],
        oem: "evidence that any password the product uses is unique per device or set by the user.",
    },
    Control {
        req: "2.4.8.1",
        status: Status::Shared,
        how: "Each device is identified by its RoT's hardware attestation key: rot_id = SHA-256 of its public key, \
              verified against the IC vendor's chain at claiming (counterfeits refused and recorded), written into the \
              device certificate (SAN URI) and keying every ledger entry; each rot_id is certified once.",
        tests: &[
            t(FACTORY_E2E, "each_refusal_has_its_own_status"),
            t(FACTORY_E2E, "duplicates_are_refused_with_already_exists_recorded_and_nothing_issued"),
        ],
        live: &[Live::Certified, Live::Counterfeits, Live::Duplicates],
        oem: "silicon whose RoT keeps its attestation key tamper-resistant (the IC vendor's certification), and the \
              list of IC-vendor roots to trust.",
    },
    Control {
        req: "2.4.8.18",
        status: Status::Trustline,
        how: "Every device gets a unique identity key made in its RoT (or in the HSM and delivered wrapped to the RoT's \
              attested transport key), attested by the RoT, and certified as an IEEE 802.1AR-style IDevID naming its \
              serial and rot_id; a serial, a rot_id and a device key are each certified once (ALREADY_EXISTS otherwise).",
        tests: &[
            t(FACTORY_E2E, "both_personalisation_modes_certify_and_every_chain_verifies_with_openssl"),
            t(FACTORY_E2E, "duplicates_are_refused_with_already_exists_recorded_and_nothing_issued"),
            t(CA, "every_certificate_issued_verifies_with_openssl_and_follows_the_profile"),
        ],
        live: &[Live::Certified, Live::Duplicates],
        oem: "",
    },
    Control {
        req: "2.4.9.3",
        status: Status::Shared,
        how: "Device identity keys: random and unique (RoT or HSM generation; uniqueness enforced by the ledger), \
              distributed only wrapped (ECDH + AES key wrap) to an attested RoT key, the HSM copy destroyed after \
              wrapping, revoked by retirement into a signed CRL.",
        tests: &[
            t(HSM, "hsm_made_device_keys_unwrap_on_the_device_and_leave_nothing_behind"),
            t(CA, "crls_list_the_serials_and_verify_with_openssl"),
            t(LEDGER, "sixty_four_racers_on_one_unique_key_one_wins"),
        ],
        live: &[Live::KeysDelivered, Live::Lifecycle],
        oem: "the documented key management process, including keys other than device identities (update, \
              application and service keys) and their update schedule.",
    },
    Control {
        req: "2.4.9.4",
        status: Status::Trustline,
        how: "Keys are generated on the device, or in the HSM and inserted only wrapped to the RoT's attested \
              transport key (a transport key that is not P-256 or not attested is refused); the HSM copy is \
              destroyed, so no copy exists outside the device.",
        tests: &[
            t(HSM, "hsm_made_device_keys_unwrap_on_the_device_and_leave_nothing_behind"),
            t(HSM, "a_transport_key_that_is_not_p256_is_refused"),
        ],
        live: &[Live::KeysDelivered],
        oem: "",
    },
    Control {
        req: "2.4.9.5",
        status: Status::Shared,
        how: "Trustline uses ECDSA P-256 with SHA-256 throughout and TLS 1.3 only (TLS 1.2 and plaintext refused); no \
              MD5 or SHA-1; the audit reports any recorded certificate signed with another algorithm or holding \
              another kind of key.",
        tests: &[
            t(MTLS, "tls_1_2_and_plaintext_clients_are_refused"),
            t(AUDIT_UNIT, "weak_algorithms_in_recorded_certificates_are_findings"),
        ],
        live: &[],
        oem: "the same assurance for the product's own cryptography.",
    },
    Control {
        req: "2.4.9.7",
        status: Status::Oem,
        how: "Key storage on the device is the RoT's; Trustline only records what the RoT attests.",
        tests: &[],
        live: &[],
        oem: "the device's secure storage (RoT or secure element) and its certification.",
    },
    Control {
        req: "2.4.9.9",
        status: Status::Trustline,
        how: "Device private keys are generated inside the RoT, or in the HSM and programmed only wrapped to the RoT; \
              every certified key carries the RoT's signed key attestation, and its certification is recorded \
              before it is released.",
        tests: &[
            t(FACTORY_E2E, "both_personalisation_modes_certify_and_every_chain_verifies_with_openssl"),
            t(HSM, "hsm_made_device_keys_unwrap_on_the_device_and_leave_nothing_behind"),
        ],
        live: &[Live::Certified, Live::KeysDelivered],
        oem: "",
    },
    Control {
        req: "2.4.9.10",
        status: Status::Shared,
        how: "All Trustline keys are P-256 (128-bit security); certificate serials are 128-bit random; the audit \
              reports any recorded device key that is not P-256.",
        tests: &[
            t(CA, "every_certificate_issued_verifies_with_openssl_and_follows_the_profile"),
            t(AUDIT_UNIT, "weak_algorithms_in_recorded_certificates_are_findings"),
        ],
        live: &[],
        oem: "the key-length policy for the product's other keys.",
    },
    Control {
        req: "2.4.13.4",
        status: Status::Shared,
        how: "Trustline's own servers use certificates from the service CA; a connection outliving its certificate \
              is refused.",
        tests: &[t(MTLS, "a_connection_outliving_its_certificate_is_refused_from_then_on")],
        live: &[],
        oem: "certificates from a trusted CA for the product's public web servers, and the renewal process.",
    },
    Control {
        req: "2.4.13.9",
        status: Status::Trustline,
        how: "Every Trustline endpoint requires a client certificate chaining to the service CA over TLS 1.3; \
              missing, expired, foreign or identity-less certificates are refused.",
        tests: &[
            t(MTLS, "missing_expired_and_foreign_client_certificates_are_refused"),
            t(MTLS, "a_verified_certificate_naming_no_caller_is_never_allowed"),
            t(MTLS, "clients_with_a_service_certificate_get_in_with_their_role"),
        ],
        live: &[],
        oem: "",
    },
    Control {
        req: "2.4.13.25",
        status: Status::Trustline,
        how: "The device registries (custody ledger, ownership state) answer only the roles the role x RPC table \
              allows; stations only for their own site.",
        tests: &[
            t(AUTHZ, "the_layer_allows_exactly_what_the_table_says_for_every_role_and_method"),
            t(AUTHZ, "a_station_of_site_a_cannot_act_on_site_b_orders_and_is_counted"),
        ],
        live: &[],
        oem: "",
    },
    Control {
        req: "2.4.13.29",
        status: Status::Oem,
        how: "Trustline does not encrypt its files: the ledger holds no secrets (owners appear only as salted \
              commitments) and the keys stay in the HSM.",
        tests: &[],
        live: &[],
        oem: "storage encryption (volume or disk) for the data directory and its backups.",
    },
    Control {
        req: "2.4.13.30",
        status: Status::Shared,
        how: "Only the provisioner role may append to the ledger and call the CA; reads need an allowed role.",
        tests: &[
            t(AUTHZ, "the_table_says_what_the_design_says"),
            t(AUTHZ, "the_layer_allows_exactly_what_the_table_says_for_every_role_and_method"),
        ],
        live: &[],
        oem: "operating-system access control on the data directory and the hosts.",
    },
    // --------------------------------------------------- 2.4.14
    Control {
        req: "2.4.14.1",
        status: Status::Oem,
        how: "Trustline records the firmware digest each RoT reports in its key attestation, but does not control \
              production test software.",
        tests: &[],
        live: &[],
        oem: "the procedure that removes or secures production test and calibration software before dispatch.",
    },
    Control {
        req: "2.4.14.2",
        status: Status::Oem,
        how: "Not in Trustline's scope.",
        tests: &[],
        live: &[],
        oem: "encrypted off-site storage or escrow of design files, sources and production images.",
    },
    Control {
        req: "2.4.14.3",
        status: Status::Trustline,
        how: "Every device is logged by rot_id and serial in an append-only, hash-chained, Merkle-proven ledger with \
              signed checkpoints; any edit is caught by the offline verifier; `trustline audit` finds duplicated \
              serials, RoTs and keys in the ledger and clones among field sightings. Across sites, the OEM hub's \
              registry catches a serial, rot_id or device key certified at two sites, refuses it for onboarding, \
              and `trustline audit --hub-dir` reports every such cross-site clone.",
        tests: &[
            t(AUDIT, "planted_anomalies_are_reported_exactly"),
            t("hub/tests/registry.rs", "the_same_serial_rot_id_or_device_key_at_two_sites_is_a_cross_site_clone"),
            t(DEMO_SITES, HUB_AUDIT),
            t(AUDIT, "a_tampered_entry_is_the_only_finding_and_stops_the_audit"),
            t(AUDIT_E2E, AUDIT_LINE),
            t(TAMPER, "every_edited_byte_of_an_entry_is_caught_even_with_a_fixed_checksum"),
            t(KILL9, "sigkill_at_random_moments_loses_nothing_acknowledged"),
            t(FACTORY_E2E, "duplicates_are_refused_with_already_exists_recorded_and_nothing_issued"),
        ],
        live: &[Live::Certified, Live::Duplicates],
        oem: "",
    },
    Control {
        req: "2.4.14.4",
        status: Status::Shared,
        how: "A duplicate serial is refused before a certificate is released (ALREADY_EXISTS, recorded as \
              DUPLICATE_REJECTED, also when two stations race), so such a device has no identity to ship with; the \
              audit reports any duplicate serial in the ledger and counts refused devices not yet scrapped.",
        tests: &[
            t(FACTORY_E2E, "duplicates_are_refused_with_already_exists_recorded_and_nothing_issued"),
            t(AUDIT, "planted_anomalies_are_reported_exactly"),
        ],
        live: &[Live::Duplicates, Live::Custody],
        oem: "the physical procedure that reprograms or destroys refused devices and records it (SCRAPPED).",
    },
    Control {
        req: "2.4.14.5",
        status: Status::Oem,
        how: "Not in Trustline's scope.",
        tests: &[],
        live: &[],
        oem: "production test run in the secured-boot, authenticated mode.",
    },
    Control {
        req: "2.4.14.6",
        status: Status::Oem,
        how: "Trustline keeps CA keys out of the factory (HSM, signing over mutual TLS) and refuses stations of other \
              sites, but the provisioning area itself is physical.",
        tests: &[],
        live: &[],
        oem: "the securely controlled area and process for provisioning in an untrusted facility.",
    },
    Control {
        req: "2.4.14.7",
        status: Status::Trustline,
        how: "A COSE-signed ownership voucher is created at certification, bound to the device and its chain, and \
              extended by each owner signing the next; forged, reordered, cut-back or altered vouchers are refused.",
        tests: &[
            t(VOUCHER, "a_chain_of_three_owners_verifies"),
            t(VOUCHER, "a_forged_entry_is_refused"),
            t(VOUCHER, "a_voucher_cut_back_to_an_earlier_owner_is_caught_against_the_ledger"),
            t(OWNERSHIP, LIFE),
            t(OWNERSHIP, FORGED),
        ],
        live: &[Live::Ownership],
        oem: "",
    },
    Control {
        req: "2.4.14.8",
        status: Status::Oem,
        how: "Not in Trustline's scope (Trustline's own dependencies are pinned in Cargo.lock).",
        tests: &[],
        live: &[],
        oem: "the auditable manifest of the product's libraries.",
    },
    Control {
        req: "2.4.14.9",
        status: Status::Trustline,
        how: "Device keys are made in the RoT or in the HSM and programmed only wrapped to the RoT; each device key \
              is certified once (no shared key), and the audit flags any key on two certificates.",
        tests: &[
            t(HSM, "hsm_made_device_keys_unwrap_on_the_device_and_leave_nothing_behind"),
            t(FACTORY_E2E, "duplicates_are_refused_with_already_exists_recorded_and_nothing_issued"),
            t(AUDIT_UNIT, "duplicate_rots_keys_and_custody_anomalies_are_found_exactly"),
        ],
        live: &[Live::Certified, Live::KeysDelivered],
        oem: "",
    },
    Control {
        req: "2.4.14.10",
        status: Status::Shared,
        how: "`trustline inspect` has the device sign a fresh challenge with its identity key, checks the signature \
              against the certificate, the chain against the OEM root and the rot_id in the SAN URI, and shows the \
              device's custody history with an inclusion proof for each entry; a wrong root is reported inauthentic.",
        tests: &[
            t(CA, "every_certificate_issued_verifies_with_openssl_and_follows_the_profile"),
            t(OWNERSHIP, LIFE),
        ],
        live: &[Live::Custody],
        oem: "the inspection tool or connection that reaches the device.",
    },
    Control {
        req: "2.4.14.11",
        status: Status::Shared,
        how: "Each certified device gets a printed label derived from its rot_id (Crockford base32 with a check \
              symbol, plus the SKU), checkable against the rot_id; it is recorded in the CERTIFIED entry.",
        tests: &[
            t(LABEL_UNIT, "a_label_matches_its_rot_and_no_other"),
            t(LABEL_UNIT, "any_single_symbol_typo_is_caught"),
        ],
        live: &[Live::Certified],
        oem: "printing and attaching the label.",
    },
    Control {
        req: "2.4.14.12",
        status: Status::Trustline,
        how: "Every custody entry (claimed, certified, shipped, received, scrapped) is keyed by the rot_id and \
              chained to the device's previous entry; a device's history comes with inclusion proofs.",
        tests: &[
            t(LEDGER, "entries_chain_prove_and_survive_a_restart"),
            t(TAMPER, "reordered_entries_are_caught"),
        ],
        live: &[Live::Custody],
        oem: "",
    },
    Control {
        req: "2.4.14.13",
        status: Status::Oem,
        how: "Not in Trustline's scope.",
        tests: &[],
        live: &[],
        oem: "product documentation of normal behaviour (e.g. a MUD file).",
    },
    Control {
        req: "2.4.14.14",
        status: Status::Shared,
        how: "Scrapping is recorded (SCRAPPED, final: no later custody step is accepted); the audit reports scrapped \
              devices that are shipped again or seen in the field.",
        tests: &[t(AUDIT_UNIT, "scrapped_devices_that_reappear_are_findings")],
        live: &[Live::Custody],
        oem: "the disposal procedure at each site and the monitoring of its compliance.",
    },
    Control {
        req: "2.4.14.15",
        status: Status::Shared,
        how: "CA keys never travel (they stay in the HSM); device keys travel only wrapped to the device; all \
              traffic is TLS 1.3 with client certificates.",
        tests: &[
            t(MTLS, "tls_1_2_and_plaintext_clients_are_refused"),
            t(HSM, "hsm_made_device_keys_unwrap_on_the_device_and_leave_nothing_behind"),
        ],
        live: &[],
        oem: "encrypted or private delivery of firmware images, production tools and manufacturing files.",
    },
    Control {
        req: "2.4.14.16",
        status: Status::Shared,
        how: "At certification the RoT's key attestation must name the order's one allowed firmware digest and a \
              locked readout; otherwise no certificate is issued (FAILED_PRECONDITION).",
        tests: &[t(FACTORY_UNIT, "wrong_firmware_and_an_unlocked_readout_are_refused_before_issuance")],
        live: &[Live::Certified],
        oem: "protection of firmware images and configuration in the programming environment.",
    },
    Control {
        req: "2.4.14.17",
        status: Status::Shared,
        how: "A RoT whose attestation does not chain to a configured IC-vendor root is refused at claiming and \
              recorded (COUNTERFEIT_REJECTED) before it is given anything but the public anchor.",
        tests: &[
            t(FACTORY_E2E, "each_refusal_has_its_own_status"),
        ],
        live: &[Live::Counterfeits],
        oem: "the programming process that releases confidential images only to devices Trustline has claimed.",
    },
    Control {
        req: "2.4.14.18",
        status: Status::Trustline,
        how: "Counterfeit silicon is refused at claiming; certification requires a claim under the order; the audit \
              re-checks every recorded certificate against the OEM CA and its entry, and flags certificates without \
              a claim or a valid order; onboarding refuses cloned, scrapped, retired and revoked devices.",
        tests: &[
            t(FACTORY_E2E, "each_refusal_has_its_own_status"),
            t(FACTORY_UNIT, "duplicates_clones_counterfeits_and_overproduction_are_refused_and_recorded"),
            t(AUDIT_UNIT, "certificates_and_orders_are_checked_against_the_oem_keys"),
            t(OWNERSHIP, ONBOARD),
        ],
        live: &[Live::Counterfeits, Live::Certified, Live::Ownership],
        oem: "",
    },
    Control {
        req: "2.4.14.19",
        status: Status::Trustline,
        how: "CA and voucher signing keys are non-extractable HSM objects; only the provisioner role may ask the CA \
              to sign, over mutual TLS.",
        tests: &[
            t(HSM, "ca_keys_are_sensitive_and_never_extractable"),
            t(AUTHZ, "the_layer_allows_exactly_what_the_table_says_for_every_role_and_method"),
        ],
        live: &[],
        oem: "",
    },
    Control {
        req: "2.4.14.20",
        status: Status::Shared,
        how: "Production needs no resource over the Internet in real time: each site runs its whole line on site \
              (`serve site`), and its link to the OEM hub is outbound only and may drop. While the hub is \
              unreachable a site keeps certifying up to the offline allowance the OEM signed into the order, counted \
              beyond its last hub-cosigned checkpoint; past it `Certify` is refused (`RESOURCE_EXHAUSTED`, \
              `offline-allowance`) and recorded, under concurrent stations, with nothing half done. When the link \
              returns the backlog syncs by itself, is re-verified and cosigned (witnessed), and no device certified \
              offline is lost, even when the site or the hub dies mid-sync. `trustline audit --hub-dir` reports, per \
              site, the time since its last cosignature, every backlog that waited for its cosignature beyond a \
              threshold or hit the allowance (devices certified in it, refusals), and what is not cosigned yet. \
              Per-caller rate limits and lockouts keep a flooding station from starving the others.",
        tests: &[
            t(UPLINK_E2E, "a_site_offline_past_its_allowance_stops_at_exactly_the_allowance_and_resumes_after_the_sync"),
            t(
                "tests/tests/uplink_crash.rs",
                "no_device_certified_offline_is_missing_at_the_hub_when_the_site_or_the_hub_dies_mid_sync",
            ),
            t("site/tests/uplink.rs", "an_unreachable_hub_is_retried_and_the_backlog_syncs_when_it_returns"),
            t(DEMO_SITES, "the_two_site_demo_reports_the_offline_allowance_clones_and_forks_it_staged"),
            t(DEMO_SITES, HUB_AUDIT),
            t("hub/src/embedded.rs", "every_cosigned_checkpoint_is_kept_and_a_reader_creates_nothing"),
            t("audit/src/hub/offline.rs", "backlogs_are_batches_that_waited_or_hit_the_allowance"),
            t(LIMITS, "a_flooding_station_is_limited_then_locked_out_until_an_admin_clears_it"),
        ],
        live: &[Live::QuotaRefusals],
        oem: "the choice of each order's offline allowance, and alternative access channels for any other \
              production resource reached over the Internet.",
    },
    Control {
        req: "2.4.14.21",
        status: Status::Shared,
        how: "Refusals, lockouts and RPC outcomes are exported as metrics on loopback, and repeated refusals lock a \
              caller out until an admin clears it; a lockout persists across a restart.",
        tests: &[
            t(MTLS, "metrics_are_served_on_loopback_only"),
            t(LIMITS, "a_flooding_station_is_limited_then_locked_out_until_an_admin_clears_it"),
            t("tests/tests/lockout.rs", "a_lockout_survives_a_restart_until_an_admin_clears_it"),
        ],
        live: &[],
        oem: "patching of production hosts and monitoring of the metrics for compromise.",
    },
    Control {
        req: "2.4.14.22",
        status: Status::Trustline,
        how: "Only orders signed by the OEM order key are accepted; the ledger enforces each order's quantity \
              atomically with the certification (under any concurrency, across restarts); the audit recounts every \
              order from the signed ledger and reports overproduction and certificates outside any valid order. \
              The OEM keeps control over a factory it does not trust (two domains): the site's token holds its site \
              intermediate and ledger key only — no OEM root, order or voucher key —; the OEM hub witnesses every \
              site's ledger (it re-verifies each entry, cosigns only a history consistent with what it cosigned \
              before, and refuses and records a rewritten, truncated or forked one, also after a restart), keeps a \
              registry across sites that sums an order split across sites against its quantity and catches a \
              serial, rot_id or device key certified at two sites (refused for onboarding), and serves field life \
              without the factory. `trustline audit --hub-dir` re-verifies every mirror with the site's key and \
              every cosignature with the witness key, and reports per site and per order figures, forks refused and \
              cross-site clones; it fails closed on a store or mirror that does not verify.",
        tests: &[
            t(ORDERS_UNIT, "a_signed_order_verifies_and_a_forged_one_does_not"),
            t(LEDGER, "sixty_four_racers_over_a_quota_of_ten_and_the_count_survives_restarts"),
            t(FACTORY_E2E, "an_order_of_n_certifies_n_devices_even_across_a_restart"),
            t(CRASH, "a_provisioner_killed_mid_run_loses_no_acknowledged_device"),
            t(AUDIT, "planted_anomalies_are_reported_exactly"),
            t(AUDIT_E2E, AUDIT_LINE),
            t(
                "tests/tests/two_domains.rs",
                "an_enrolled_site_holds_no_oem_key_and_certifies_devices_that_chain_to_the_oem_root",
            ),
            t(
                "ca-service/tests/enrolment.rs",
                "a_site_enrolled_at_the_hub_issues_with_only_its_intermediate_on_its_token",
            ),
            t(
                "hub/tests/witness.rs",
                "a_cosigned_checkpoint_verifies_with_the_site_key_and_the_witness_key_independently",
            ),
            t(
                "hub/tests/witness.rs",
                "the_hub_refuses_rewritten_truncated_and_forked_histories_also_after_a_restart",
            ),
            t("site/tests/uplink.rs", "the_hub_refuses_a_rewritten_history_and_the_uplink_stops_and_says_so"),
            t("hub/tests/registry.rs", "the_same_serial_rot_id_or_device_key_at_two_sites_is_a_cross_site_clone"),
            t("hub/tests/registry.rs", "an_order_split_across_sites_is_summed_and_any_excess_flagged"),
            t(HUB_OWNERSHIP, HUB_FIELD),
            t(DEMO_SITES, HUB_AUDIT),
        ],
        live: &[Live::Orders, Live::Certified, Live::QuotaRefusals],
        oem: "",
    },
    Control {
        req: "2.4.14.23",
        status: Status::Oem,
        how: "Not in Trustline's scope.",
        tests: &[],
        live: &[],
        oem: "information for users on removal, disposal and replacement, including deletion of personal data.",
    },
    Control {
        req: "2.4.14.24",
        status: Status::Shared,
        how: "Retirement needs the device's signed reset proof, is final (later onboarding is refused) and revokes \
              the device certificate in an HSM-signed CRL that `openssl crl -verify` accepts.",
        tests: &[
            t(CA, "crls_list_the_serials_and_verify_with_openssl"),
            t(OWNERSHIP, LIFE),
            t(DEVICE, "the_device_refuses_steps_backwards_and_after_retirement"),
        ],
        live: &[Live::Lifecycle],
        oem: "disconnection from cloud services and erasure of user data on the device and in the cloud.",
    },
    Control {
        req: "2.4.14.25",
        status: Status::Oem,
        how: "Not in Trustline's scope.",
        tests: &[],
        live: &[],
        oem: "the product SBOM and its notification to customers.",
    },
    // --------------------------------------------------- 2.4.16
    Control {
        req: "2.4.16.1",
        status: Status::Oem,
        how: "Trustline records transfers and decommissioning, but the information to users is the OEM's.",
        tests: &[],
        live: &[Live::Ownership],
        oem: "information for users on removal and disposal at transfer, and on deleting personal data.",
    },
    Control {
        req: "2.4.16.2",
        status: Status::Oem,
        how: "Not in Trustline's scope.",
        tests: &[],
        live: &[],
        oem: "the disposal information and the confirmation given to users.",
    },
    Control {
        req: "2.4.16.3",
        status: Status::Shared,
        how: "The ledger and voucher entries hold owner commitments (SHA-256 of a fresh salt and the owner key), \
              never owner identities; refusals record no owner data; a scan of the ledger files, index, token and \
              PKI after a whole life finds no owner key.",
        tests: &[t(OWNERSHIP, LIFE), t(OWNERSHIP, FORGED)],
        live: &[Live::Ownership],
        oem: "service-provider processes that keep no owner mapping elsewhere.",
    },
    Control {
        req: "2.4.16.4",
        status: Status::Shared,
        how: "Decommissioning and recommissioning are one-way steps that need the device's signed reset proof; the \
              simulated device's state machine cannot be walked backwards, and the service refuses steps out of order.",
        tests: &[
            t(OWNERSHIP, LIFE),
            t(OWNERSHIP, ONBOARD),
            t(DEVICE, "the_device_refuses_steps_backwards_and_after_retirement"),
        ],
        live: &[Live::Lifecycle],
        oem: "the device's irrevocable decommissioning mechanism.",
    },
    Control {
        req: "2.4.16.5",
        status: Status::Trustline,
        how: "Every registration and ownership call is TLS 1.3 with client certificates.",
        tests: &[
            t(MTLS, "tls_1_2_and_plaintext_clients_are_refused"),
            t(MTLS, "missing_expired_and_foreign_client_certificates_are_refused"),
        ],
        live: &[Live::Ownership],
        oem: "",
    },
    Control {
        req: "2.4.16.6",
        status: Status::Shared,
        how: "The exposed identity (rot_id, certificate) is linked in Trustline only to per-transfer salted owner \
              commitments, so one owner's transfer cannot be linked to a later owner's from ledger data; no owner \
              key is stored anywhere.",
        tests: &[t(VOUCHER, "a_chain_of_three_owners_verifies"), t(OWNERSHIP, LIFE)],
        live: &[Live::Ownership],
        oem: "the privacy policy and GDPR compliance of the services around the device.",
    },
    Control {
        req: "2.4.16.7",
        status: Status::Shared,
        how: "Decommissioning, recommissioning and retirement need the device's signed proof of a user-data reset; \
              a step without one, or with a stale one, is refused and only the refusal recorded.",
        tests: &[
            t(OWNERSHIP, ONBOARD),
            t(DEVICE, "user_reset_erases_the_area_and_bumps_the_counter"),
        ],
        live: &[],
        oem: "the device's user-reset function that erases user settings and data.",
    },
];

/// The control for requirement `req`.
pub fn control(req: &str) -> Option<&'static Control> {
    CONTROLS.iter().find(|c| c.req == req)
}
