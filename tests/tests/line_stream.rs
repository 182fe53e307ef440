//! The station line stream (`Provisioning/Line`, issue 16) against the unary
//! RPCs it carries, over real gRPC behind mTLS on loopback: the same devices
//! get the same results — certificates for good devices, the same code and
//! `trustline-refusal` reason for each refusal (duplicate serial, clone, bad
//! signature, quota, another site's order, a wrong role) — a refused device
//! does not end the stream, malformed frames and messages end it with a
//! precise status, the steps in flight are bounded, and a stream cut in the
//! middle of a device leaves what a cut unary call leaves (invariant 1:
//! nothing released that is not recorded) and the device is retried.

use hsm_sim::rot::{Fleet, SimulatedRot};
use site::setup;
use station::run::{self, Job, Mode, RunConfig};
use station::sim::SimLink;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};
use trustline_proto::v1;
use trustline_proto::v1::line_request::Step;
use trustline_proto::v1::line_response::Result as Answer;
use trustline_proto::v1::provisioning_client::ProvisioningClient;
use trustline_proto::v1::EventKind;
use trustline_tests::{count, openssl_verify, station, Stack, SITE};

const OTHER_SITE: &str = "site-b";

/// A line stream driven by hand.
struct RawLine {
    tx: Option<mpsc::UnboundedSender<v1::LineRequest>>,
    answers: tonic::Streaming<v1::LineResponse>,
    in_flight: Option<String>,
}

impl RawLine {
    async fn open(channel: Channel) -> Result<Self, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let requests =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let response = ProvisioningClient::new(channel).line(requests).await?;
        let in_flight = response
            .metadata()
            .get(provisioner::line::IN_FLIGHT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self {
            tx: Some(tx),
            answers: response.into_inner(),
            in_flight,
        })
    }

    fn send(&self, id: u64, step: Option<Step>) {
        self.tx
            .as_ref()
            .expect("open")
            .send(v1::LineRequest { id, step })
            .expect("the stream is open");
    }

    /// The next answer; `Err` when the stream ended with a status.
    async fn next(&mut self) -> Result<Option<v1::LineResponse>, Status> {
        self.answers.message().await
    }

    /// Sends one step and waits for its answer; a refusal becomes the status
    /// its unary call would have returned.
    async fn ask(&mut self, id: u64, step: Step) -> Result<Answer, Status> {
        self.send(id, Some(step));
        loop {
            let answer = self.next().await?.expect("an answer before the end");
            if answer.id != id {
                continue;
            }
            return match answer.result.expect("a result") {
                Answer::Refusal(r) => Err(status_of(r)),
                other => Ok(other),
            };
        }
    }
}

fn status_of(r: v1::LineRefusal) -> Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if !r.reason.is_empty() {
        metadata.insert(
            trustline_proto::refusal::METADATA_KEY,
            MetadataValue::try_from(r.reason.as_str()).expect("ascii reason"),
        );
    }
    Status::with_details_and_metadata(Code::from(r.code), r.message, r.details.into(), metadata)
}

/// One way to the provisioner.
enum Via {
    Unary(ProvisioningClient<Channel>),
    Stream(RawLine),
}

macro_rules! step {
    ($name:ident, $req:ty, $resp:ty, $variant:ident) => {
        async fn $name(&mut self, id: u64, request: $req) -> Result<$resp, Status> {
            match self {
                Via::Unary(c) => c.$name(request).await.map(|r| r.into_inner()),
                Via::Stream(s) => match s.ask(id, Step::$variant(request)).await? {
                    Answer::$variant(r) => Ok(r),
                    other => panic!("another answer: {other:?}"),
                },
            }
        }
    };
}

impl Via {
    step!(
        begin_claim,
        v1::BeginClaimRequest,
        v1::BeginClaimResponse,
        BeginClaim
    );
    step!(
        complete_claim,
        v1::CompleteClaimRequest,
        v1::CompleteClaimResponse,
        CompleteClaim
    );
    step!(certify, v1::CertifyRequest, v1::CertifyResponse, Certify);

