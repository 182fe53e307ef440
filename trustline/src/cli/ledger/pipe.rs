//! Standard output for the `ledger` subcommands ([`QuietPipe`]): one lock
//! for the whole command, and a reader that goes away early is not an
//! error.

use std::io::{self, Write};

/// Standard output as the `ledger` subcommands write it: one lock for the
/// whole command, and a reader that goes away early (`… | head`) is not an
/// error. The first `BrokenPipe` closes the writer quietly: the rest of the
/// output is discarded and the command ends with its own outcome (the
/// verification it already did still decides the exit code). Every other
/// write error is returned.
pub(crate) struct QuietPipe<W: Write> {
    inner: W,
    closed: bool,
}

impl<W: Write> QuietPipe<W> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            closed: false,
        }
    }

    /// Whether the reader went away.
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    fn quiet<T>(&mut self, r: io::Result<T>, discarded: T) -> io::Result<T> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(discarded)
            }
            other => other,
        }
    }
}

impl<W: Write> Write for QuietPipe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let r = self.inner.write(buf);
        self.quiet(r, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.quiet(r, ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    /// A reader that has gone away after `room` bytes.
    struct ClosedAfter {
        room: usize,
        got: Vec<u8>,
        kind: io::ErrorKind,
    }

    impl Write for ClosedAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from(self.kind));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            if self.room == 0 {
                return Err(io::Error::from(self.kind));
            }
            Ok(())
        }
    }

    #[test]
    fn a_broken_pipe_ends_the_output_quietly() {
        let mut out = QuietPipe::new(ClosedAfter {
            room: 10,
            got: Vec::new(),
            kind: io::ErrorKind::BrokenPipe,
        });
        for i in 0..100 {
            writeln!(out, "line {i}").unwrap();
        }
        out.flush().unwrap();
        assert!(out.is_closed());
        assert_eq!(out.inner.got, b"line 0\nlin");
    }

    #[test]
    fn other_write_errors_are_reported() {
        let mut out = QuietPipe::new(ClosedAfter {
            room: 0,
            got: Vec::new(),
            kind: io::ErrorKind::StorageFull,
        });
        let err = writeln!(out, "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(!out.is_closed());
    }
}
