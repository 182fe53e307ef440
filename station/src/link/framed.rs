//! The framed device protocol (docs/device-protocol.md §8–§11) over a
//! byte link — a command's standard streams (`exec:`) or a serial port
//! (`serial:`): sessions opened by `hello` (version 1, the steps the
//! station needs), requests numbered from 1, answers checked by id and
//! step ([`super::answer`]), a per-request timeout, and after a lost answer
//! a new session that repeats a repeatable step or recovers a one-time
//! step from `status` ([`super::recovery`]), up to [`LinkOptions::retries`]
//! times.

use std::time::Duration;

use tokio::time::Instant;
use trustline_proto::device::v1::device_request::Step;
use trustline_proto::device::v1::device_response::Result as Answer;
use trustline_proto::device::v1::{self as dv1};
use trustline_proto::device::{encode_frame, MAX_FRAME_LEN, PROTOCOL_VERSION};

use super::answer::{self, check_answer, request_step, step_name, Checked};
use super::exec::{ExecCommand, ExecPort};
use super::recovery::{recover, Recovered};
use super::serial::{SerialPath, SerialPort};
use super::LinkOptions;
use crate::error::{Error, LinkFault, Result};

mod steps;

/// The steps every device must announce for the factory flow (§11); the
/// personalisation step of the run's mode is checked when it is used.
const REQUIRED_STEPS: [u32; 7] = [2, 3, 4, 5, 6, 9, 10];

/// What the device said in `hello`.
#[derive(Debug, Clone)]
struct Session {
    steps: Vec<u32>,
    kdfs: Vec<String>,
    max_frame_len: usize,
}

/// The byte link under the protocol.
enum Port {
    Exec(ExecPort),
    Serial(SerialPort),
}

impl Port {
    async fn connect(&mut self, deadline: Instant) -> Result<()> {
        match self {
            Port::Exec(p) => p.connect(),
            Port::Serial(p) => p.connect(deadline).await,
        }
    }

    async fn send(&mut self, frame: &[u8], deadline: Instant, step: &str) -> Result<()> {
        match self {
            Port::Exec(p) => p.send(frame, deadline, step).await,
            Port::Serial(p) => p.send(frame, deadline, step).await,
        }
    }

    async fn recv(&mut self, deadline: Instant, step: &str) -> Result<Vec<u8>> {
        match self {
            Port::Exec(p) => p.recv(deadline, step).await,
            Port::Serial(p) => p.recv(deadline, step).await,
        }
    }

    /// After a lost answer: the stream is out of step.
    async fn reset(&mut self, deadline: Instant) {
        match self {
            Port::Exec(p) => p.stop().await,
            Port::Serial(p) => p.drain(deadline).await,
        }
    }

    async fn finish(&mut self, deadline: Instant) -> Result<()> {
        match self {
            Port::Exec(p) => p.finish(deadline).await,
            Port::Serial(p) => {
                p.close();
                Ok(())
            }
        }
    }

    /// The device failed: nothing of it keeps running.
    async fn abandon(&mut self) {
        match self {
            Port::Exec(p) => p.stop().await,
            Port::Serial(p) => p.close(),
        }
    }
}

/// A device behind the framed protocol: an `exec:` command or a serial
/// port.
pub struct FramedLink {
    port: Port,
    options: LinkOptions,
    /// The id of the next request; never reused on this link, so an answer
    /// from an earlier session is recognised as stale.
    next_id: u32,
    session: Option<Session>,
}

impl FramedLink {
    /// The device behind `command`, run for device `index` of the run.
    pub fn exec(command: &ExecCommand, index: usize, options: LinkOptions) -> Self {
        Self::new(
            Port::Exec(ExecPort::new(command, index, options.timeout)),
            options,
        )
    }

    /// The device on the serial port `path`.
    pub fn serial(path: SerialPath, options: LinkOptions) -> Self {
        Self::new(Port::Serial(SerialPort::new(path)), options)
    }

