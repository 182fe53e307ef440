//! The guard's half of a call on the way back: when the response ends, its
//! final `grpc-status` (headers or trailers) is counted in the metrics,
//! logged, and counted towards a lockout when it is a refusal; a response
//! stream that outlives the call's deadline is cut with `DEADLINE_EXCEEDED`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tonic::body::Body;
use tonic::{Code, Status};

use crate::identity::Caller;
use crate::lockout::counts_as_refusal;
use crate::metrics::code_name;

use super::*;

/// Everything to do when a call's response ends; dropping it releases the
/// caller's concurrency permit.
pub(super) struct Completion {
    pub(super) guard: Guard,
    pub(super) caller: Caller,
    pub(super) method: &'static str,
    pub(super) start: Instant,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Completion {
    pub(super) fn finish(self, code: Code, message: &str) {
        self.guard
            .call_finished(&self.caller, self.method, self.start, code, message);
    }
}

impl Guard {
    /// What happens when a call (or one step of a line stream) ends with
    /// `code`: metrics, the log line, and the lockout count of a refusal.
    pub(super) fn call_finished(
        &self,
        caller: &Caller,
        method: &'static str,
        start: Instant,
        code: Code,
        message: &str,
    ) {
        self.shared
            .metrics
            .rpc_finished(method, code, start.elapsed());
        if counts_as_refusal(code) {
            tracing::warn!(
                target: LOCKOUT_TARGET,
                caller = %caller,
                role = %caller.role(),
                method,
                code = code_name(code),
                "request refused by the service"
            );
            self.count_refusal(caller, method, code, message);
        } else {
            tracing::debug!(
                caller = %caller,
                role = %caller.role(),
                method,
                code = code_name(code),
                elapsed_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                "rpc"
            );
        }
    }
}

/// A response body that reports the final status when it ends and cuts the
/// stream with `DEADLINE_EXCEEDED` if it outlives the call's deadline.
pub(super) struct ObservedBody {
    pub(super) inner: Body,
    pub(super) completion: Option<Completion>,
    /// `None` for a line stream, whose steps have their own deadline.
    pub(super) deadline: Option<Pin<Box<Sleep>>>,
    pub(super) budget: Duration,
    pub(super) ended: bool,
}

impl ObservedBody {
    pub(super) fn finish(&mut self, code: Code, message: &str) {
        if let Some(completion) = self.completion.take() {
            completion.finish(code, message);
        }
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let (code, message) = Status::from_header_map(trailers).map_or_else(
                        || (Code::Unknown, String::from("trailers without grpc-status")),
                        |s| (s.code(), s.message().to_owned()),
                    );
                    this.finish(code, &message);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(status))) => {
                this.finish(status.code(), status.message());
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.finish(Code::Unknown, "response ended without a status");
                Poll::Ready(None)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if this.completion.is_some() && expired {
                    let status = deadline_status(this.budget);
                    let mut trailers = http::HeaderMap::new();
                    // The status holds only ASCII we wrote: encoding it cannot fail.
                    let _ = status.add_header(&mut trailers);
                    this.finish(status.code(), status.message());
                    this.ended = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish(Code::Cancelled, "response dropped before it ended");
    }
}
