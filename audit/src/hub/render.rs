//! The audit across sites for a terminal and for tools.

use super::HubReport;

/// The report as pretty JSON.
pub fn json(report: &HubReport) -> String {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The report for a terminal.
pub fn text(report: &HubReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let t = &report.totals;
    let _ = writeln!(o, "hub audit of {} ({} sites)", report.store, t.sites);
    let _ = writeln!(
        o,
        "  certified {}  refused {}  forks refused {}  cross-site clones {}",
        t.certified, t.refused, t.forks_refused, t.cross_site_clones
    );
    let _ = writeln!(
        o,
        "  offline: {} certified in outage backlogs, {} refused past the allowance, {} certified not yet cosigned",
        t.offline_certified, t.offline_refused, t.uncosigned_certified
    );
    for s in &report.sites {
        let _ = writeln!(o, "\nsite {} ({})", s.site, s.origin);
        let _ = writeln!(o, "  mirror: {} (verified)", s.verify_message);
        match &s.cosigned {
            Some(c) => {
                let _ = writeln!(
                    o,
                    "  last cosignature: size {}, {} s ago (witness signature verified)",
                    c.size, c.age_secs
                );
            }
            None => {
                let _ = writeln!(o, "  last cosignature: none");
            }
        }
        let refused: Vec<String> = s.refused.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            o,
            "  certified {}  shipped {}  received {}  scrapped {}  refused: {}  forks refused {}",
            s.certified,
            s.shipped,
            s.received,
            s.scrapped,
            if refused.is_empty() {
                "none".to_string()
            } else {
                refused.join(", ")
            },
            s.forks_refused
        );
        for ord in &s.orders {
            let _ = writeln!(
                o,
                "  order {}: {} of {} allocated ({}%), {} refused (quantity {})",
                ord.order_id,
                ord.certified,
                ord.allocation,
                ord.quota_used_pct,
                ord.refused,
                ord.quantity
            );
        }
        let off = &s.offline;
        let _ = writeln!(
            o,
            "  offline: {} certified in {} backlog(s) (waited > {} s or hit the allowance), {} refused for the allowance; {} entries ({} certified) not yet cosigned; {} cosignatures kept",
            off.offline_certified,
            off.backlogs.len(),
            off.outage_after_secs,
            off.offline_refused,
            off.uncosigned_entries,
            off.uncosigned_certified,
            off.cosignatures
        );
        for b in &off.backlogs {
            let _ = writeln!(
                o,
                "    entries {}..{}: {} certified, {} refused for the allowance, cosigned {} s after the first",
                b.from, b.to, b.certified, b.allowance_refused, b.wait_secs
            );
        }
    }
    if !report.orders.is_empty() {
        let _ = writeln!(o, "\norders across sites");
        for ord in &report.orders {
            let sites: Vec<String> = ord
                .sites
                .iter()
                .map(|(s, a, c)| format!("{s} {c}/{a}"))
                .collect();
            let _ = writeln!(
                o,
                "  {}: {} of {} certified ({})",
                ord.order_id,
                ord.certified,
                ord.quantity,
                sites.join(", ")
            );
        }
    }
    if let Some(l) = &report.hub_ledger {
        let _ = writeln!(o, "\nhub ledger: {} (verified)", l.verify_message);
    }
    let _ = writeln!(o, "\nfindings: {}", report.findings.len());
    for f in &report.findings {
        let _ = writeln!(o, "  [{}] {}", f.kind, f.detail);
    }
    o
}
