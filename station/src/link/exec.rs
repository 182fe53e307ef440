//! The `exec:` link (docs/device-protocol.md §8.3): the station starts the
//! configured command for each device — a wrapper around the line's
//! programmer tool, or the reference device — and speaks the framed
//! protocol over its standard streams: requests on its stdin, answers on
//! its stdout, free text on stderr, of which the last lines are kept as
//! the failure reason.
//!
//! One command is one device: the command line is split into words like a
//! POSIX shell would (quotes, backslashes; no shell runs it, so no
//! variables, pipes or globs — wrap it in `sh -c '…'` for those), every
//! `{index}` in a word becomes the device's index in the run (0, 1, …), and
//! the command's environment carries `TRUSTLINE_DEVICE_INDEX` (the same
//! index) and `TRUSTLINE_DEVICE_SESSION` (1 for the first start, 2 after a
//! retry restarted it, …). A timeout kills the command; a command that
//! ends before it answers, or exits with a status other than 0 when the
//! station closes its stdin, fails the device with its exit status and the
//! last lines it wrote to stderr.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use trustline_proto::device::{frame_len, FRAME_HEADER_LEN};

use super::answer::clean;
use crate::error::{Error, LinkFault, Result};

/// The environment variable naming the device's index in the run.
pub const ENV_DEVICE_INDEX: &str = "TRUSTLINE_DEVICE_INDEX";
/// The environment variable counting the command's starts for this device.
pub const ENV_DEVICE_SESSION: &str = "TRUSTLINE_DEVICE_SESSION";
/// The placeholder replaced by the device's index in every word.
pub const INDEX_PLACEHOLDER: &str = "{index}";

/// How many of the last stderr lines are kept, and how long each may be.
const STDERR_LINES: usize = 6;
const STDERR_LINE_LEN: usize = 200;
/// How long a command that closed its stdout gets to exit before it is
/// killed, and how long its last stderr lines get to arrive.
const EXIT_GRACE: Duration = Duration::from_secs(2);
const STDERR_GRACE: Duration = Duration::from_millis(500);

/// The configured command of an `exec:` link, split into words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    words: Vec<String>,
}

impl std::str::FromStr for ExecCommand {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let words = shell_words::split(s).map_err(|e| format!("exec command {s:?}: {e}"))?;
        if words.is_empty() {
            return Err("the exec command is empty".into());
        }
        Ok(Self { words })
    }
}

impl std::fmt::Display for ExecCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shell_words::join(&self.words))
    }
}

impl ExecCommand {
    /// The words run for device `index`: `{index}` replaced in each.
    pub fn argv(&self, index: usize) -> Vec<String> {
        let index = index.to_string();
        self.words
            .iter()
            .map(|w| w.replace(INDEX_PLACEHOLDER, &index))
            .collect()
    }
}

/// The last lines a command wrote to stderr.
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    task: JoinHandle<()>,
}

impl StderrTail {
    fn start(stderr: tokio::process::ChildStderr) -> Self {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let keep = lines.clone();
        let task = tokio::spawn(async move {
            let mut stderr = stderr;
            let mut buf = [0u8; 1024];
            let mut line = Vec::new();
            let push = |line: &mut Vec<u8>| {
                let text = clean(String::from_utf8_lossy(line).trim());
                line.clear();
                if text.is_empty() {
                    return;
                }
                let mut lines = keep.lock().unwrap_or_else(|p| p.into_inner());
                if lines.len() == STDERR_LINES {
                    lines.pop_front();
                }
                lines.push_back(text.chars().take(STDERR_LINE_LEN).collect());
            };
            loop {
                let n = match stderr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for &b in &buf[..n] {
                    if b == b'\n' {
                        push(&mut line);
                    } else if line.len() < STDERR_LINE_LEN * 4 {
                        line.push(b);
                    }
                }
            }
            push(&mut line);
        });
        Self { lines, task }
    }

    /// `; stderr: a | b | c`, or nothing; waits briefly for the last lines
    /// of a command that has exited.
    async fn text(&mut self) -> String {
        let _ = timeout(STDERR_GRACE, &mut self.task).await;
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.is_empty() {
            String::new()
        } else {
            format!(
                "; stderr: {}",
                lines.iter().cloned().collect::<Vec<_>>().join(" | ")
            )
        }
    }
}

/// One start of the command.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: StderrTail,
}

/// The byte link of an `exec:` device: the command, started on demand.
pub(super) struct ExecPort {
    command: ExecCommand,
    index: usize,
    timeout: Duration,
    starts: u32,
    running: Option<Box<Running>>,
}

impl ExecPort {
    pub(super) fn new(command: &ExecCommand, index: usize, timeout: Duration) -> Self {
        Self {
            command: command.clone(),
            index,
            timeout,
            starts: 0,
            running: None,
        }
    }

