//! One device through the line: claim, personalisation (on the device or
//! in the HSM), certification and storing what it received, each step
//! classified as done, refused (an expected refusal, by its
//! `trustline-refusal` reason) or failed (with a stable reason: the
//! device's or the link's, `Error::reason`, or the service's). What the
//! station learns of the device (rot_id, serial) goes into `Known` as it
//! goes, for the report of a device that stops.

use std::time::Duration;

use tonic::{Code, Status};
use trustline_proto::v1;

use trustline_proto::refusal::{is_failure, refusal_reason};

use crate::error::Error;
use crate::link::{DeviceLink, WrappedKey};

use super::line::{Provisioner, Refused};
use super::*;

/// Classifies a status from the service.
pub(super) fn refused(stage: &'static str, status: Status) -> Outcome {
    let reason = refusal_reason(&status).map(str::to_owned);
    match reason {
        Some(reason) if !is_failure(&reason) => Outcome::Refused {
            stage,
            code: status.code(),
            reason,
            message: status.message().to_owned(),
            known: Known::default(),
        },
        reason => Outcome::Failed {
            stage,
            reason: match reason {
                Some(reason) => format!("service:{reason}"),
                None => format!("grpc:{}", kebab(&format!("{:?}", status.code()))),
            },
            message: format!("{:?}: {}", status.code(), status.message()),
            known: Known::default(),
        },
    }
}

pub(super) fn failed(stage: &'static str) -> impl Fn(Error) -> Outcome {
    move |e| Outcome::Failed {
        stage,
        reason: e.reason(),
        message: e.to_string(),
        known: Known::default(),
    }
}

/// `DeadlineExceeded` → `deadline-exceeded`.
fn kebab(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The RoT id the attestation's die certificate names (before the
/// provisioner has said it; for the report only, no trust implied).
fn rot_id_of(attestation: &v1::RotAttestation) -> Option<String> {
    let der = attestation.cert_chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    trustline_proto::identity::try_rot_id(cert.public_key().raw).ok()
}

/// Calls `f` until it succeeds, is refused, or has failed `retries + 1`
/// times with `UNAVAILABLE`.
pub(super) async fn with_retries<T, F, Fut>(
    retries: u32,
    mut f: F,
) -> std::result::Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Status>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(s) if s.code() == Code::Unavailable && attempt < retries => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
            other => return other,
        }
    }
}

/// [`with_retries`] for a folded request: repeated only while the step that
/// was unavailable may be repeated (`retryable`: `CompleteClaim` and
/// `Certify` are idempotent, a key delivery is not).
async fn with_folded_retries<T, F, Fut>(
    retries: u32,
    retryable: &[&str],
    mut f: F,
) -> std::result::Result<T, Refused>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Refused>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(r)
                if r.status.code() == Code::Unavailable
                    && retryable.contains(&r.step)
                    && attempt < retries =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            }
            other => return other,
        }
    }
}

/// The report's stage of a refused unary step.
fn stage_of(step: &str) -> &'static str {
    match step {
        "BeginClaim" => "claim",
        "DeliverDeviceKey" => "deliver-key",
        "Certify" => "certify",
        _ => "complete-claim",
    }
}

fn refused_step(r: Refused) -> Outcome {
    refused(stage_of(r.step), r.status)
}

/// Records the claim of a device that stopped (`outcome`) before its
/// receipt could travel with its next step; a refused claim replaces the
/// outcome, as on the unary path, where the claim is refused first.
async fn settle_claim(
    client: &Provisioner,
    id: u64,
    complete: &v1::CompleteClaimRequest,
    retries: u32,
    outcome: Outcome,
) -> Outcome {
    let settled = with_retries(retries, || {
        let request = complete.clone();
        async move { client.complete_claim(id, request).await }
    })
    .await;
    match settled {
        Ok(_) => outcome,
        Err(s) => refused("complete-claim", s),
    }
}

/// A refused `BeginClaim`. An `ALREADY_EXISTS` may carry a presence
/// challenge (`ClaimPresenceChallenge` in the status details: the RoT is
/// claimed already): the device signs a claim receipt over its nonce, as
/// for any claim, and the receipt goes back with `CompleteClaim`. A
/// genuine, claimed die refuses to sign; a clone holding the attestation
/// key signs, and the provisioner records the proven clone. Either way the
/// device is refused at the claim.
async fn answer_presence<L: DeviceLink>(
    client: &Provisioner,
    id: u64,
    link: &mut L,
    status: Status,
    attestation: v1::RotAttestation,
) -> Outcome {
    use prost::Message;
    let challenge = match status.code() {
        Code::AlreadyExists => v1::ClaimPresenceChallenge::decode(status.details())
            .ok()
            .filter(|c| !c.nonce.is_empty()),
        _ => None,
    };
    let Some(challenge) = challenge else {
        return refused("claim", status);
    };
    let Ok(receipt) = link.claim(&challenge.nonce, &challenge.anchor).await else {
        return refused("claim", status);
    };
    let request = v1::CompleteClaimRequest {
        receipt: Some(receipt),
        attestation: Some(attestation),
    };
    match client.complete_claim(id, request).await {
        Err(s) => refused("claim", s),
        Ok(_) => Outcome::Failed {
            stage: "claim",
            reason: "station:presence-taken-as-claim".into(),
            message: "the provisioner took a presence proof for a claim".into(),
            known: Known::default(),
        },
    }
}

