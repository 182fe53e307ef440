//! Authorization in one place: the role × RPC table (2.4.13.9, 2.4.13.25,
//! 2.4.16.5).
//!
//! Every RPC of every Trustline service has exactly one [`Rule`] here, keyed
//! by its fully-qualified gRPC path (`/trustline.v1.Provisioning/Certify`).
//! The guard layer ([`crate::guard`]) looks the path up before any handler
//! runs; a method with no rule is refused, so a new RPC is unreachable until
//! someone decides who may call it (a test derives every method from
//! `trustline_proto::FILE_DESCRIPTOR_SET` and fails on a missing row).
//!
//! The table is the one authority. [`authorize`] turns a caller and a method
//! into an [`Authorized`] value — the only way to make one — which the guard
//! puts into the request extensions for networked calls, and
//! [`crate::internal_request`] for in-process ones. Handlers take it with
//! [`crate::authorized`] (its absence is `UNAUTHENTICATED`, never "allow")
//! and never decide roles themselves.
//!
//! Site scoping is part of the rule: rows marked `site_scoped` are ones where
//! a caller of a site-bound role (a station) acts on data that belongs to a
//! site (an order, a device certified under an order). Such a caller's
//! [`Authorized::scope`] is [`SiteScope::Site`]; everyone else's is
//! [`SiteScope::Any`]. The service, which alone knows the data, checks the
//! data's site through the one function [`SiteScope::check`] (2.4.14.22).

use std::fmt;

use serde::Serialize;
use tonic::Status;

use crate::identity::Role::{Admin, Auditor, Operator, Provisioner, Site, Station};
use crate::identity::{Caller, Role};

/// Who may call one RPC.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    /// The fully-qualified gRPC path, e.g. `/trustline.v1.Provisioning/Certify`.
    pub method: &'static str,
    /// The roles allowed to call it; every other role is refused.
    pub roles: &'static [Role],
    /// Whether a caller of a site-bound role must act for its own site only:
    /// the service checks the data's site with [`SiteScope::check`].
    pub site_scoped: bool,
    /// For a stream that carries the steps of other RPCs (the station line
    /// stream), those RPCs' paths: each step is authorized by its own row,
    /// as its unary call would be ([`crate::StreamSteps`]), and the stream
    /// itself runs for as long as the caller keeps it open (each step has
    /// the call deadline instead). Empty for every other RPC.
    pub steps: &'static [&'static str],
}

impl Rule {
    /// Whether `role` may call this RPC.
    pub fn allows(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The service part of the path, e.g. `trustline.v1.Provisioning`.
    pub fn service(&self) -> &'static str {
        split_method(self.method).map_or("", |(s, _)| s)
    }

    /// Whether this RPC is a stream of other RPCs' steps (see [`Rule::steps`]).
    pub fn carries_steps(&self) -> bool {
        !self.steps.is_empty()
    }
}

const EVERYONE: &[Role] = &[Station, Provisioner, Auditor, Operator, Admin, Site];
const PROVISIONER: &[Role] = &[Provisioner];
const ADMIN: &[Role] = &[Admin];
const STATION: &[Role] = &[Station];
const OPERATOR: &[Role] = &[Operator];
/// Ledger reads that expose entries (sites, orders, serials).
const LEDGER_READERS: &[Role] = &[Provisioner, Auditor, Admin];
/// Ledger reads that expose only hashes, sizes and the public key: an
/// operator verifying a device's proofs needs them.
const LEDGER_VERIFIERS: &[Role] = &[Provisioner, Auditor, Operator, Admin];

const fn rule(method: &'static str, roles: &'static [Role]) -> Rule {
    Rule {
        method,
        roles,
        site_scoped: false,
        steps: &[],
    }
}

const fn site_rule(method: &'static str, roles: &'static [Role]) -> Rule {
    Rule {
        method,
        roles,
        site_scoped: true,
        steps: &[],
    }
}

const fn stream_rule(
    method: &'static str,
    roles: &'static [Role],
    steps: &'static [&'static str],
) -> Rule {
    Rule {
        method,
        roles,
        site_scoped: true,
        steps,
    }
}

/// The unary RPCs whose steps the station line stream carries.
const LINE_STEPS: &[&str] = &[
    "/trustline.v1.Provisioning/BeginClaim",
    "/trustline.v1.Provisioning/CompleteClaim",
    "/trustline.v1.Provisioning/DeliverDeviceKey",
    "/trustline.v1.Provisioning/Certify",
];

