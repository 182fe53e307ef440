//! The report as one self-contained HTML file: inline CSS, charts as inline
//! SVG drawn by `plotters`, no script and no external resource, so it opens
//! offline and can be attached to an assessment as it is.

use std::fmt::Write;

use super::super::report::AuditReport;
use super::charts::{orders_chart, refusals_chart};
use super::{opt, when};

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1700px}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}\
.ok{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}\
.over{background:#fde2e2}td.w{white-space:nowrap}.chart svg{max-width:100%;height:auto}.small{color:#666;font-size:.9em}";

/// The report as HTML.
pub fn html(r: &AuditReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_html(r, &mut out);
    out
}

fn write_html(r: &AuditReport, out: &mut String) -> std::fmt::Result {
    let l = &r.ledger;
    let total = r.findings.total();
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    )?;
    writeln!(out, "<title>Trustline audit: {}</title>", esc(&l.source))?;
    writeln!(out, "<style>{STYLE}</style></head><body>")?;
    writeln!(out, "<h1>Trustline custody ledger audit</h1>")?;
    writeln!(
        out,
        "<p class=\"small\">Ledger <code>{}</code>, report made {}.</p>",
        esc(&l.source),
        when(r.generated_at_ms)
    )?;
    let (class, verdict) = if total == 0 {
        ("ok", "No findings".to_owned())
    } else {
        ("bad", format!("{total} finding(s)"))
    };
    writeln!(out, "<p id=\"verdict\" class=\"{class}\">{verdict}</p>")?;

    writeln!(out, "<h2>Ledger</h2><table id=\"ledger\">")?;
    let (vclass, vword) = if l.verified {
        ("ok", "verified")
    } else {
        ("bad", "NOT verified")
    };
    writeln!(
        out,
        "<tr><th>entries</th><td class=\"n\">{}</td></tr><tr><th>verification</th><td><span class=\"{vclass}\">{vword}</span>: {}</td></tr>",
        l.entries,
        esc(&l.verify_message)
    )?;
    if let Some(size) = l.checkpoint_size {
        writeln!(
            out,
            "<tr><th>latest checkpoint</th><td>size {size}, root <code>{}</code></td></tr>",
            esc(&l.checkpoint_root)
        )?;
    }
    if let (Some(first), Some(last)) = (l.first_ms, l.last_ms) {
        writeln!(
            out,
            "<tr><th>time span</th><td>{} to {}</td></tr>",
            when(first),
            when(last)
        )?;
    }
    let kinds: Vec<String> = l
        .by_kind
        .iter()
        .map(|(k, n)| format!("{} {n}", esc(k)))
        .collect();
    writeln!(
        out,
        "<tr><th>entries by kind</th><td>{}</td></tr></table>",
        kinds.join(", ")
    )?;

    if !r.orders.is_empty() {
        writeln!(out, "<h2>Orders (2.4.14.22)</h2>")?;
        match orders_chart(&r.orders) {
            Ok(svg) => writeln!(out, "<div class=\"chart\" id=\"orders-chart\">{svg}</div>")?,
            Err(e) => writeln!(out, "<p class=\"bad\">{}</p>", esc(&e))?,
        }
        writeln!(
            out,
            "<table id=\"orders\"><tr><th>order</th><th>site</th><th>sku</th><th>authorised</th><th>certified</th>\
<th>claimed</th><th>shipped</th><th>scrapped</th><th>still on site</th><th>refused after claim</th>\
<th>claimed, not certified</th><th>in flight</th><th>duplicates refused</th><th>counterfeits refused</th>\
<th>over quota refused</th><th>window</th></tr>"
        )?;
        for o in &r.orders {
            let over = o.authorised.is_none_or(|a| o.certified > a);
            let row = if over { " class=\"over\"" } else { "" };
            let auth = if o.signature_valid {
                opt(o.authorised)
            } else {
                "invalid order signature".to_owned()
            };
            let window = if o.signature_valid {
                let day = |ms: i64| when(ms).chars().take(10).collect::<String>();
                format!("{} to {}", day(o.not_before_ms), day(o.not_after_ms))
            } else {
                "-".to_owned()
            };
            writeln!(
                out,
                "<tr{row} data-order=\"{id}\"><td>{id}</td><td>{}</td><td>{}</td><td class=\"n authorised\">{auth}</td>\
<td class=\"n certified\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
<td class=\"n\">{}</td><td class=\"w\">{window}{}</td></tr>",
                esc(&o.site),
                esc(&o.sku),
                o.certified,
                o.claimed,
                o.shipped,
                o.scrapped,
                o.on_site,
                o.refused_after_claim,
                o.claimed_not_certified,
                o.in_flight,
                o.duplicate_rejected,
                o.counterfeit_rejected,
                o.quota_rejected,
                if o.closed { " (closed)" } else { "" },
                id = esc(&o.order_id),
            )?;
        }
        writeln!(out, "</table>")?;
    }

    writeln!(out, "<h2>Refused attempts (caught by the line)</h2>")?;
    if r.refusals.groups.is_empty() {
        writeln!(out, "<p>No refusals recorded.</p>")?;
    } else {
        match refusals_chart(&r.refusals) {
            Ok(svg) => writeln!(
                out,
                "<div class=\"chart\" id=\"refusals-chart\">{svg}</div>"
            )?,
            Err(e) => writeln!(out, "<p class=\"bad\">{}</p>", esc(&e))?,
        }
        writeln!(
            out,
            "<table id=\"refusals\"><tr><th>kind</th><th>site</th><th>station</th><th>count</th><th>first</th><th>last</th></tr>"
        )?;
        for g in &r.refusals.groups {
            writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
                g.kind,
                esc(&g.site),
                esc(&g.actor),
                g.count,
                when(g.first_ms),
                when(g.last_ms)
            )?;
        }
        writeln!(out, "</table>")?;
    }

    if let Some(f) = &r.field {
        writeln!(out, "<h2>Field sightings</h2><table id=\"field\">")?;
        for (name, n) in [
            ("certificates", f.certificates),
            ("recorded in the ledger", f.recorded),
            (
                "clones (recorded serial or key, other certificate)",
                f.clones,
            ),
            ("never recorded", f.unrecorded),
            (
                "never recorded but issued by the OEM CA",
                f.issued_by_oem_ca_unrecorded,
            ),
            ("of devices recorded as scrapped", f.scrapped),
        ] {
            writeln!(out, "<tr><th>{name}</th><td class=\"n\">{n}</td></tr>")?;
        }
        writeln!(out, "</table>")?;
    }

    writeln!(out, "<h2>Findings</h2>")?;
    if total == 0 {
        writeln!(out, "<p class=\"ok\">None.</p>")?;
    } else {
        writeln!(
            out,
            "<table id=\"finding-counts\"><tr><th>kind</th><th>requirement</th><th>count</th></tr>"
        )?;
        for (k, n) in &r.findings.counts {
            writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{n}</td></tr>",
                k.name(),
                k.requirement()
            )?;
        }
        writeln!(out, "</table>")?;
        writeln!(
            out,
            "<table id=\"findings\"><tr><th>kind</th><th>requirement</th><th>what</th><th>entries</th>\
<th>order</th><th>site</th><th>station</th><th>serial</th><th>when</th></tr>"
        )?;
        for f in &r.findings.items {
            let entries: Vec<String> = f.entries.iter().map(u64::to_string).collect();
            writeln!(
                out,
                "<tr class=\"finding\" data-kind=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f.kind.name(),
                f.kind.name(),
                f.requirement,
                esc(&f.message),
                entries.join(", "),
                esc(&f.order_id),
                esc(&f.site),
                esc(&f.actor),
                esc(&f.serial),
                f.time_ms.map(when).unwrap_or_default()
            )?;
        }
        writeln!(out, "</table>")?;
    }
    let s = &r.stats;
    writeln!(
        out,
        "<p class=\"small\">Audit took {} ms (first pass {} ms, second pass {} ms), {} pass(es), {} certificates checked{}.</p>",
        s.duration_ms,
        s.first_pass_ms,
        s.second_pass_ms,
        s.passes,
        s.certificates_checked,
        s.peak_rss_kib
            .map(|k| format!(", peak RSS {} MiB", k / 1024))
            .unwrap_or_default()
    )?;
    writeln!(out, "</body></html>")?;
    Ok(())
}
