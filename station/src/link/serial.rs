//! The `serial:` link (docs/device-protocol.md §8.4): the same frames over
//! a serial port — a fixture's console, a USB CDC-ACM port — opened with
//! the `serialport` crate as 8 data bits, no parity, 1 stop bit, no flow
//! control, raw, at 115 200 baud unless configured. Before its first frame
//! of a session the station discards whatever the port received (boot
//! text) until the line has been idle for 200 ms, and it does the same
//! after a lost answer before it says `hello` again; a late answer that
//! still arrives is recognised by its id and skipped.
//!
//! The port's I/O blocks, so each exchange runs on tokio's blocking pool
//! with the request's deadline as the port's timeout.

use std::io::Read;
use std::time::Duration;

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, StopBits};
use tokio::time::Instant;
use trustline_proto::device::read_frame;

use crate::error::{Error, LinkFault, Result};

/// The default baud rate.
pub const DEFAULT_BAUD: u32 = 115_200;
/// How long the line must be quiet before the station says `hello`.
const IDLE: Duration = Duration::from_millis(200);

/// A serial port and its baud rate: `PATH[,BAUD]`. `{index}` in the path
/// becomes the device's index in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialPath {
    /// The port, e.g. `/dev/ttyACM0`.
    pub path: String,
    /// Bits per second.
    pub baud: u32,
}

impl std::str::FromStr for SerialPath {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (path, baud) = match s.rsplit_once(',') {
            Some((path, baud)) => {
                let baud: u32 = baud
                    .parse()
                    .map_err(|_| format!("serial baud rate {baud:?} is not a number"))?;
                (path, baud)
            }
            None => (s, DEFAULT_BAUD),
        };
        if path.is_empty() {
            return Err("the serial port path is empty".into());
        }
        if baud == 0 {
            return Err("the serial baud rate must be above 0".into());
        }
        Ok(Self {
            path: path.to_owned(),
            baud,
        })
    }
}

impl std::fmt::Display for SerialPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.path, self.baud)
    }
}

impl SerialPath {
    /// The port of device `index`: `{index}` replaced in the path.
    pub fn for_index(&self, index: usize) -> Self {
        Self {
            path: self
                .path
                .replace(super::exec::INDEX_PLACEHOLDER, &index.to_string()),
            baud: self.baud,
        }
    }
}

type Port = Box<dyn serialport::SerialPort>;

/// The byte link of a `serial:` device.
pub(super) struct SerialPort {
    path: SerialPath,
    port: Option<Port>,
}

/// Reads from the port until `deadline`, then reports `TimedOut`.
struct DeadlineReader<'a> {
    port: &'a mut dyn serialport::SerialPort,
    deadline: std::time::Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.port.set_timeout(left).map_err(std::io::Error::from)?;
        self.port.read(buf)
    }
}

/// Discards input until the line has been quiet for [`IDLE`] or `deadline`
/// passes (then the line is not quiet: an error).
fn drain(port: &mut dyn serialport::SerialPort, deadline: std::time::Instant) -> Result<()> {
    let _ = port.clear(ClearBuffer::Input);
    let mut buf = [0u8; 1024];
    loop {
        if std::time::Instant::now() >= deadline {
            return Err(Error::link(
                LinkFault::Timeout,
                "the serial line did not fall quiet before the deadline",
            ));
        }
        port.set_timeout(IDLE).map_err(io_error)?;
        match port.read(&mut buf) {
            Ok(0) => return Err(Error::link(LinkFault::Hangup, "the serial port hung up")),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(()),
            Err(e) => return Err(io_failure("draining the serial port", e)),
        }
    }
}

fn io_error(e: serialport::Error) -> Error {
    Error::link(LinkFault::Io, e.to_string())
}

fn io_failure(what: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::TimedOut => Error::link(LinkFault::Timeout, format!("{what}: {e}")),
        // EIO: a pty whose device side closed, an adapter unplugged.
        _ if e.raw_os_error() == Some(5) => {
            Error::link(LinkFault::Hangup, format!("{what}: the port hung up ({e})"))
        }
        std::io::ErrorKind::BrokenPipe => {
            Error::link(LinkFault::Hangup, format!("{what}: the port hung up"))
        }
        _ => Error::link(LinkFault::Io, format!("{what}: {e}")),
    }
}

impl SerialPort {
    pub(super) fn new(path: SerialPath) -> Self {
        Self { path, port: None }
    }

