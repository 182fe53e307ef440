//! The sockets of a `station run`: device `i` of the run is on link
//! `i mod k` of the `k` `--link` values, with `{index}` = `i` — a fresh
//! simulated die for `sim`, the command started for it for `exec:`, its
//! serial port for `serial:` (two devices of a run never share a port).

use std::collections::BTreeMap;

use anyhow::bail;
use station::link::{LineLink, LinkOptions, LinkSpec};
use station::run::Job;
use station::sim::{fresh_dies, sim_vendors, SimLink};

/// One job per device, and each device's link as text (for the summary).
///
/// # Errors
/// Two devices on one serial port; a simulator failure.
pub(super) fn jobs(
    specs: &[LinkSpec],
    devices: usize,
    options: &LinkOptions,
    sim_seed: u64,
) -> anyhow::Result<(Vec<Job<LineLink>>, Vec<String>)> {
    let spec_of = |index: usize| &specs[index % specs.len()];
    let sims = (0..devices)
        .filter(|i| *spec_of(*i) == LinkSpec::Sim)
        .count();
    let mut dies = if sims > 0 {
        let mut fleet = sim_vendors(sim_seed)?;
        fresh_dies(&mut fleet, sims)?
    } else {
        Vec::new()
    }
    .into_iter();
    let mut ports: BTreeMap<String, usize> = BTreeMap::new();
    let mut jobs = Vec::with_capacity(devices);
    let mut labels = Vec::with_capacity(devices);
    for index in 0..devices {
        let spec = spec_of(index);
        let (link, label): (LineLink, String) = match spec {
            LinkSpec::Sim => {
                let Some(rot) = dies.next() else {
                    bail!("the simulator made too few dies");
                };
                (SimLink::new(rot).into(), "sim".into())
            }
            LinkSpec::Exec(command) => {
                let Some(link) = spec.framed(index, options) else {
                    bail!("no link for {spec}");
                };
                (
                    link.into(),
                    format!("exec:{}", shell_join(&command.argv(index))),
                )
            }
            LinkSpec::Serial(path) => {
                let port = path.for_index(index);
                if let Some(other) = ports.insert(port.path.clone(), index) {
                    bail!(
                        "devices {other} and {index} would share the serial port {}: give one --link per port, or {{index}} in the path",
                        port.path
                    );
                }
                let Some(link) = spec.framed(index, options) else {
                    bail!("no link for {spec}");
                };
                (link.into(), format!("serial:{port}"))
            }
        };
        jobs.push(Job { link, serial: None });
        labels.push(label);
    }
    Ok((jobs, labels))
}

/// Words joined for display (quoted where a word needs it).
fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%{}".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
