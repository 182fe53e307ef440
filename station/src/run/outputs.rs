//! What a run writes for each certified device: `<serial>.pem` (the chain,
//! device certificate first), `<serial>.voucher.cbor` and a line of
//! `devices.jsonl`; for a device with an FDO voucher (issue 17), also
//! `<serial>.fdo-voucher.pem` (PEM `OWNERSHIP VOUCHER`).

use std::io::Write;

use crate::error::{Error, Result};

use super::*;

/// The chain as PEM, device certificate first.
pub fn chain_pem(chain: &[Vec<u8>]) -> String {
    chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect()
}

pub(super) fn write_outputs<L>(shared: &Shared<L>, p: &Provisioned) -> Result<()> {
    let Some(dir) = &shared.config.out_dir else {
        return Ok(());
    };
    let chain_path = dir.join(format!("{}.pem", p.serial));
    std::fs::write(&chain_path, chain_pem(&p.chain)).map_err(|e| Error::io(&chain_path, e))?;
    let voucher_path = dir.join(format!("{}.voucher.cbor", p.serial));
    std::fs::write(&voucher_path, &p.voucher).map_err(|e| Error::io(&voucher_path, e))?;
    if let Some(fdo) = &p.fdo_voucher {
        let fdo_path = dir.join(format!("{}.fdo-voucher.pem", p.serial));
        let pem = trustline_proto::fdo::FdoVoucher::decode(fdo)
            .map_err(|e| Error::Config(format!("the fdo voucher of {}: {e}", p.serial)))?
            .to_pem();
        std::fs::write(&fdo_path, pem).map_err(|e| Error::io(&fdo_path, e))?;
    }
    if let Some(manifest) = &shared.manifest {
        let line = serde_json::json!({
            "serial": p.serial,
            "rot_id": p.rot_id,
            "label": p.label,
            "ledger_seq": p.ledger_seq,
            "replayed": p.replayed,
        });
        let mut file = manifest.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{line}").map_err(|e| Error::io(&dir.join("devices.jsonl"), e))?;
    }
    Ok(())
}