    /// Runs `f` on the port on the blocking pool; a port that failed is
    /// closed (the next session opens it again).
    async fn with_port<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut dyn serialport::SerialPort) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let Some(mut port) = self.port.take() else {
            return Err(Error::link(LinkFault::Io, "the serial port is not open"));
        };
        let (port, out) = tokio::task::spawn_blocking(move || {
            let out = f(port.as_mut());
            (port, out)
        })
        .await
        .map_err(|e| Error::link(LinkFault::Io, format!("the serial worker failed: {e}")))?;
        if !matches!(
            &out,
            Err(Error::Link {
                fault: LinkFault::Hangup | LinkFault::Io,
                ..
            })
        ) {
            self.port = Some(port);
        }
        out
    }

    /// Opens the port (unless open) and discards what it received.
    pub(super) async fn connect(&mut self, deadline: Instant) -> Result<()> {
        let deadline = deadline.into_std();
        if self.port.is_none() {
            let path = self.path.clone();
            let port = tokio::task::spawn_blocking(move || {
                serialport::new(&path.path, path.baud)
                    .data_bits(DataBits::Eight)
                    .parity(Parity::None)
                    .stop_bits(StopBits::One)
                    .flow_control(FlowControl::None)
                    .timeout(IDLE)
                    .open()
                    .map_err(|e| Error::link(LinkFault::Io, format!("opening {}: {e}", path.path)))
            })
            .await
            .map_err(|e| Error::link(LinkFault::Io, format!("the serial worker failed: {e}")))??;
            self.port = Some(port);
        }
        self.with_port(move |port| drain(port, deadline)).await
    }

    pub(super) async fn send(&mut self, frame: &[u8], deadline: Instant, step: &str) -> Result<()> {
        let frame = frame.to_vec();
        let deadline = deadline.into_std();
        let what = format!("writing the {step} request");
        self.with_port(move |port| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            port.set_timeout(left.max(Duration::from_millis(1)))
                .map_err(io_error)?;
            port.write_all(&frame).map_err(|e| io_failure(&what, e))?;
            // The frame is written; a port that will not drain it has lost
            // its other end (tcdrain fails once a pty's device side closed,
            // or a USB adapter went away): the device hung up.
            port.flush().map_err(|e| {
                Error::link(LinkFault::Hangup, format!("{what}: the port hung up ({e})"))
            })
        })
        .await
    }

    pub(super) async fn recv(&mut self, deadline: Instant, step: &str) -> Result<Vec<u8>> {
        let deadline = deadline.into_std();
        let step = step.to_owned();
        self.with_port(move |port| {
            let mut reader = DeadlineReader { port, deadline };
            match read_frame(&mut reader) {
                Ok(Some(body)) => Ok(body),
                Ok(None) => Err(Error::link(
                    LinkFault::Hangup,
                    format!("the serial port hung up before the answer to {step}"),
                )),
                Err(trustline_proto::Error::FrameIo(e))
                    if e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    Err(Error::link(LinkFault::Timeout, String::new()))
                }
                Err(trustline_proto::Error::FrameIo(e)) => {
                    Err(io_failure(&format!("reading the answer to {step}"), e))
                }
                Err(trustline_proto::Error::FrameTruncated { .. }) => Err(Error::link(
                    LinkFault::Hangup,
                    format!("the serial port hung up inside the answer to {step}"),
                )),
                Err(e) => Err(Error::link(
                    LinkFault::Malformed,
                    format!("the answer to {step} is not a frame ({e})"),
                )),
            }
        })
        .await
    }

    /// After a lost answer: discard what is on the line until it is quiet.
    pub(super) async fn drain(&mut self, deadline: Instant) {
        let deadline = deadline.into_std();
        if self.port.is_some()
            && self
                .with_port(move |port| drain(port, deadline))
                .await
                .is_err()
        {
            self.port = None;
        }
    }

    /// Ends the session: the port is closed.
    pub(super) fn close(&mut self) {
        self.port = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_takes_an_optional_baud_rate_and_the_index() {
        let p: SerialPath = "/dev/ttyUSB{index}".parse().expect("path");
        assert_eq!(
            (p.path.as_str(), p.baud),
            ("/dev/ttyUSB{index}", DEFAULT_BAUD)
        );
        assert_eq!(p.for_index(2).path, "/dev/ttyUSB2");
        let p: SerialPath = "/dev/pts/7,9600".parse().expect("path");
        assert_eq!((p.path.as_str(), p.baud), ("/dev/pts/7", 9600));
        assert_eq!(p.to_string(), "/dev/pts/7,9600");
        for bad in ["", ",9600", "/dev/x,fast", "/dev/x,0"] {
            assert!(bad.parse::<SerialPath>().is_err(), "{bad:?}");
        }
    }
}