/// The table. Order: by service as in the protos, then by RPC.
pub static RULES: &[Rule] = &[
    // CertificateAuthority: only the provisioner may use the HSM keys
    // (2.4.5.20, 2.4.14.19).
    rule(
        "/trustline.v1.CertificateAuthority/IssueDeviceCertificate",
        PROVISIONER,
    ),
    rule(
        "/trustline.v1.CertificateAuthority/GenerateWrappedKey",
        PROVISIONER,
    ),
    rule("/trustline.v1.CertificateAuthority/GetChain", PROVISIONER),
    rule(
        "/trustline.v1.CertificateAuthority/SignVoucherEntry",
        PROVISIONER,
    ),
    rule(
        "/trustline.v1.CertificateAuthority/UnsealVoucherEntry",
        PROVISIONER,
    ),
    rule("/trustline.v1.CertificateAuthority/SignCrl", PROVISIONER),
    // CustodyLedger: one writer; reads for the audit.
    rule("/trustline.v1.CustodyLedger/Append", PROVISIONER),
    rule(
        "/trustline.v1.CustodyLedger/GetCheckpoint",
        LEDGER_VERIFIERS,
    ),
    rule(
        "/trustline.v1.CustodyLedger/PublishCheckpoint",
        &[Provisioner, Admin],
    ),
    rule("/trustline.v1.CustodyLedger/GetEntry", LEDGER_READERS),
    rule("/trustline.v1.CustodyLedger/GetEntries", LEDGER_READERS),
    rule("/trustline.v1.CustodyLedger/LookupKey", LEDGER_READERS),
    rule("/trustline.v1.CustodyLedger/GetQuota", LEDGER_READERS),
    rule(
        "/trustline.v1.CustodyLedger/GetInclusionProof",
        LEDGER_VERIFIERS,
    ),
    rule(
        "/trustline.v1.CustodyLedger/GetConsistencyProof",
        LEDGER_VERIFIERS,
    ),
    rule(
        "/trustline.v1.CustodyLedger/GetDeviceHistory",
        LEDGER_READERS,
    ),
    rule("/trustline.v1.CustodyLedger/GetLedgerKey", LEDGER_VERIFIERS),
    // Provisioning: the OEM opens and closes orders; stations run the
    // factory flow for their own site (2.4.14.22).
    rule("/trustline.v1.Provisioning/OpenOrder", ADMIN),
    rule("/trustline.v1.Provisioning/CloseOrder", ADMIN),
    site_rule(
        "/trustline.v1.Provisioning/GetOrder",
        &[Station, Auditor, Admin],
    ),
    site_rule("/trustline.v1.Provisioning/BeginClaim", STATION),
    site_rule("/trustline.v1.Provisioning/CompleteClaim", STATION),
    site_rule("/trustline.v1.Provisioning/DeliverDeviceKey", STATION),
    site_rule("/trustline.v1.Provisioning/Certify", STATION),
    site_rule("/trustline.v1.Provisioning/RecordCustody", STATION),
    site_rule("/trustline.v1.Provisioning/BindFdoHeader", STATION),
    // The line stream: opened by a station; each step it carries is
    // authorized by the step's own row above (issue 16).
    stream_rule("/trustline.v1.Provisioning/Line", STATION, LINE_STEPS),
    // Ownership: the OEM makes the first transfer; owners do the rest
    // (2.4.14.7, 2.4.14.18, 2.4.16).
    rule("/trustline.v1.Ownership/TransferFromManufacturer", ADMIN),
    rule("/trustline.v1.Ownership/RegisterTransfer", OPERATOR),
    rule("/trustline.v1.Ownership/GetChallenge", OPERATOR),
    rule("/trustline.v1.Ownership/Onboard", OPERATOR),
    rule("/trustline.v1.Ownership/Decommission", OPERATOR),
    rule("/trustline.v1.Ownership/Recommission", OPERATOR),
    rule("/trustline.v1.Ownership/Retire", OPERATOR),
    rule("/trustline.v1.Ownership/GetRevocationList", EVERYONE),
    rule(
        "/trustline.v1.Ownership/GetDeviceState",
        &[Operator, Auditor, Admin],
    ),
    // The OEM lifts a quarantine after investigating (issue 12 item 2).
    rule("/trustline.v1.Ownership/LiftQuarantine", ADMIN),
    // Witness (the OEM hub): a site's uplink pushes and gets cosigned only
    // its own ledger (2.4.14.6, 2.4.14.22); auditors read what it holds.
    site_rule("/trustline.v1.Witness/PushEntries", &[Site]),
    site_rule("/trustline.v1.Witness/AddCheckpoint", &[Site]),
    site_rule(
        "/trustline.v1.Witness/GetSiteState",
        &[Site, Auditor, Admin],
    ),
    rule("/trustline.v1.Witness/GetWitnessKey", EVERYONE),
    // Uplink (a site): what its uplink holds; the provisioner reads it for
    // the offline allowance when the ledger runs apart (2.4.14.20).
    rule(
        "/trustline.v1.Uplink/GetUplinkStatus",
        &[Provisioner, Operator, Auditor, Admin],
    ),
    // Registry (the OEM hub): figures, forks and clones across sites.
    rule("/trustline.v1.Registry/GetDevice", &[Auditor, Admin]),
    rule("/trustline.v1.Registry/ListSites", &[Auditor, Admin]),
    rule("/trustline.v1.Registry/ListOrders", &[Auditor, Admin]),
    rule("/trustline.v1.Registry/ListForks", &[Auditor, Admin]),
    rule("/trustline.v1.Registry/ListClones", &[Auditor, Admin]),
    // Admin: lockouts (2.4.14.21).
    rule("/trustline.v1.Admin/ListLockouts", ADMIN),
    rule("/trustline.v1.Admin/ClearLockout", ADMIN),
    // Operations: any authenticated caller.
    rule("/grpc.health.v1.Health/Check", EVERYONE),
    rule("/grpc.health.v1.Health/Watch", EVERYONE),
    rule(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        EVERYONE,
    ),
    rule(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        EVERYONE,
    ),
];

