//! Authorization in one place (2.4.13.9, 2.4.14.22, 2.4.16.5): the role
//! table's site scoping is enforced end to end for every site-scoped rule,
//! and no handler runs without the `Authorized` value the guard (or
//! `transport::internal_request`) leaves in the request.

use std::sync::Arc;

use backends::{AppendRefusal, CaApi, CrlApi, LedgerApi, LedgerReads};
use futures::future::BoxFuture;
use tonic::{Code, Request, Status};
use transport::authz;
use trustline_proto::signer::{Signer, SoftwareSigner};
use trustline_proto::v1;
use trustline_proto::v1::admin_server::Admin;
use trustline_proto::v1::ownership_server::Ownership as OwnershipRpc;
use trustline_proto::v1::provisioning_server::Provisioning;
use trustline_tests::ownership::provision;
use trustline_tests::{genuine_fleet, station, Stack, SITE};

/// The station of another site that tries each site-scoped call.
const OTHER_SITE: &str = "site-b";

/// What the site-scoped calls act on: an order of [`SITE`], a die claimed
/// under it, a device certified under it, and a fresh die.
struct Targets {
    order: String,
    claimed_rot: String,
    claimed_key_attestation: v1::SignedStatement,
    claimed_pop: v1::SignedStatement,
    pending_receipt: v1::SignedStatement,
    pending_attestation: v1::RotAttestation,
    fresh_attestation: v1::RotAttestation,
    certified_rot: String,
}

/// Makes one call of `method` as the other site's station; `None` when the
/// method has no case here (which fails the test: every site-scoped rule
/// must be exercised).
async fn call_as_other_site(
    stack: &Stack,
    method: &str,
    t: &Targets,
) -> anyhow::Result<Option<Result<(), Status>>> {
    let mut client = stack.provisioning(&station(OTHER_SITE, "st-09")).await?;
    let name = method.rsplit('/').next().unwrap_or_default();
    let result = match name {
        "GetOrder" => client
            .get_order(v1::GetOrderRequest {
                order_id: t.order.clone(),
            })
            .await
            .map(drop),
        "BeginClaim" => client
            .begin_claim(v1::BeginClaimRequest {
                order_id: t.order.clone(),
                attestation: Some(t.fresh_attestation.clone()),
            })
            .await
            .map(drop),
        "CompleteClaim" => client
            .complete_claim(v1::CompleteClaimRequest {
                receipt: Some(t.pending_receipt.clone()),
                attestation: Some(t.pending_attestation.clone()),
            })
            .await
            .map(drop),
        "DeliverDeviceKey" => client
            .deliver_device_key(v1::DeliverDeviceKeyRequest {
                rot_id: t.claimed_rot.clone(),
                order_id: t.order.clone(),
            })
            .await
            .map(drop),
        "Certify" => client
            .certify(v1::CertifyRequest {
                order_id: t.order.clone(),
                rot_id: t.claimed_rot.clone(),
                serial: "SN000500".into(),
                key_attestation: Some(t.claimed_key_attestation.clone()),
                subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(
                    t.claimed_pop.clone(),
                )),
                first_owner_public_key: vec![],
            })
            .await
            .map(drop),
        "RecordCustody" => client
            .record_custody(v1::RecordCustodyRequest {
                rot_id: t.certified_rot.clone(),
                kind: v1::EventKind::Shipped as i32,
                note: "to the warehouse".into(),
            })
            .await
            .map(drop),
        "BindFdoHeader" => client
            .bind_fdo_header(v1::BindFdoHeaderRequest {
                rot_id: t.certified_rot.clone(),
                header_hmac: vec![7; 32],
            })
            .await
            .map(drop),
        "Line" => line_as_other_site(stack, t).await,
        _ => return Ok(None),
    };
    Ok(Some(result))
}

