//! The audit report in three forms: text for a terminal, JSON for tools,
//! and one self-contained HTML file with charts for people.

mod charts;
mod html;
mod text;

pub use html::html;
pub use text::text;

use super::report::AuditReport;

/// The report as pretty JSON.
pub fn json(report: &AuditReport) -> String {
    // Serialising plain data (strings, numbers, maps with string keys)
    // cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// RFC 3339 UTC time of a Unix-ms timestamp, to the second.
pub fn when(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return format!("{ms} ms");
    };
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&format).unwrap_or_else(|_| format!("{ms} ms"))
}

/// "-" for `None`.
pub(crate) fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}
