//! What `station run` prints at the end: the counts, refusals and failures
//! by reason, and every device that was not provisioned with its link,
//! serial, rot_id, stage and reason — as text, or with `--json` as one JSON
//! object (`provisioned`, `refused` and `failed_reasons` by reason,
//! `failed`, `devices`, `seconds`, `devices_per_second`).

use std::collections::BTreeMap;

use serde::Serialize;
use station::run::{Outcome, Report};

#[derive(Serialize)]
struct Summary<'a> {
    provisioned: usize,
    refused: BTreeMap<String, usize>,
    failed: usize,
    failed_reasons: BTreeMap<String, usize>,
    devices: Vec<Device<'a>>,
    seconds: f64,
    devices_per_second: f64,
}

/// A device that was refused or failed.
#[derive(Serialize)]
struct Device<'a> {
    index: usize,
    link: &'a str,
    outcome: &'static str,
    stage: &'static str,
    reason: &'a str,
    message: &'a str,
    serial: Option<String>,
    rot_id: Option<String>,
}

fn devices<'a>(report: &'a Report, labels: &'a [String]) -> Vec<Device<'a>> {
    let mut out = Vec::new();
    for (index, outcome) in report.outcomes.iter().enumerate() {
        let (kind, stage, reason, message) = match outcome {
            Outcome::Provisioned(_) => continue,
            Outcome::Refused {
                stage,
                reason,
                message,
                ..
            } => ("refused", *stage, reason.as_str(), message.as_str()),
            Outcome::Failed {
                stage,
                reason,
                message,
                ..
            } => ("failed", *stage, reason.as_str(), message.as_str()),
        };
        let known = outcome.known();
        out.push(Device {
            index,
            link: labels.get(index).map_or("", String::as_str),
            outcome: kind,
            stage,
            reason,
            message,
            serial: known.serial,
            rot_id: known.rot_id,
        });
    }
    out
}

/// Prints the summary of `report`; `labels` are the devices' links.
///
/// # Errors
/// JSON encoding.
pub(super) fn print(report: &Report, labels: &[String], json: bool) -> anyhow::Result<()> {
    let summary = Summary {
        provisioned: report.provisioned(),
        refused: report.refusals(),
        failed: report.failures().len(),
        failed_reasons: report.failure_reasons(),
        devices: devices(report, labels),
        seconds: report.elapsed.as_secs_f64(),
        devices_per_second: report.devices_per_second(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "provisioned {} devices in {:.2} s ({:.0} devices/s)",
        summary.provisioned, summary.seconds, summary.devices_per_second
    );
    for (reason, n) in &summary.refused {
        match station::run::allowance::explain(reason) {
            Some(meaning) => println!("refused ({reason}): {n} — {meaning}"),
            None => println!("refused ({reason}): {n}"),
        }
    }
    for (reason, n) in &summary.failed_reasons {
        println!("failed ({reason}): {n}");
    }
    for d in &summary.devices {
        let mut ids = String::new();
        if let Some(serial) = &d.serial {
            ids.push_str(&format!(" serial {serial}"));
        }
        if let Some(rot_id) = &d.rot_id {
            ids.push_str(&format!(" rot_id {rot_id}"));
        }
        let what = if d.outcome == "failed" {
            "FAILED"
        } else {
            "refused"
        };
        println!(
            "device {} [{}]{ids}: {what} at {} ({}): {}",
            d.index, d.link, d.stage, d.reason, d.message
        );
    }
    Ok(())
}
