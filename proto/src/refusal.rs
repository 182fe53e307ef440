//! The refusal convention every Trustline service that refuses requests
//! shares with its clients: the stable, machine-readable reason of a refusal
//! travels in the `trustline-refusal` response metadata beside the gRPC code
//! and the human message, so that a station or an operator's tooling can
//! count and react to refusals by reason without parsing messages.
//!
//! Reasons are short lowercase words with dashes (`counterfeit`,
//! `duplicate-serial`, `quota`, `wrong-site`, ...); each service documents
//! its own in its error type. The reasons `backend`, `busy`, `config` and
//! `corrupt-entry` mean the line failed rather than refused.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The metadata key carrying a refusal's stable reason.
pub const METADATA_KEY: &str = "trustline-refusal";

/// A status with `code`, `message` and the stable `reason` in its metadata.
pub fn status(code: Code, message: impl Into<String>, reason: &'static str) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert(METADATA_KEY, MetadataValue::from_static(reason));
    status
}

/// The refusal reason a status carries, if a Trustline service produced it.
pub fn refusal_reason(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(METADATA_KEY)
        .and_then(|v| v.to_str().ok())
}

/// Whether `reason` says the line failed (the service, the ledger, the CA,
/// a device), as opposed to a refusal the factory expects now and then.
pub fn is_failure(reason: &str) -> bool {
    matches!(reason, "backend" | "busy" | "config" | "corrupt-entry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_round_trips_through_a_status() {
        let s = status(Code::AlreadyExists, "duplicate serial", "duplicate-serial");
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(refusal_reason(&s), Some("duplicate-serial"));
        assert_eq!(refusal_reason(&Status::internal("x")), None);
        assert!(is_failure("backend") && !is_failure("counterfeit"));
    }
}