/// The whole table.
pub fn rules() -> &'static [Rule] {
    RULES
}

/// The rule for a fully-qualified method path, if there is one.
pub fn rule_for(method: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.method == method)
}

/// A caller the table has allowed to call one method: what handlers receive.
///
/// Made only by [`authorize`], so holding one proves the table was asked.
#[derive(Debug, Clone)]
pub struct Authorized {
    caller: Caller,
    rule: &'static Rule,
}

impl Authorized {
    /// The authenticated caller.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The rule that allowed the call.
    pub fn rule(&self) -> &'static Rule {
        self.rule
    }

    /// Which sites' data the caller may act on in this call.
    pub fn scope(&self) -> SiteScope {
        if self.rule.site_scoped && self.caller.role().is_site_scoped() {
            SiteScope::Site(self.caller.site().to_owned())
        } else {
            SiteScope::Any
        }
    }
}

/// Which sites' data an authorized call may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteScope {
    /// Any site's: the rule is not site-scoped, or the role is not bound to
    /// a site (the OEM's admin, auditors).
    Any,
    /// Only this site's: a station calling a site-scoped RPC.
    Site(String),
}

impl SiteScope {
    /// The one site check: whether this scope may act on data recorded for
    /// `data_site` (an order's site; for a device, the site of the order it
    /// was certified under).
    ///
    /// # Errors
    /// [`OtherSite`] naming both sites; as a `Status` it is
    /// `PERMISSION_DENIED` and counts towards the caller's lockout
    /// (2.4.14.21).
    pub fn check(&self, data_site: &str) -> Result<(), OtherSite> {
        match self {
            SiteScope::Site(own) if own != data_site => Err(OtherSite {
                caller_site: own.clone(),
                data_site: data_site.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// The caller's own site when it is bound to one.
    pub fn own_site(&self) -> Option<&str> {
        match self {
            SiteScope::Site(site) => Some(site),
            SiteScope::Any => None,
        }
    }
}

/// A site-scoped caller asked about another site's data: a refusal, not a
/// transport failure (so not a [`crate::Error`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherSite {
    /// The caller's site.
    pub caller_site: String,
    /// The site the data belongs to.
    pub data_site: String,
}

impl fmt::Display for OtherSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a caller of site {:?} may not act for site {:?}",
            self.caller_site, self.data_site
        )
    }
}

impl std::error::Error for OtherSite {}

impl From<OtherSite> for Status {
    fn from(e: OtherSite) -> Self {
        Status::permission_denied(e.to_string())
    }
}

/// Decides one call: the caller and the rule that allows it.
///
/// # Errors
/// `PERMISSION_DENIED` when the method has no rule or the caller's role is
/// not in it; the message names the caller, the role and the method.
pub fn authorize(caller: &Caller, method: &str) -> Result<Authorized, Status> {
    let Some(rule) = rule_for(method) else {
        return Err(Status::permission_denied(format!(
            "{caller}: method {method} is not in the role table; unknown methods are denied"
        )));
    };
    if !rule.allows(caller.role()) {
        return Err(Status::permission_denied(format!(
            "{caller}: role {} may not call {method}",
            caller.role()
        )));
    }
    Ok(Authorized {
        caller: caller.clone(),
        rule,
    })
}

/// `(service, method)` of a path `/package.Service/Method`.
pub fn split_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The table as text, one row per RPC and one column per role: `yes`,
/// `site` (allowed, own site only) or `-`. Printed by `trustline pki roles`.
pub fn render_table() -> String {
    let width = RULES.iter().map(|r| r.method.len()).max().unwrap_or(0);
    let mut out = format!("{:width$}", "method");
    for role in Role::ALL {
        out.push_str(&format!("  {:>11}", role.as_str()));
    }
    out.push('\n');
    for rule in RULES {
        out.push_str(&format!("{:width$}", rule.method));
        for role in Role::ALL {
            let cell = match (rule.allows(role), rule.site_scoped && role.is_site_scoped()) {
                (false, _) => "-",
                (true, true) => "site",
                (true, false) => "yes",
            };
            out.push_str(&format!("  {cell:>11}"));
        }
        out.push('\n');
    }
    out.push_str("\nsite = allowed for the caller's own site only; unknown methods are denied.\n");
    out
}

/// The table as JSON: an array of `{method, roles, site_scoped}`.
pub fn table_json() -> serde_json::Value {
    serde_json::json!(RULES)
}
