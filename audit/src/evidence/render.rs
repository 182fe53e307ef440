//! The questionnaire as CSV (RFC 4180), JSON and Markdown. Every format has
//! the same six columns — Req No, requirement, applicability at the class,
//! how it is met, evidence, responsibility — and JSON adds the parts
//! (tests, live evidence, what the OEM must supply) as fields.

use super::Evidence;

const HEADERS: [&str; 6] = [
    "Req No",
    "Requirement",
    "Applicability",
    "How it is met",
    "Evidence",
    "Responsibility",
];

fn cells(e: &Evidence) -> Vec<[String; 6]> {
    e.rows
        .iter()
        .map(|r| {
            [
                r.req_no.to_owned(),
                r.requirement.to_owned(),
                format!(
                    "{} at class {} ({})",
                    r.applicability.as_str(),
                    e.class,
                    r.applicability_rule
                ),
                r.how_met.clone(),
                r.evidence.clone(),
                r.responsibility.clone(),
            ]
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// CSV with a header row.
pub fn csv(e: &Evidence) -> String {
    let mut out = String::new();
    let line = |fields: &[String]| {
        let f: Vec<String> = fields.iter().map(|s| csv_field(s)).collect();
        format!("{}\r\n", f.join(","))
    };
    out.push_str(&line(&HEADERS.map(str::to_owned)));
    for row in cells(e) {
        out.push_str(&line(&row));
    }
    out
}

/// Pretty JSON.
pub fn json(e: &Evidence) -> String {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_string_pretty(e).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A Markdown document: a short header, then one table.
pub fn markdown(e: &Evidence) -> String {
    let mut out = format!(
        "# Assurance evidence: IoTSF Assurance Framework 3.0, class {}\n\n",
        e.class
    );
    match &e.ledger {
        Some(l) => out.push_str(&format!(
            "Live evidence from {} ({} entries; {}).\n\n",
            md_cell(&l.source),
            l.entries,
            md_cell(&l.verify_message)
        )),
        None => out.push_str("No ledger was given: rows carry no live evidence.\n\n"),
    }
    out.push_str(&format!("| {} |\n", HEADERS.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(HEADERS.len())));
    for row in cells(e) {
        let r: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out.push_str(&format!("\n{}\n", e.attribution));
    out
}