    /// CompleteClaim then Certify: folded on the stream, two calls unary.
    async fn claim_and_certify(
        &mut self,
        id: u64,
        claim: v1::CompleteClaimRequest,
        certify: v1::CertifyRequest,
    ) -> Result<v1::CertifyResponse, Status> {
        match self {
            Via::Unary(_) => {
                self.complete_claim(id, claim).await?;
                self.certify(id, certify).await
            }
            Via::Stream(s) => {
                let folded = v1::ClaimAndCertify {
                    complete_claim: Some(claim),
                    certify: Some(certify),
                };
                match s.ask(id, Step::ClaimAndCertify(folded)).await? {
                    Answer::ClaimAndCertify(r) => {
                        assert!(r.complete_claim.is_some());
                        Ok(r.certify.expect("certify"))
                    }
                    other => panic!("another answer: {other:?}"),
                }
            }
        }
    }
}

/// A device's claim receipt and certify request, the device having signed
/// them in one go (claim, key attestation, proof).
async fn sign_in_one_go(
    via: &mut Via,
    id: u64,
    order: &str,
    rot: &mut SimulatedRot,
    serial: &str,
) -> (v1::CompleteClaimRequest, v1::CertifyRequest) {
    let begin = via
        .begin_claim(
            id,
            v1::BeginClaimRequest {
                order_id: order.into(),
                attestation: Some(rot.attestation()),
            },
        )
        .await
        .expect("begin claim");
    let receipt = rot.claim(&begin.nonce, &begin.anchor).expect("claim");
    rot.lock_readout();
    let (_, ka) = rot.generate_identity_key(&begin.nonce).expect("keygen");
    let pop = rot.proof_of_possession(serial, &begin.nonce).expect("pop");
    (
        v1::CompleteClaimRequest {
            receipt: Some(receipt),
            attestation: Some(rot.attestation()),
        },
        v1::CertifyRequest {
            order_id: order.into(),
            rot_id: begin.rot_id,
            serial: serial.into(),
            key_attestation: Some(ka),
            subject_key: Some(v1::certify_request::SubjectKey::ProofOfPossession(pop)),
            first_owner_public_key: vec![],
        },
    )
}

/// What a scenario showed, comparable across protocols.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    what: &'static str,
    code: Code,
    reason: Option<String>,
    replayed: bool,
}

fn seen<T>(what: &'static str, result: &Result<T, Status>, replayed: impl Fn(&T) -> bool) -> Seen {
    match result {
        Ok(r) => Seen {
            what,
            code: Code::Ok,
            reason: None,
            replayed: replayed(r),
        },
        Err(s) => Seen {
            what,
            code: s.code(),
            reason: trustline_proto::refusal::refusal_reason(s).map(str::to_owned),
            replayed: false,
        },
    }
}

/// The dies one protocol's scenarios use.
struct Dies {
    good: SimulatedRot,
    same_serial: SimulatedRot,
    clone_of_good: SimulatedRot,
    bad_signature: SimulatedRot,
    quota: [SimulatedRot; 2],
    other_site: SimulatedRot,
    last: SimulatedRot,
}