pub(super) async fn provision<L: DeviceLink>(
    shared: &Shared<L>,
    client: Provisioner,
    job: &mut Job<L>,
    known: &mut Known,
) -> std::result::Result<Provisioned, Outcome> {
    let config = &shared.config;
    let link = &mut job.link;
    let id = client.device_id();
    // On the line stream the claim receipt travels with the next step
    // (`ClaimAndCertify`, `ClaimAndDeliver`): the device signs its receipt,
    // key attestation and proof in one go, and the provisioner runs the
    // same `CompleteClaim` before that step. Unary calls complete the claim
    // at once.
    let fold = client.folds();
    link.open().await.map_err(failed("hello"))?;
    let attestation = link
        .read_attestation()
        .await
        .map_err(failed("read-attestation"))?;
    known.rot_id = rot_id_of(&attestation);
    let begin = match client
        .begin_claim(
            id,
            v1::BeginClaimRequest {
                order_id: config.order_id.clone(),
                attestation: Some(attestation.clone()),
            },
        )
        .await
    {
        Ok(r) => r,
        Err(s) => return Err(answer_presence(&client, id, link, s, attestation).await),
    };
    known.rot_id = Some(begin.rot_id.clone());
    let receipt = link
        .claim(&begin.nonce, &begin.anchor)
        .await
        .map_err(failed("install-anchor"))?;
    // Idempotent for the same receipt, so a retry after UNAVAILABLE is safe.
    let complete = v1::CompleteClaimRequest {
        receipt: Some(receipt),
        attestation: Some(attestation),
    };
    if !fold {
        with_retries(config.retries, || {
            let request = complete.clone();
            let client = &client;
            async move { client.complete_claim(id, request).await }
        })
        .await
        .map_err(|s| refused("complete-claim", s))?;
    }
    // On the line stream the receipt waits for the next provisioner step.
    // A device that stops before that step still has its claim recorded,
    // as the unary path records it before personalisation — and a refused
    // claim is then the device's outcome, as it would have been there — so
    // the ledger and the report are the same on both paths.
    let mut unsettled = fold;
    macro_rules! or_settle {
        ($result:expr) => {
            match $result {
                Ok(v) => v,
                Err(outcome) if unsettled => {
                    return Err(settle_claim(&client, id, &complete, config.retries, outcome).await)
                }
                Err(outcome) => return Err(outcome),
            }
        };
    }
    or_settle!(link.lock_readout().await.map_err(failed("lock")));
    let key_attestation = match config.mode {
        Mode::OnDevice => or_settle!(link
            .generate_key(&begin.nonce)
            .await
            .map_err(failed("generate-key"))),
        Mode::Hsm => {
            let request = v1::DeliverDeviceKeyRequest {
                rot_id: begin.rot_id.clone(),
                order_id: config.order_id.clone(),
            };
            let delivered = if fold {
                unsettled = false;
                with_folded_retries(config.retries, &["CompleteClaim"], || {
                    let (claim, request) = (complete.clone(), request.clone());
                    let client = &client;
                    async move { client.claim_and_deliver(id, claim, request).await }
                })
                .await
                .map_err(refused_step)?
            } else {
                client
                    .deliver_device_key(id, request)
                    .await
                    .map_err(|s| refused("deliver-key", s))?
            };
            let key = WrappedKey {
                device_public_key: delivered.device_public_key,
                hsm_ephemeral_public_key: delivered.hsm_ephemeral_public_key,
                wrapped_key: delivered.wrapped_key,
                kdf: delivered.kdf,
            };
            link.install_wrapped_key(&key, &begin.nonce)
                .await
                .map_err(failed("install-key"))?
        }
    };
    let serial = match job.serial.clone() {
        Some(s) => s,
        None => or_settle!(shared.serials.next().ok_or_else(|| Outcome::Failed {
            stage: "serial",
            reason: "station:serials-exhausted".into(),
            message: "the order's serial scheme is used up".into(),
            known: Known::default(),
        })),
    };
    known.serial = Some(serial.clone());
    let proof = or_settle!(link
        .prove_possession(&serial, &begin.nonce)
        .await
        .map_err(failed("prove-possession")));
    let request = v1::CertifyRequest {
        order_id: config.order_id.clone(),
        rot_id: begin.rot_id.clone(),
        serial: serial.clone(),
        key_attestation: Some(key_attestation),
        subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(proof)),
        first_owner_public_key: vec![],
    };
    let certified = if fold && config.mode == Mode::OnDevice {
        with_folded_retries(config.retries, &["CompleteClaim", "Certify"], || {
            let (claim, request) = (complete.clone(), request.clone());
            let client = &client;
            async move { client.claim_and_certify(id, claim, request).await }
        })
        .await
        .map_err(refused_step)?
    } else {
        with_retries(config.retries, || {
            let request = request.clone();
            let client = &client;
            async move { client.certify(id, request).await }
        })
        .await
        .map_err(|s| refused("certify", s))?
    };
    let voucher = link
        .store_certification(&certified.certificate_chain, &certified.voucher)
        .await
        .map_err(failed("store-certification"))?;
    let fdo_voucher = super::fdo::bind(
        &mut client.unary(),
        link,
        config.retries,
        &config.order_id,
        &begin.rot_id,
        &certified.certificate_chain,
        &voucher,
    )
    .await?;
    link.finish().await.map_err(failed("finish"))?;
    Ok(Provisioned {
        serial,
        rot_id: begin.rot_id,
        label: certified.label,
        chain: certified.certificate_chain,
        voucher,
        fdo_voucher,
        ledger_seq: certified.ledger_seq,
        replayed: certified.replayed,
    })
}
