//! `trustline ledger proof` and `trustline ledger history`: inclusion
//! proofs of one entry and the proven history of one device, from a ledger
//! that verifies (nothing is proven from one that does not).

use std::io::{self, Write};

use anyhow::bail;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use custody_ledger::merkle::{self};
use custody_ledger::verify::Verified;
use serde_json::json;

use crate::cli::Outcome;

use super::*;

/// Refuses to prove anything from a ledger that does not verify.
pub(super) fn require_ok(
    v: &Verified,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<Option<Outcome>> {
    let Some(p) = v.report.problem.as_ref() else {
        return Ok(None);
    };
    if json {
        writeln!(out, "{}", json!({ "ok": false, "problem": p.to_string() }))?;
    } else {
        writeln!(
            out,
            "the ledger does not verify, so nothing is proven from it: {p}"
        )?;
    }
    Ok(Some(Outcome::Findings))
}

pub(super) fn proof_cmd(a: &ProofArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let mut entry = None;
    let v = run_verifier(&a.source, &a.trust, a.json, &mut |e| {
        if e.seq == a.seq {
            entry = Some((e.bytes.to_vec(), e.leaf));
        }
    })?;
    if let Some(o) = require_ok(&v, a.json, out)? {
        return Ok(o);
    }
    let Some(cp) = &v.report.latest_checkpoint else {
        bail!("the ledger has no checkpoint yet");
    };
    let Some((bytes, leaf)) = entry else {
        bail!(
            "entry {} does not exist (the ledger has {} entries)",
            a.seq,
            v.report.entries
        );
    };
    if a.seq >= cp.size {
        bail!(
            "entry {} is not yet covered by a checkpoint (the latest covers {})",
            a.seq,
            cp.size
        );
    }
    let proof = merkle::inclusion_proof(&v.tree, a.seq, cp.size)?;
    merkle::verify_inclusion(&leaf, &proof, &cp.root)?;
    let path: Vec<String> = proof.path.iter().map(hex32).collect();
    if a.json {
        let doc = json!({
            "seq": a.seq,
            "entry": B64.encode(&bytes),
            "leaf_hash": hex32(&leaf),
            "tree_size": proof.tree_size,
            "root": hex32(&cp.root),
            "path": path,
            "checkpoint": cp.note,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "entry {} leaf {}", a.seq, hex32(&leaf))?;
        writeln!(
            out,
            "included in the tree of {} entries, root {}",
            proof.tree_size,
            hex32(&cp.root)
        )?;
        for (i, h) in path.iter().enumerate() {
            writeln!(out, "  path[{i}] {h}")?;
        }
        write!(out, "{}", cp.note)?;
    }
    Ok(Outcome::Success)
}

pub(super) fn history_cmd(a: &HistoryArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if !trustline_proto::identity::is_well_formed_rot_id(&a.rot_id) {
        bail!("--rot-id must be 64 lowercase hex characters");
    }
    let mut entries = Vec::new();
    let v = run_verifier(&a.source, &a.trust, a.json, &mut |e| {
        if e.entry.rot_id == a.rot_id {
            entries.push((e.seq, e.leaf, e.entry.clone(), e.bytes.to_vec()));
        }
    })?;
    if let Some(o) = require_ok(&v, a.json, out)? {
        return Ok(o);
    }
    let cp = v.report.latest_checkpoint.clone();
    let mut items = Vec::new();
    for (seq, leaf, e, bytes) in &entries {
        let proof = match &cp {
            Some(cp) if *seq < cp.size => {
                let p = merkle::inclusion_proof(&v.tree, *seq, cp.size)?;
                merkle::verify_inclusion(leaf, &p, &cp.root)?;
                Some(p)
            }
            _ => None,
        };
        let kind = trustline_proto::v1::EventKind::try_from(e.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("EVENT_KIND_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| e.kind.to_string());
        items.push((seq, leaf, e, bytes, kind, proof));
    }
    if a.json {
        let list: Vec<_> = items
            .iter()
            .map(|(seq, leaf, e, bytes, kind, proof)| {
                json!({
                    "seq": seq,
                    "kind": kind,
                    "time_ms": e.time_ms,
                    "serial": e.serial,
                    "site": e.site,
                    "actor": e.actor,
                    "order_id": e.order_id,
                    "leaf_hash": hex32(leaf),
                    "entry": B64.encode(bytes),
                    "proof": proof.as_ref().map(|p| p.path.iter().map(hex32).collect::<Vec<_>>()),
                })
            })
            .collect();
        let doc = json!({
            "rot_id": a.rot_id,
            "checkpoint": cp.as_ref().map(|c| json!({ "size": c.size, "root": hex32(&c.root), "note": c.note })),
            "entries": list,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(out, "device {}: {} entries", a.rot_id, items.len())?;
        for (seq, _, e, _, kind, proof) in &items {
            let proven = match proof {
                Some(p) => format!(
                    "proven against checkpoint {} ({} hashes)",
                    p.tree_size,
                    p.path.len()
                ),
                None => "not yet covered by a checkpoint".to_string(),
            };
            writeln!(
                out,
                "  #{seq:<8} {kind:<22} t={} site={} actor={} serial={} order={} — {proven}",
                e.time_ms, e.site, e.actor, e.serial, e.order_id
            )?;
        }
    }
    Ok(Outcome::Success)
}