    fn new(port: Port, options: LinkOptions) -> Self {
        Self {
            port,
            options,
            next_id: 1,
            session: None,
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.options.timeout
    }

    /// Opening a session (starting the command, opening the port, `hello`)
    /// may take [`LinkOptions::open_timeout`], or the request timeout when
    /// that is longer.
    fn open_timeout(&self) -> Duration {
        self.options.open_timeout.max(self.options.timeout)
    }

    /// Opens a session when there is none: connect, `hello`, checks.
    async fn ensure_session(&mut self) -> Result<()> {
        if self.session.is_some() {
            return Ok(());
        }
        let open = self.open_timeout();
        self.port.connect(Instant::now() + open).await?;
        let hello = Step::Hello(dv1::HelloRequest {
            versions: vec![PROTOCOL_VERSION],
            station: self.options.station.clone(),
        });
        let Answer::Hello(h) = self.exchange(&hello, open).await? else {
            return Err(wrong_answer("hello"));
        };
        if h.version != PROTOCOL_VERSION {
            return Err(Error::link(
                LinkFault::Protocol,
                format!(
                    "the device chose protocol version {}; this station offered {PROTOCOL_VERSION}",
                    h.version
                ),
            ));
        }
        let missing: Vec<&str> = REQUIRED_STEPS
            .iter()
            .filter(|s| !h.steps.contains(s))
            .map(|s| step_name(*s))
            .collect();
        if !missing.is_empty() {
            return Err(Error::link(
                LinkFault::Protocol,
                format!("the device does not announce {}", missing.join(", ")),
            ));
        }
        let max = usize::try_from(h.max_frame_len).unwrap_or(MAX_FRAME_LEN);
        self.session = Some(Session {
            steps: h.steps,
            kdfs: h.kdfs,
            max_frame_len: if max == 0 {
                MAX_FRAME_LEN
            } else {
                max.min(MAX_FRAME_LEN)
            },
        });
        Ok(())
    }

    /// Whether the device announced step `step` in this session's hello.
    fn announces(&self, step: u32) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.steps.contains(&step))
    }

    /// One request and its answer in the current session.
    async fn exchange(&mut self, step: &Step, timeout: Duration) -> Result<Answer> {
        let number = request_step(step);
        let name = step_name(number);
        if let Some(session) = &self.session {
            if !session.steps.contains(&number) {
                return Err(Error::link(
                    LinkFault::Protocol,
                    format!("the device does not announce {name}"),
                ));
            }
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let request = dv1::DeviceRequest {
            id,
            step: Some(step.clone()),
        };
        let frame = encode_frame(&request)
            .map_err(|e| Error::link(LinkFault::Protocol, format!("the {name} request: {e}")))?;
        let limit = self
            .session
            .as_ref()
            .map_or(MAX_FRAME_LEN, |s| s.max_frame_len);
        if frame.len() - trustline_proto::device::FRAME_HEADER_LEN > limit {
            return Err(Error::link(
                LinkFault::Protocol,
                format!(
                    "the {name} request of {} bytes exceeds the device's limit of {limit}",
                    frame.len()
                ),
            ));
        }
        let deadline = Instant::now() + timeout;
        let within = |e: Error| match e {
            Error::Link {
                fault: LinkFault::Timeout,
                detail,
            } => Error::link(
                LinkFault::Timeout,
                if detail.is_empty() {
                    format!("no answer to {name} within {timeout:?}")
                } else {
                    format!("no answer to {name} within {timeout:?}; {detail}")
                },
            ),
            other => other,
        };
        self.port
            .send(&frame, deadline, name)
            .await
            .map_err(within)?;
        loop {
            let body = self.port.recv(deadline, name).await.map_err(within)?;
            match check_answer(&body, id, number)? {
                Checked::Answer(answer) => return Ok(answer),
                // A late answer to an earlier request: the one asked for
                // may still come before the deadline.
                Checked::Stale(_) => continue,
            }
        }
    }

    /// One attempt at `step`: a one-time step after a lost answer reads
    /// `status` first.
    async fn attempt(&mut self, step: &Step, after_loss: bool) -> Result<Answer> {
        self.ensure_session().await?;
        let number = request_step(step);
        if after_loss && !answer::repeatable(number) {
            let Answer::Status(status) = self
                .exchange(&Step::Status(dv1::StatusRequest {}), self.options.timeout)
                .await?
            else {
                return Err(wrong_answer("status"));
            };
            match recover(step, &status) {
                Recovered::Done(answer) => return Ok(answer),
                Recovered::Refused(e) => return Err(e),
                Recovered::NotDone => {}
            }
        }
        self.exchange(step, self.options.timeout).await
    }

    /// `step` with the link's retries; a failed device's link is stopped.
    async fn call(&mut self, step: Step) -> Result<Answer> {
        let number = request_step(&step);
        let mut tries = 0;
        let mut first = None;
        loop {
            match self.attempt(&step, tries > 0).await {
                Ok(answer) => return Ok(answer),
                Err(e) if tries < self.options.retries && retryable(&e, number) => {
                    tries += 1;
                    first.get_or_insert(e);
                    self.session = None;
                    let deadline = self.deadline();
                    self.port.reset(deadline).await;
                }
                Err(e) => {
                    self.session = None;
                    self.port.abandon().await;
                    return Err(after_tries(first, e, tries));
                }
            }
        }
    }
}

/// Whether a failure of `step` is tried again: the answer was lost, and the
/// step is repeatable or a one-time step `status` can recover.
fn retryable(e: &Error, step: u32) -> bool {
    matches!(e, Error::Link { fault, .. } if fault.lost_answer())
        && (answer::repeatable(step) || matches!(step, 5 | 7 | 8))
}

fn wrong_answer(step: &str) -> Error {
    Error::link(LinkFault::WrongAnswer, format!("no {step} answer"))
}

fn missing(what: &str) -> Error {
    Error::link(
        LinkFault::Malformed,
        format!("the answer carries no {what}"),
    )
}

/// The failure of a step tried `tries + 1` times: the first lost answer is
/// the cause (what came after is often its consequence, e.g. a port that
/// cannot be opened again after the device died), the last is appended.
fn after_tries(first: Option<Error>, last: Error, tries: u32) -> Error {
    let n = tries + 1;
    match first {
        Some(Error::Link { fault, detail }) => {
            let same =
                matches!(&last, Error::Link { fault: f, detail: d } if *f == fault && *d == detail);
            Error::Link {
                fault,
                detail: if same {
                    format!("{detail} (the same on all {n} tries)")
                } else {
                    format!("{detail} (tried {n} times; last: {last})")
                },
            }
        }
        _ => last,
    }
}