/// The station steps of [`call_as_other_site`] on one line stream: each is
/// refused for its device alone, with the status its unary call gets; the
/// first refusal is returned (all are checked here).
async fn line_as_other_site(stack: &Stack, t: &Targets) -> Result<(), Status> {
    use v1::line_request::Step;
    use v1::line_response::Result as Answer;
    let steps = vec![
        Step::BeginClaim(v1::BeginClaimRequest {
            order_id: t.order.clone(),
            attestation: Some(t.fresh_attestation.clone()),
        }),
        Step::CompleteClaim(v1::CompleteClaimRequest {
            receipt: Some(t.pending_receipt.clone()),
            attestation: Some(t.pending_attestation.clone()),
        }),
        Step::DeliverDeviceKey(v1::DeliverDeviceKeyRequest {
            rot_id: t.claimed_rot.clone(),
            order_id: t.order.clone(),
        }),
        Step::Certify(v1::CertifyRequest {
            order_id: t.order.clone(),
            rot_id: t.claimed_rot.clone(),
            serial: "SN000501".into(),
            key_attestation: Some(t.claimed_key_attestation.clone()),
            subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(
                t.claimed_pop.clone(),
            )),
            first_owner_public_key: vec![],
        }),
    ];
    let n = steps.len();
    let requests =
        futures::stream::iter(
            steps
                .into_iter()
                .zip(1u64..)
                .map(|(step, id)| v1::LineRequest {
                    id,
                    step: Some(step),
                }),
        );
    let mut client = stack
        .provisioning(&station(OTHER_SITE, "st-09"))
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut answers = client.line(requests).await?.into_inner();
    let mut refusals = Vec::new();
    while let Some(answer) = answers.message().await? {
        match answer.result {
            Some(Answer::Refusal(r)) => refusals.push((answer.id, r)),
            other => panic!(
                "step {} of another site's station ran: {other:?}",
                answer.id
            ),
        }
    }
    assert_eq!(refusals.len(), n, "{refusals:?}");
    refusals.sort_by_key(|(id, _)| *id);
    for (_, r) in &refusals {
        assert_eq!(Code::from(r.code), Code::PermissionDenied, "{r:?}");
        assert_eq!(r.reason, "wrong-site", "{r:?}");
    }
    let (_, first) = refusals.remove(0);
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(
        trustline_proto::refusal::METADATA_KEY,
        tonic::metadata::MetadataValue::try_from(first.reason.as_str())
            .map_err(|e| Status::internal(e.to_string()))?,
    );
    Err(Status::with_details_and_metadata(
        Code::from(first.code),
        first.message,
        first.details.into(),
        metadata,
    ))
}