    /// Starts the command unless it runs.
    pub(super) fn connect(&mut self) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let argv = self.command.argv(self.index);
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::link(LinkFault::Io, "the exec command is empty"))?;
        self.starts += 1;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env(ENV_DEVICE_INDEX, self.index.to_string())
            .env(ENV_DEVICE_SESSION, self.starts.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::link(LinkFault::Io, format!("starting {program:?}: {e}")))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::link(
                LinkFault::Io,
                "the command's streams are missing",
            ));
        };
        self.running = Some(Box::new(Running {
            child,
            stdin: Some(stdin),
            stdout,
            stderr: StderrTail::start(stderr),
        }));
        Ok(())
    }

    fn running(&mut self) -> Result<&mut Running> {
        self.running
            .as_deref_mut()
            .ok_or_else(|| Error::link(LinkFault::Io, "the command is not running"))
    }

    pub(super) async fn send(&mut self, frame: &[u8], deadline: Instant, step: &str) -> Result<()> {
        let running = self.running()?;
        let Some(stdin) = running.stdin.as_mut() else {
            return Err(Error::link(LinkFault::Io, "the command's stdin is closed"));
        };
        match timeout_at(deadline, async {
            stdin.write_all(frame).await?;
            stdin.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self
                .ended(&format!("before taking the {step} request ({e})"))
                .await),
            Err(_) => Err(self.timed_out().await),
        }
    }

    pub(super) async fn recv(&mut self, deadline: Instant, step: &str) -> Result<Vec<u8>> {
        let running = self.running()?;
        match timeout_at(deadline, read_frame(&mut running.stdout)).await {
            Ok(Ok(Some(body))) => Ok(body),
            Ok(Ok(None)) => Err(self.ended(&format!("before answering {step}")).await),
            Ok(Err(trustline_proto::Error::FrameTruncated { .. })) => {
                Err(self.ended(&format!("inside its answer to {step}")).await)
            }
            Ok(Err(e @ trustline_proto::Error::FrameLength { .. })) => {
                let stderr = self.kill().await;
                Err(Error::link(
                    LinkFault::Malformed,
                    format!(
                        "the answer to {step} is not a frame ({e}); the command was killed{stderr}"
                    ),
                ))
            }
            Ok(Err(e)) => {
                let stderr = self.kill().await;
                Err(Error::link(
                    LinkFault::Io,
                    format!("reading the answer to {step}: {e}{stderr}"),
                ))
            }
            Err(_) => Err(self.timed_out().await),
        }
    }

    /// Closes stdin (the end of the session) and expects exit status 0.
    pub(super) async fn finish(&mut self, deadline: Instant) -> Result<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        drop(running.stdin.take());
        match timeout_at(deadline, running.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => {
                let stderr = running.stderr.text().await;
                Err(Error::link(
                    LinkFault::Exit,
                    format!("the command ended the session with {status}{stderr}"),
                ))
            }
            Ok(Err(e)) => Err(Error::link(
                LinkFault::Io,
                format!("waiting for the command: {e}"),
            )),
            Err(_) => {
                let _ = running.child.kill().await;
                let stderr = running.stderr.text().await;
                Err(Error::link(
                    LinkFault::Timeout,
                    format!(
                        "the command did not exit within {:?} after its stdin closed; killed{stderr}",
                        self.timeout
                    ),
                ))
            }
        }
    }

    /// Kills and reaps the command, if it runs.
    pub(super) async fn stop(&mut self) {
        let _ = self.kill().await;
    }

    /// Kills and reaps the command; returns its stderr tail.
    async fn kill(&mut self) -> String {
        let Some(mut running) = self.running.take() else {
            return String::new();
        };
        let _ = running.child.kill().await;
        running.stderr.text().await
    }

    async fn timed_out(&mut self) -> Error {
        let stderr = self.kill().await;
        Error::link(
            LinkFault::Timeout,
            format!("the command was killed{stderr}"),
        )
    }

    /// The command closed its stdout: how it ended.
    async fn ended(&mut self, when: &str) -> Error {
        let Some(mut running) = self.running.take() else {
            return Error::link(LinkFault::Exit, format!("the command ended {when}"));
        };
        let status = match timeout(EXIT_GRACE, running.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => format!("an unknown status ({e})"),
            Err(_) => {
                let _ = running.child.kill().await;
                "its stdout closed; killed".into()
            }
        };
        let stderr = running.stderr.text().await;
        Error::link(
            LinkFault::Exit,
            format!("the command ended {when} ({status}){stderr}"),
        )
    }
}

/// Reads one frame like [`trustline_proto::device::read_frame`], from an
/// async stream: `None` at a clean end before a header; the length is
/// checked before the body is allocated.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::result::Result<Option<Vec<u8>>, trustline_proto::Error> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let got = read_full(reader, &mut header).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < FRAME_HEADER_LEN {
        return Err(trustline_proto::Error::FrameTruncated {
            expected: FRAME_HEADER_LEN,
            got,
        });
    }
    let len = frame_len(header)?;
    let mut body = vec![0u8; len];
    let got = read_full(reader, &mut body).await?;
    if got < len {
        return Err(trustline_proto::Error::FrameTruncated { expected: len, got });
    }
    Ok(Some(body))
}

async fn read_full<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> std::result::Result<usize, trustline_proto::Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(trustline_proto::Error::FrameIo(e)),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_splits_into_words_and_each_gets_the_index() {
        let c: ExecCommand =
            "python3 'ref dev/device.py' serve --state /t/dev-{index} --tag {index}{index}"
                .parse()
                .expect("parse");
        assert_eq!(
            c.argv(3),
            [
                "python3",
                "ref dev/device.py",
                "serve",
                "--state",
                "/t/dev-3",
                "--tag",
                "33"
            ]
        );
        assert!("".parse::<ExecCommand>().is_err());
        assert!("prog 'unclosed".parse::<ExecCommand>().is_err());
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_a_bad_length_is_refused_before_allocating() {
        let frame = [0, 0, 0, 2, 0x08, 0x01];
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        let mut r = two.as_slice();
        for _ in 0..2 {
            assert_eq!(
                read_frame(&mut r).await.expect("frame"),
                Some(vec![0x08, 0x01])
            );
        }
        assert_eq!(read_frame(&mut r).await.expect("end"), None);
        let mut bad: &[u8] = &[0xde, 0xad, 0xbe, 0xef, 0];
        assert!(matches!(
            read_frame(&mut bad).await,
            Err(trustline_proto::Error::FrameLength { .. })
        ));
        let mut cut: &[u8] = &frame[..5];
        assert!(matches!(
            read_frame(&mut cut).await,
            Err(trustline_proto::Error::FrameTruncated { .. })
        ));
    }
}
