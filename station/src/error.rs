//! The station's one error enum. Per-device refusals and failures during a
//! run are outcomes in the run's report, not errors: an error here means a
//! run or an inspection could not be done at all. The station serves no
//! RPC, so there is no mapping onto `tonic::Status`; the refusals it reads
//! come with the services' `trustline-refusal` reasons
//! ([`trustline_proto::refusal`]).

/// Why a station run, a device exchange or an inspection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device on the station's link refused or failed an operation.
    #[error("device: {0}")]
    Device(String),
    /// The device answered a step with a `DeviceError` (docs/device-protocol.md
    /// §9.2): it refused, and a refused request changes nothing on it.
    #[error("device refused ({code}): {reason}")]
    DeviceRefused {
        /// The error code's stable name (`already-claimed`, `key-mismatch`,
        /// ...; `unknown` for a code this station does not know).
        code: String,
        /// The device's own explanation (free text, for the log).
        reason: String,
    },
    /// The link to the device failed: no answer in time, the command
    /// exited, a malformed frame, an answer with the wrong id. Whether the
    /// step took effect on the device is unknown (the link reads `status`
    /// before it repeats a one-time step).
    #[error("link {fault}: {detail}")]
    Link {
        /// What kind of failure.
        fault: LinkFault,
        /// What happened (for exec: the exit status and the last lines of
        /// stderr).
        detail: String,
    },
    /// A service (the provisioner, the ledger) refused or failed a call the
    /// run or inspection could not do without; nothing was done for the
    /// devices.
    #[error("{service} failed: {status}")]
    Backend {
        /// "provisioner" or "ledger".
        service: &'static str,
        /// Its status.
        status: Box<tonic::Status>,
    },
    /// A service answered with something malformed (an order without its
    /// serial scheme, ...).
    #[error("invalid answer: {0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A start-up problem (no randomness, a worker that panicked, a
    /// simulator that could not be built).
    #[error("configuration: {0}")]
    Config(String),
}

/// How a device link failed; its stable name (`Display`) is the reason a
/// run reports as `link:<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkFault {
    /// No answer within the per-request timeout (an `exec:` command is
    /// killed).
    Timeout,
    /// The `exec:` command ended before it answered, or exited with a
    /// status other than 0 at the end of the session.
    Exit,
    /// The serial port hung up (the device end closed).
    Hangup,
    /// The bytes on the link are not a frame, or its body not a
    /// `DeviceResponse`; or the device reported a framing error (id 0).
    Malformed,
    /// An answer carrying an id that is neither the request's nor a stale
    /// earlier one.
    WrongId,
    /// An answer for another step than the one asked.
    WrongAnswer,
    /// The device speaks no protocol version the station does, or lacks a
    /// step the station needs.
    Protocol,
    /// The command could not be started or the port opened, or reading or
    /// writing it failed.
    Io,
}

impl LinkFault {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkFault::Timeout => "timeout",
            LinkFault::Exit => "exit",
            LinkFault::Hangup => "hangup",
            LinkFault::Malformed => "malformed",
            LinkFault::WrongId => "wrong-id",
            LinkFault::WrongAnswer => "wrong-answer",
            LinkFault::Protocol => "protocol",
            LinkFault::Io => "io",
        }
    }

    /// Whether the answer was lost in transit (the device may or may not
    /// have done the step), as opposed to a link that cannot work at all.
    pub fn lost_answer(self) -> bool {
        matches!(
            self,
            LinkFault::Timeout
                | LinkFault::Exit
                | LinkFault::Hangup
                | LinkFault::Malformed
                | LinkFault::WrongId
                | LinkFault::WrongAnswer
        )
    }
}

impl std::fmt::Display for LinkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The stable reason a run reports for a device that failed with this
    /// error: `device:<code>` for a device's refusal (e.g.
    /// `device:already-claimed`), `link:<fault>` for a failed link (e.g.
    /// `link:timeout`), `station:<kind>` for the station's own failures.
    pub fn reason(&self) -> String {
        match self {
            Error::Device(_) => "device:error".into(),
            Error::DeviceRefused { code, .. } => format!("device:{code}"),
            Error::Link { fault, .. } => format!("link:{fault}"),
            Error::Backend { .. } => "station:backend".into(),
            Error::Invalid(_) => "station:invalid-answer".into(),
            Error::Io { .. } => "station:io".into(),
            Error::Config(_) => "station:config".into(),
        }
    }

    pub(crate) fn link(fault: LinkFault, detail: impl Into<String>) -> Self {
        Error::Link {
            fault,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn ledger(status: tonic::Status) -> Self {
        Error::Backend {
            service: "ledger",
            status: Box::new(status),
        }
    }
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