#[tokio::test]
async fn every_site_scoped_rule_refuses_a_station_of_another_site() -> anyhow::Result<()> {
    let fleet = genuine_fleet(0x5173, 4)?;
    let stack = Stack::start(
        "authz-sites",
        &fleet,
        &[(SITE, "st-01"), (OTHER_SITE, "st-09")],
    )
    .await?;
    let order = stack.order("PO-SITE-A", SITE, 10);
    stack.open(&order).await?;
    let order_id = order.order_id.clone();

    // A device certified under the order at its own site.
    let mut dies: Vec<_> = fleet.into_devices().into_iter().map(|d| d.rot).collect();
    let certified_die = dies.remove(0);
    let provisioned = provision(&stack, &order_id, vec![certified_die], None).await?;
    let certified_rot = provisioned[0]
        .0
        .as_ref()
        .map(|p| p.rot_id.clone())
        .ok_or_else(|| anyhow::anyhow!("the own-site device was not provisioned"))?;

    // A die claimed at its own site, personalised on the device.
    let mut own = stack.provisioning(&station(SITE, "st-01")).await?;
    let mut claimed = dies.remove(0);
    let begin = own
        .begin_claim(v1::BeginClaimRequest {
            order_id: order_id.clone(),
            attestation: Some(claimed.attestation()),
        })
        .await?
        .into_inner();
    let receipt = claimed.claim(&begin.nonce, &begin.anchor)?;
    own.complete_claim(v1::CompleteClaimRequest {
        receipt: Some(receipt),
        attestation: Some(claimed.attestation()),
    })
    .await?;
    let (_, key_attestation) = claimed.generate_identity_key(&begin.nonce)?;
    let pop = claimed.proof_of_possession("SN000500", &begin.nonce)?;

    // A claim begun at its own site whose receipt is not yet presented.
    let mut pending = dies.remove(0);
    let begin_pending = own
        .begin_claim(v1::BeginClaimRequest {
            order_id: order_id.clone(),
            attestation: Some(pending.attestation()),
        })
        .await?
        .into_inner();
    let pending_receipt = pending.claim(&begin_pending.nonce, &begin_pending.anchor)?;

    let targets = Targets {
        order: order_id.clone(),
        claimed_rot: begin.rot_id.clone(),
        claimed_key_attestation: key_attestation,
        claimed_pop: pop,
        pending_receipt,
        pending_attestation: pending.attestation(),
        fresh_attestation: dies.remove(0).attestation(),
        certified_rot,
    };

    // Site-scoped rules for a site's uplink (the hub's `Witness`) are
    // proven by `hub/tests/grpc.rs::the_witness_over_grpc_scopes_sites_and_maps_every_refusal`;
    // every other site-scoped rule is a station's, proven here.
    let scoped: Vec<_> = authz::rules().iter().filter(|r| r.site_scoped).collect();
    for rule in &scoped {
        assert!(
            rule.allows(transport::Role::Station)
                || rule.method.starts_with("/trustline.v1.Witness/"),
            "{} is site-scoped for neither stations nor a site's uplink",
            rule.method
        );
    }
    let scoped: Vec<_> = scoped
        .into_iter()
        .filter(|r| r.allows(transport::Role::Station))
        .collect();
    assert!(scoped.len() >= 6, "only {} site-scoped rules", scoped.len());
    for rule in scoped {
        let result = call_as_other_site(&stack, rule.method, &targets)
            .await?
            .unwrap_or_else(|| panic!("no case for the site-scoped rule {}", rule.method));
        let status = result.expect_err(rule.method);
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{}: {status:?}",
            rule.method
        );
        assert_eq!(
            trustline_proto::refusal::refusal_reason(&status),
            Some("wrong-site"),
            "{}: {status:?}",
            rule.method
        );
        assert!(
            status.message().contains(SITE) && status.message().contains(OTHER_SITE),
            "{}: {}",
            rule.method,
            status.message()
        );
    }

    // The same data is open to its own site: the refusals were the site's.
    own.get_order(v1::GetOrderRequest {
        order_id: order_id.clone(),
    })
    .await?;
    own.record_custody(v1::RecordCustodyRequest {
        rot_id: targets.certified_rot.clone(),
        kind: v1::EventKind::Shipped as i32,
        note: "to the warehouse".into(),
    })
    .await?;
    // And nothing the other station tried was recorded for it.
    let entries = stack.ledger_entries().await?;
    assert!(
        entries
            .iter()
            .all(|e| !e.actor.contains(&format!("/{OTHER_SITE}/"))),
        "a refused call of another site's station left an entry"
    );
    Ok(())
}

// ------------------------------------------------------------------------
// No handler runs without the guard's value.

/// Back ends that must never be reached: every call fails loudly.
struct Unreachable {
    voucher_key: Vec<u8>,
}

fn unreachable_status() -> Status {
    Status::internal("a handler reached its back end without an authorized caller")
}

impl LedgerApi for Unreachable {
    fn append(
        &self,
        _: v1::AppendRequest,
    ) -> BoxFuture<'_, Result<v1::AppendResponse, AppendRefusal>> {
        Box::pin(async { Err(AppendRefusal::Failed(unreachable_status())) })
    }
    fn lookup_key(&self, _: v1::UniqueKey) -> BoxFuture<'_, Result<Option<u64>, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn get_entry(&self, _: u64) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn get_quota(&self, _: String) -> BoxFuture<'_, Result<u64, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn publish_checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
}

