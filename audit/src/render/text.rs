//! The report as text for a terminal: the ledger's state, a table of
//! orders, refusals by station, field sightings, then every kept finding.

use std::fmt::Write;

use super::super::report::AuditReport;
use super::{opt, when};

/// The report as text.
pub fn text(r: &AuditReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(r, &mut out);
    out
}

fn write_text(r: &AuditReport, out: &mut String) -> std::fmt::Result {
    let l = &r.ledger;
    writeln!(out, "trustline audit of {}", l.source)?;
    let verdict = if l.verified {
        "verified"
    } else {
        "NOT VERIFIED"
    };
    writeln!(
        out,
        "ledger: {} entries, {verdict}: {}",
        l.entries, l.verify_message
    )?;
    if let Some(size) = l.checkpoint_size {
        writeln!(
            out,
            "latest checkpoint: size {size}, root {}",
            l.checkpoint_root
        )?;
    }
    if let (Some(first), Some(last)) = (l.first_ms, l.last_ms) {
        writeln!(out, "entries from {} to {}", when(first), when(last))?;
    }
    if !r.orders.is_empty() {
        writeln!(out, "\norders (2.4.14.22)")?;
        writeln!(
            out,
            "  {:<16} {:<10} {:<10} {:>7} {:>7} {:>9} {:>7} {:>8} {:>7} {:>7} {:>5} {:>5} {:>5} {:>5}",
            "order", "site", "sku", "authd", "claimed", "certified", "shipped", "scrapped", "on-site", "refused", "gap",
            "dup", "cft", "quota"
        )?;
        for o in &r.orders {
            let auth = if o.signature_valid {
                opt(o.authorised)
            } else {
                "BAD".to_owned()
            };
            writeln!(
                out,
                "  {:<16} {:<10} {:<10} {:>7} {:>7} {:>9} {:>7} {:>8} {:>7} {:>7} {:>5} {:>5} {:>5} {:>5}",
                o.order_id,
                o.site,
                o.sku,
                auth,
                o.claimed,
                o.certified,
                o.shipped,
                o.scrapped,
                o.on_site,
                o.refused_after_claim,
                o.claimed_not_certified,
                o.duplicate_rejected,
                o.counterfeit_rejected,
                o.quota_rejected
            )?;
        }
    }
    if !r.refusals.groups.is_empty() {
        writeln!(
            out,
            "\nrefused attempts by site and station (caught by the line)"
        )?;
        writeln!(
            out,
            "  {:<12} {:<10} {:<28} {:>6}  {:<20}  {:<20}",
            "kind", "site", "station", "count", "first", "last"
        )?;
        for g in &r.refusals.groups {
            writeln!(
                out,
                "  {:<12} {:<10} {:<28} {:>6}  {:<20}  {:<20}",
                g.kind,
                g.site,
                g.actor,
                g.count,
                when(g.first_ms),
                when(g.last_ms)
            )?;
        }
    }
    if let Some(f) = &r.field {
        writeln!(
            out,
            "\nfield sightings: {} certificates: {} recorded, {} clones, {} unrecorded ({} of them issued by the oem ca), {} of scrapped devices",
            f.certificates, f.recorded, f.clones, f.unrecorded, f.issued_by_oem_ca_unrecorded, f.scrapped
        )?;
        for file in &f.unreadable_files {
            writeln!(out, "  no certificate in {file}")?;
        }
    }
    let total = r.findings.total();
    writeln!(out)?;
    if total == 0 {
        writeln!(out, "findings: none")?;
    } else {
        let kinds: Vec<String> = r
            .findings
            .counts
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        writeln!(out, "findings: {total} ({})", kinds.join(", "))?;
        for f in &r.findings.items {
            write!(out, "  [{} {}] {}", f.kind.name(), f.requirement, f.message)?;
            if !f.entries.is_empty() {
                let list: Vec<String> = f.entries.iter().map(u64::to_string).collect();
                write!(out, "; entries {}", list.join(", "))?;
            }
            if !f.actor.is_empty() {
                write!(out, "; station {}", f.actor)?;
            }
            if let Some(t) = f.time_ms {
                write!(out, "; at {}", when(t))?;
            }
            writeln!(out)?;
        }
        let kept = r.findings.items.len() as u64;
        if kept < total {
            writeln!(
                out,
                "  ({} more not listed; see the counts above)",
                total - kept
            )?;
        }
    }
    let s = &r.stats;
    write!(
        out,
        "\naudit took {} ms (first pass {} ms, second pass {} ms), {} pass(es), {} certificates checked",
        s.duration_ms, s.first_pass_ms, s.second_pass_ms, s.passes, s.certificates_checked
    )?;
    if let Some(rss) = s.peak_rss_kib {
        write!(out, ", peak rss {} MiB", rss / 1024)?;
    }
    writeln!(out)?;
    Ok(())
}