/// Every scenario through `via`; the orders are `<prefix>-A` (this site)
/// and `<prefix>-Q` (quantity 1).
async fn scenarios(
    via: &mut Via,
    prefix: &str,
    serials: u64,
    mut d: Dies,
    root_pem: &std::path::Path,
) -> Vec<Seen> {
    let (order, quota) = (format!("{prefix}-A"), format!("{prefix}-Q"));
    let serial = |n: u64| format!("SN{:06}", serials + n);
    let mut out = Vec::new();
    let work = tempfile::tempdir().expect("work");

    // A good device, and its retry.
    let (claim, certify) = sign_in_one_go(via, 1, &order, &mut d.good, &serial(1)).await;
    let first = via.claim_and_certify(1, claim, certify.clone()).await;
    out.push(seen("good", &first, |r| r.replayed));
    let first = first.expect("certified");
    assert_eq!(first.certificate_chain.len(), 3);
    assert!(openssl_verify(root_pem, &first.certificate_chain, work.path()).expect("openssl"));
    let again = via.certify(1, certify).await;
    out.push(seen("retry", &again, |r| r.replayed));
    assert_eq!(
        again.expect("replayed").certificate_chain,
        first.certificate_chain
    );

    // A second device asking for the same serial.
    let (claim, certify) = sign_in_one_go(via, 2, &order, &mut d.same_serial, &serial(1)).await;
    out.push(seen(
        "duplicate serial",
        &via.claim_and_certify(2, claim, certify).await,
        |r| r.replayed,
    ));
    assert!(d.same_serial.certificate_chain().is_empty());

    // A clone of the good die: its chain gets a presence challenge, its
    // signature over it is the recorded proof.
    let begin = via
        .begin_claim(
            3,
            v1::BeginClaimRequest {
                order_id: order.clone(),
                attestation: Some(d.clone_of_good.attestation()),
            },
        )
        .await;
    out.push(seen("clone chain", &begin, |_| false));
    let status = begin.expect_err("claimed already");
    let presence = <v1::ClaimPresenceChallenge as prost::Message>::decode(status.details())
        .expect("a presence challenge in the details");
    let proof = d
        .clone_of_good
        .claim(&presence.nonce, &presence.anchor)
        .expect("the clone signs");
    out.push(seen(
        "clone proof",
        &via.complete_claim(
            3,
            v1::CompleteClaimRequest {
                receipt: Some(proof),
                attestation: Some(d.clone_of_good.attestation()),
            },
        )
        .await,
        |_| false,
    ));

    // A proof of possession whose signature does not verify.
    let (claim, mut certify) =
        sign_in_one_go(via, 4, &order, &mut d.bad_signature, &serial(2)).await;
    if let Some(v1::certify_request::SubjectKey::ProofOfPossession(pop)) = &mut certify.subject_key
    {
        let last = pop.signature.len() - 1;
        pop.signature[last] ^= 1;
    }
    out.push(seen(
        "bad signature",
        &via.claim_and_certify(4, claim, certify).await,
        |r| r.replayed,
    ));

    // An order of one: the second device is over its quota.
    let [mut q1, mut q2] = d.quota;
    let (claim, certify) = sign_in_one_go(via, 5, &quota, &mut q1, &serial(3)).await;
    out.push(seen(
        "quota first",
        &via.claim_and_certify(5, claim, certify).await,
        |r| r.replayed,
    ));
    let (claim, certify) = sign_in_one_go(via, 6, &quota, &mut q2, &serial(4)).await;
    out.push(seen(
        "quota second",
        &via.claim_and_certify(6, claim, certify).await,
        |r| r.replayed,
    ));

    // Another site's order.
    out.push(seen(
        "other site",
        &via.begin_claim(
            7,
            v1::BeginClaimRequest {
                order_id: format!("{prefix}-B"),
                attestation: Some(d.other_site.attestation()),
            },
        )
        .await,
        |_| false,
    ));

    // The stream is still open after all these refusals.
    let (claim, certify) = sign_in_one_go(via, 8, &order, &mut d.last, &serial(5)).await;
    out.push(seen(
        "after refusals",
        &via.claim_and_certify(8, claim, certify).await,
        |r| r.replayed,
    ));
    out
}