impl CaApi for Unreachable {
    fn issue(
        &self,
        _: v1::IssueDeviceCertificateRequest,
    ) -> BoxFuture<'_, Result<v1::IssueDeviceCertificateResponse, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn generate_wrapped_key(
        &self,
        _: v1::GenerateWrappedKeyRequest,
    ) -> BoxFuture<'_, Result<v1::WrappedDeviceKey, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn get_chain(&self) -> BoxFuture<'_, Result<v1::CertificateChain, Status>> {
        // Start-up only: the services fetch the chain once.
        let chain = v1::CertificateChain {
            certificates: vec![b"intermediate".to_vec(), b"root".to_vec()],
            voucher_public_key: self.voucher_key.clone(),
        };
        Box::pin(async move { Ok(chain) })
    }
    fn sign_voucher_entry(&self, _: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn sign_sealed_voucher_entry(
        &self,
        _: Vec<u8>,
        _: String,
        _: u32,
    ) -> BoxFuture<'_, Result<v1::SignVoucherEntryResponse, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn sign_fdo_voucher_entry(&self, _: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn unseal_voucher_entry(
        &self,
        _: String,
        _: u32,
        _: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
}

impl LedgerReads for Unreachable {
    fn device_history(&self, _: String) -> BoxFuture<'_, Result<v1::DeviceHistory, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn checkpoint(&self) -> BoxFuture<'_, Result<v1::Checkpoint, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
    fn ledger_key(&self) -> BoxFuture<'_, Result<v1::LedgerKey, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
}

impl CrlApi for Unreachable {
    fn sign_crl(&self, _: v1::SignCrlRequest) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async { Err(unreachable_status()) })
    }
}

/// Calls the handler of `method` directly — no guard — with a request that
/// carries no authorization; `None` when the method has no case here.
async fn call_unguarded(
    method: &str,
    provisioning: &provisioner::service::ProvisioningService,
    ownership: &ownership::service::OwnershipService,
    admin: &transport::AdminService,
) -> Option<Status> {
    fn bare<T: Default>() -> Request<T> {
        Request::new(T::default())
    }
    let (service, name) = authz::split_method(method)?;
    let err = match (service, name) {
        ("trustline.v1.Provisioning", "OpenOrder") => provisioning.open_order(bare()).await.err(),
        ("trustline.v1.Provisioning", "CloseOrder") => provisioning.close_order(bare()).await.err(),
        ("trustline.v1.Provisioning", "GetOrder") => provisioning.get_order(bare()).await.err(),
        ("trustline.v1.Provisioning", "BeginClaim") => provisioning.begin_claim(bare()).await.err(),
        ("trustline.v1.Provisioning", "CompleteClaim") => {
            provisioning.complete_claim(bare()).await.err()
        }
        ("trustline.v1.Provisioning", "DeliverDeviceKey") => {
            provisioning.deliver_device_key(bare()).await.err()
        }
        ("trustline.v1.Provisioning", "Certify") => provisioning.certify(bare()).await.err(),
        ("trustline.v1.Provisioning", "Line") => {
            struct Nothing;
            impl tonic::codec::Decoder for Nothing {
                type Item = v1::LineRequest;
                type Error = Status;
                fn decode(
                    &mut self,
                    _: &mut tonic::codec::DecodeBuf<'_>,
                ) -> Result<Option<v1::LineRequest>, Status> {
                    Ok(None)
                }
            }
            let inbound =
                tonic::Streaming::new_request(Nothing, tonic::body::Body::empty(), None, None);
            provisioning.line(Request::new(inbound)).await.err()
        }
        ("trustline.v1.Provisioning", "RecordCustody") => {
            provisioning.record_custody(bare()).await.err()
        }
        ("trustline.v1.Provisioning", "BindFdoHeader") => {
            provisioning.bind_fdo_header(bare()).await.err()
        }
        ("trustline.v1.Ownership", "TransferFromManufacturer") => {
            ownership.transfer_from_manufacturer(bare()).await.err()
        }
        ("trustline.v1.Ownership", "RegisterTransfer") => {
            ownership.register_transfer(bare()).await.err()
        }
        ("trustline.v1.Ownership", "GetChallenge") => ownership.get_challenge(bare()).await.err(),
        ("trustline.v1.Ownership", "Onboard") => ownership.onboard(bare()).await.err(),
        ("trustline.v1.Ownership", "Decommission") => ownership.decommission(bare()).await.err(),
        ("trustline.v1.Ownership", "Recommission") => ownership.recommission(bare()).await.err(),
        ("trustline.v1.Ownership", "Retire") => ownership.retire(bare()).await.err(),
        ("trustline.v1.Ownership", "GetRevocationList") => {
            ownership.get_revocation_list(bare()).await.err()
        }
        ("trustline.v1.Ownership", "GetDeviceState") => {
            ownership.get_device_state(bare()).await.err()
        }
        ("trustline.v1.Ownership", "LiftQuarantine") => {
            ownership.lift_quarantine(bare()).await.err()
        }
        ("trustline.v1.Admin", "ListLockouts") => admin.list_lockouts(bare()).await.err(),
        ("trustline.v1.Admin", "ClearLockout") => admin.clear_lockout(bare()).await.err(),
        _ => return None,
    };
    Some(err.unwrap_or_else(|| Status::ok("the handler answered")))
}