fn dies(rots: &mut Vec<SimulatedRot>, clone_of_good: SimulatedRot) -> Dies {
    let mut next = || rots.remove(0);
    Dies {
        good: next(),
        same_serial: next(),
        clone_of_good,
        bad_signature: next(),
        quota: [next(), next()],
        other_site: next(),
        last: next(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_answers_every_device_as_the_unary_calls_do() {
    let mut fleet = Fleet::builder()
        .seed(61)
        .genuine(14)
        .build()
        .expect("fleet");
    let stack = Stack::start("line-same", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    for prefix in ["PO-U", "PO-S"] {
        for (suffix, site, quantity) in [("A", SITE, 100), ("Q", SITE, 1), ("B", OTHER_SITE, 10)] {
            stack
                .open(&stack.order(&format!("{prefix}-{suffix}"), site, quantity))
                .await
                .expect("order");
        }
    }
    let clones = [
        fleet.key_clone(0).expect("clone"),
        fleet.key_clone(7).expect("clone"),
    ];
    let mut rots: Vec<SimulatedRot> = fleet.into_devices().into_iter().map(|d| d.rot).collect();
    let [unary_clone, stream_clone] = clones;
    let unary_dies = dies(&mut rots, unary_clone);
    let stream_dies = dies(&mut rots, stream_clone);
    let channel = stack.channel(&station(SITE, "st-01")).await.expect("ch");

    let mut unary = Via::Unary(ProvisioningClient::new(channel.clone()));
    let by_unary = scenarios(&mut unary, "PO-U", 0, unary_dies, &stack.root_pem()).await;
    let line = RawLine::open(channel).await.expect("line");
    assert_eq!(line.in_flight.as_deref(), Some("256"));
    let mut stream = Via::Stream(line);
    let by_stream = scenarios(&mut stream, "PO-S", 100, stream_dies, &stack.root_pem()).await;
    assert_eq!(by_stream, by_unary);

    // And they are what the factory's refusal table says.
    let expected = [
        ("good", Code::Ok, None, false),
        ("retry", Code::Ok, None, true),
        (
            "duplicate serial",
            Code::AlreadyExists,
            Some("duplicate-serial"),
            false,
        ),
        (
            "clone chain",
            Code::AlreadyExists,
            Some("already-claimed"),
            false,
        ),
        (
            "clone proof",
            Code::AlreadyExists,
            Some("already-claimed"),
            false,
        ),
        (
            "bad signature",
            Code::InvalidArgument,
            Some("bad-signature"),
            false,
        ),
        ("quota first", Code::Ok, None, false),
        (
            "quota second",
            Code::ResourceExhausted,
            Some("quota"),
            false,
        ),
        (
            "other site",
            Code::PermissionDenied,
            Some("wrong-site"),
            false,
        ),
        ("after refusals", Code::Ok, None, false),
    ];
    let expected: Vec<Seen> = expected
        .into_iter()
        .map(|(what, code, reason, replayed)| Seen {
            what,
            code,
            reason: reason.map(str::to_owned),
            replayed,
        })
        .collect();
    assert_eq!(by_unary, expected);

    // The ledger recorded the same for both: per protocol 4 certified
    // (good, quota first, after refusals... and nothing for the refused),
    // and the refusals the factory records (duplicate serial, proven
    // clone, quota).
    let entries = stack.ledger_entries().await.expect("ledger");
    for prefix in ["PO-U", "PO-S"] {
        let of = |kind: EventKind| {
            entries
                .iter()
                .filter(|e| e.kind == kind as i32 && e.order_id.starts_with(prefix))
                .count()
        };
        assert_eq!(of(EventKind::Certified), 3, "{prefix}");
        assert_eq!(of(EventKind::DuplicateRejected), 2, "{prefix}");
        assert_eq!(of(EventKind::QuotaRejected), 1, "{prefix}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_role_may_not_provision_gets_no_stream() {
    let fleet = Fleet::builder().seed(62).genuine(1).build().expect("fleet");
    let stack = Stack::start("line-role", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    for identity in [setup::ADMIN, setup::AUDITOR] {
        let channel = stack.channel(identity).await.expect("ch");
        let unary = ProvisioningClient::new(channel.clone())
            .certify(v1::CertifyRequest::default())
            .await
            .expect_err("unary certify");
        let stream = RawLine::open(channel).await.err().expect("no stream");
        assert_eq!(unary.code(), Code::PermissionDenied, "{identity}");
        assert_eq!(
            stream.code(),
            Code::PermissionDenied,
            "{identity}: {stream:?}"
        );
        assert!(stream.message().contains("Provisioning/Line"), "{stream:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_and_frames_end_the_stream_with_a_precise_status() {
    let mut fleet = Fleet::builder().seed(63).genuine(1).build().expect("fleet");
    let stack = Stack::start("line-frames", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    stack
        .open(&stack.order("PO-F", SITE, 10))
        .await
        .expect("order");
    let channel = stack.channel(&station(SITE, "st-01")).await.expect("ch");
    let attestation = fleet.devices_mut()[0].rot.attestation();
    let begin = || {
        Some(Step::BeginClaim(v1::BeginClaimRequest {
            order_id: "PO-F".into(),
            attestation: Some(attestation.clone()),
        }))
    };

    // A message with no device id.
    let mut line = RawLine::open(channel.clone()).await.expect("line");
    line.send(0, begin());
    let status = line.next().await.expect_err("ended");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("device id"), "{status:?}");

    // A message with no step.
    let mut line = RawLine::open(channel.clone()).await.expect("line");
    line.send(9, None);
    let status = line.next().await.expect_err("ended");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no step"), "{status:?}");

    // A frame larger than the decode limit, after a good step.
    let mut line = RawLine::open(channel.clone()).await.expect("line");
    assert!(matches!(
        line.ask(1, begin().expect("step")).await,
        Ok(Answer::BeginClaim(_))
    ));
    let mut huge = attestation.clone();
    huge.cert_chain = vec![vec![0u8; 300 * 1024]];
    line.send(
        2,
        Some(Step::BeginClaim(v1::BeginClaimRequest {
            order_id: "PO-F".into(),
            attestation: Some(huge),
        })),
    );
    let status = line.next().await.expect_err("ended");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // A frame that is not a LineRequest at all.
    let status = send_raw_frame(channel.clone(), &[0x0a, 0xff, 0xff, 0xff]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("malformed line frame"),
        "{status:?}"
    );

    // The line still serves a new stream.
    let mut line = RawLine::open(channel).await.expect("line");
    assert!(matches!(
        line.ask(1, begin().expect("step")).await,
        Ok(Answer::BeginClaim(_))
    ));
}

/// Opens a line stream with a codec that sends `frame` as it is, and returns
/// the status the stream ends with.
async fn send_raw_frame(channel: Channel, frame: &'static [u8]) -> Status {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    struct Raw;
    struct RawEncoder;
    struct ResponseDecoder;
    impl Encoder for RawEncoder {
        type Item = &'static [u8];
        type Error = Status;
        fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            prost::bytes::BufMut::put_slice(dst, item);
            Ok(())
        }
    }
    impl Decoder for ResponseDecoder {
        type Item = v1::LineResponse;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
            prost::Message::decode(src)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()))
        }
    }
    impl Codec for Raw {
        type Encode = &'static [u8];
        type Decode = v1::LineResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }

    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = mpsc::unbounded_channel::<&'static [u8]>();
    tx.send(frame).expect("queued");
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(provisioner::line::METHOD);
    let mut answers = grpc
        .streaming(tonic::Request::new(requests), path, Raw)
        .await
        .expect("the stream opens")
        .into_inner();
    let status = answers.message().await.expect_err("ended");
    drop(tx);
    status
}

fn jobs(rots: Vec<SimulatedRot>) -> Vec<Job<SimLink>> {
    rots.into_iter()
        .map(|rot| Job {
            link: SimLink::new(rot),
            serial: None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steps_in_flight_are_bounded_and_the_station_waits_for_a_slot() {
    let mut fleet = Fleet::builder()
        .seed(64)
        .genuine(72)
        .build()
        .expect("fleet");
    let stack = Stack::start_with("line-bound", &fleet, &[(SITE, "st-01")], |_, c| {
        c.transport.max_in_flight_per_stream = 2;
        Ok(())
    })
    .await
    .expect("stack");
    stack
        .open(&stack.order("PO-B", SITE, 100))
        .await
        .expect("order");
    let channel = stack.channel(&station(SITE, "st-01")).await.expect("ch");

    // 64 steps sent at once on a stream that runs 2: every one is either
    // answered or refused for its device alone, and the stream goes on.
    let mut line = RawLine::open(channel.clone()).await.expect("line");
    assert_eq!(line.in_flight.as_deref(), Some("2"));
    let attestations: Vec<_> = fleet.devices_mut()[..64]
        .iter()
        .map(|d| d.rot.attestation())
        .collect();
    for (i, attestation) in attestations.into_iter().enumerate() {
        line.send(
            i as u64 + 1,
            Some(Step::BeginClaim(v1::BeginClaimRequest {
                order_id: "PO-B".into(),
                attestation: Some(attestation),
            })),
        );
    }
    let (mut answered, mut full) = (0, 0);
    for _ in 0..64 {
        match line.next().await.expect("open").expect("answer").result {
            Some(Answer::BeginClaim(_)) => answered += 1,
            Some(Answer::Refusal(r)) => {
                assert_eq!(Code::from(r.code), Code::ResourceExhausted, "{r:?}");
                assert_eq!(r.reason, "stream-full");
                assert_eq!(r.step, "BeginClaim");
                full += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        answered >= 2 && full >= 1,
        "{answered} answered, {full} full"
    );
    drop(line);

    // The station keeps under the announced bound: 8 devices in flight on a
    // stream of 2 are all provisioned, none refused.
    let rots: Vec<SimulatedRot> = fleet
        .into_devices()
        .into_iter()
        .skip(64)
        .map(|d| d.rot)
        .collect();
    let config = RunConfig {
        order_id: "PO-B".into(),
        mode: Mode::OnDevice,
        concurrency: 8,
        out_dir: None,
        first_serial: None,
        progress: false,
        retries: 0,
        protocol: run::Protocol::Stream,
    };
    let (report, _) = run::run(channel, config, jobs(rots)).await.expect("run");
    assert_eq!(report.provisioned(), 8, "{:?}", report.outcomes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_device_leaves_what_a_cut_unary_call_leaves_and_the_device_is_retried() {
    let fleet = Fleet::builder().seed(65).genuine(2).build().expect("fleet");
    let stack = Stack::start("line-cut", &fleet, &[(SITE, "st-01")])
        .await
        .expect("stack");
    stack
        .open(&stack.order("PO-C", SITE, 10))
        .await
        .expect("order");
    let channel = stack.channel(&station(SITE, "st-01")).await.expect("ch");
    let mut rots: Vec<SimulatedRot> = fleet.into_devices().into_iter().map(|d| d.rot).collect();
    let mut second = rots.pop().expect("die");
    let mut first = rots.pop().expect("die");

    // Cut after the device's folded claim and certification were sent,
    // before any answer: like a unary call whose connection drops.
    let mut via = Via::Stream(RawLine::open(channel.clone()).await.expect("line"));
    let (claim, certify) = sign_in_one_go(&mut via, 1, "PO-C", &mut first, "SN000001").await;
    let Via::Stream(line) = &mut via else {
        unreachable!()
    };
    line.send(
        1,
        Some(Step::ClaimAndCertify(v1::ClaimAndCertify {
            complete_claim: Some(claim.clone()),
            certify: Some(certify.clone()),
        })),
    );
    drop(via);

    // Cut after BeginClaim was answered: the claim nonce is stateless and
    // nothing was recorded.
    let mut via = Via::Stream(RawLine::open(channel.clone()).await.expect("line"));
    let (claim_2, certify_2) = sign_in_one_go(&mut via, 1, "PO-C", &mut second, "SN000002").await;
    drop(via);

    let entries = stack.ledger_entries().await.expect("ledger");
    let of = |entries: &[v1::LedgerEntry], kind: EventKind, rot: &str| {
        entries
            .iter()
            .filter(|e| e.kind == kind as i32 && e.rot_id == rot)
            .count()
    };
    // What a unary CompleteClaim + Certify cut at the same point may leave:
    // nothing, the claim, or the claim and the certificate — never a
    // certificate without its claim, and nothing for the second device.
    let claimed = of(&entries, EventKind::Claimed, &certify.rot_id);
    let certified = of(&entries, EventKind::Certified, &certify.rot_id);
    assert!(
        claimed <= 1 && certified <= claimed,
        "{claimed} {certified}"
    );
    assert_eq!(of(&entries, EventKind::Claimed, &certify_2.rot_id), 0);
    assert_eq!(count(&entries, EventKind::DuplicateRejected), 0);

    // Both devices are retried on a new stream and certified once.
    let mut via = Via::Stream(RawLine::open(channel).await.expect("line"));
    let again = via
        .claim_and_certify(1, claim, certify.clone())
        .await
        .expect("the first device, retried");
    // A certificate recorded before the retry is what the retry gets (the
    // cut step may also still finish after the snapshot above, as a unary
    // call the server had begun).
    assert!(again.replayed || certified == 0, "{again:?}");
    via.claim_and_certify(2, claim_2, certify_2.clone())
        .await
        .expect("the second device, retried");
    let entries = stack.ledger_entries().await.expect("ledger");
    for rot in [&certify.rot_id, &certify_2.rot_id] {
        assert_eq!(of(&entries, EventKind::Claimed, rot), 1);
        assert_eq!(of(&entries, EventKind::Certified, rot), 1);
    }
    let recorded = entries
        .iter()
        .find(|e| e.kind == EventKind::Certified as i32 && e.rot_id == certify.rot_id)
        .expect("certified");
    assert_eq!(recorded.seq, again.ledger_seq);
    assert_eq!(count(&entries, EventKind::DuplicateRejected), 0);
}