#[tokio::test]
async fn no_handler_runs_without_the_guards_authorization() -> anyhow::Result<()> {
    let order_key = SoftwareSigner::generate();
    let voucher_key = SoftwareSigner::generate();
    let backends = Arc::new(Unreachable {
        voucher_key: voucher_key.public_key_der().to_vec(),
    });
    let factory = provisioner::Factory::start(
        provisioner::FactoryConfig::new(
            order_key.public_key_der().to_vec(),
            vec![],
            provisioner::ClaimKey::ephemeral()?,
        ),
        backends.clone(),
        backends.clone(),
    )
    .await?;
    let provisioning = provisioner::service::ProvisioningService::new(Arc::new(factory));
    let ownership = ownership::Ownership::start(
        ownership::OwnershipConfig::default(),
        ownership::OwnershipBackends {
            ledger: backends.clone(),
            reads: backends.clone(),
            ca: backends.clone(),
            crl: backends,
            registry: None,
        },
    )
    .await?;
    let ownership = ownership::service::OwnershipService::new(Arc::new(ownership));
    let admin = transport::AdminService::new(transport::Guard::new(
        transport::Limits::default(),
        transport::Metrics::new(),
    ));

    let handled: Vec<_> = authz::rules()
        .iter()
        .filter(|r| {
            [
                "trustline.v1.Provisioning",
                "trustline.v1.Ownership",
                "trustline.v1.Admin",
            ]
            .contains(&r.service())
        })
        .collect();
    assert!(handled.len() >= 19, "only {} handlers", handled.len());
    for rule in handled {
        let status = call_unguarded(rule.method, &provisioning, &ownership, &admin)
            .await
            .unwrap_or_else(|| panic!("no case for {}", rule.method));
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{} ran without an authorized caller: {status:?}",
            rule.method
        );
    }

    // A bare caller (what the guard used to insert) is not an authorization.
    let mut request = Request::new(v1::GetOrderRequest::default());
    request.extensions_mut().insert(transport::Caller::new(
        transport::Role::Admin,
        "hq",
        "alice",
    )?);
    let status = provisioning
        .get_order(request)
        .await
        .expect_err("a bare caller was allowed");
    assert_eq!(status.code(), Code::Unauthenticated);
    Ok(())
}

#[test]
fn the_rot_uri_prefix_is_the_cas() {
    assert_eq!(
        trustline_proto::ROT_URI_PREFIX,
        ca_service::ca::ROT_URI_PREFIX
    );
}
