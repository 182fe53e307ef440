//! Limits on what one caller can make a server do: message sizes,
//! connections, concurrent calls and call rate per caller, and deadlines
//! (2.4.13.30, 2.4.14.21).
//!
//! Refusals are `RESOURCE_EXHAUSTED` (rate, concurrency), `OUT_OF_RANGE`
//! (tonic's answer to an oversized message, before the handler runs) and
//! `DEADLINE_EXCEEDED` (the call outlived `min(grpc-timeout, max_deadline)`).
//! The guard layer applies the per-call limits; [`MessageLimits`] applies the
//! size limits to each generated server, since tonic enforces them while
//! decoding, inside the generated code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::identity::Role;
use crate::lockout::LockoutPolicy;

/// Every limit, with defaults sized for a factory line (a station makes a
/// handful of calls per device; 2 vCPU serve about 20k small RPCs/s).
/// Read from the `[transport]` table of `trustline.toml`; every field is
/// optional there.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request message a server decodes, in bytes. The largest
    /// legitimate requests (attestation chains, CSRs, vouchers) are a few KiB.
    pub max_decode_bytes: usize,
    /// Largest response message a server encodes, in bytes.
    pub max_encode_bytes: usize,
    /// Open connections a server accepts at once; the next waits in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// HTTP/2 streams (concurrent calls) per connection.
    pub max_streams_per_connection: u32,
    /// Calls one caller may have in flight at once, over all its connections.
    pub max_concurrent_per_caller: u32,
    /// Call rate per caller (token bucket); each step of a line stream counts
    /// as one call.
    pub rate: RateLimit,
    /// Steps one line stream runs at once (`Provisioning/Line`); one more is
    /// refused `RESOURCE_EXHAUSTED` (`stream-full`) for its device alone.
    /// Sent to the station in the `trustline-line-in-flight` response
    /// header, so that it waits instead of being refused.
    pub max_in_flight_per_stream: u32,
    /// Roles exempt from the rate limit. By default the provisioner, whose
    /// calls to the CA and the ledger are driven by stations that are
    /// themselves rate-limited.
    pub unlimited_roles: Vec<Role>,
    /// The longest any call may run, in milliseconds; a shorter `grpc-timeout`
    /// from the client is honoured.
    pub max_deadline_ms: u64,
    /// Time allowed for a TLS handshake, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// When repeated refusals lock a caller out.
    pub lockout: LockoutPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_decode_bytes: 256 * 1024,
            max_encode_bytes: 4 * 1024 * 1024,
            max_connections: 1024,
            max_streams_per_connection: 64,
            max_concurrent_per_caller: 32,
            rate: RateLimit {
                per_second: 200.0,
                burst: 400,
            },
            max_in_flight_per_stream: 256,
            unlimited_roles: vec![Role::Provisioner],
            max_deadline_ms: 30_000,
            handshake_timeout_ms: 10_000,
            lockout: LockoutPolicy::default(),
        }
    }
}

impl Limits {
    /// [`Limits::max_deadline_ms`] as a duration.
    pub fn max_deadline(&self) -> Duration {
        Duration::from_millis(self.max_deadline_ms)
    }

    /// [`Limits::handshake_timeout_ms`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// A token bucket: `burst` calls at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained calls per second.
    pub per_second: f64,
    /// Calls allowed in a burst (the bucket size).
    pub burst: u32,
}

/// Applies [`Limits::max_decode_bytes`] and [`Limits::max_encode_bytes`] to a
/// generated tonic server. Every service served by Trustline goes through
/// this: `routes.add_service(CaServer::new(svc).with_message_limits(&limits))`.
pub trait MessageLimits: Sized {
    /// The server with both message size limits set.
    #[must_use]
    fn with_message_limits(self, limits: &Limits) -> Self;
}

macro_rules! message_limits {
    ($($server:ident)::+) => {
        impl<T> MessageLimits for $($server)::+<T> {
            fn with_message_limits(self, limits: &Limits) -> Self {
                self.max_decoding_message_size(limits.max_decode_bytes)
                    .max_encoding_message_size(limits.max_encode_bytes)
            }
        }
    };
}

message_limits!(trustline_proto::v1::certificate_authority_server::CertificateAuthorityServer);
message_limits!(trustline_proto::v1::custody_ledger_server::CustodyLedgerServer);
message_limits!(trustline_proto::v1::provisioning_server::ProvisioningServer);
message_limits!(trustline_proto::v1::ownership_server::OwnershipServer);
message_limits!(trustline_proto::v1::admin_server::AdminServer);
message_limits!(tonic_health::pb::health_server::HealthServer);
message_limits!(tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer);
message_limits!(tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer);

/// Past this many tracked callers, idle entries are dropped.
const PRUNE_AT: usize = 4096;

/// Per-caller token buckets.
///
/// A std `Mutex`, not a tokio one: the critical section is a few arithmetic
/// operations and never awaits.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`.
    ///
    /// # Errors
    /// How long until a token is available, when none is now.
    pub(crate) fn try_acquire(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst.max(1));
        let rate = self.limit.per_second.max(f64::MIN_POSITIVE);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(key) {
            // A bucket that has refilled completely is the same as a new one.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// Per-caller caps on calls in flight.
#[derive(Debug)]
pub(crate) struct ConcurrencyLimiter {
    per_caller: usize,
    callers: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl ConcurrencyLimiter {
    pub(crate) fn new(per_caller: u32) -> Self {
        Self {
            per_caller: usize::try_from(per_caller.max(1)).unwrap_or(usize::MAX),
            callers: Mutex::new(HashMap::new()),
        }
    }

    /// A permit for one call by `key`, held until the call's response ends;
    /// `None` when the caller already has its maximum in flight.
    pub(crate) fn try_acquire(&self, key: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
            if callers.len() >= PRUNE_AT && !callers.contains_key(key) {
                // Nobody holds a permit of an idle caller's semaphore.
                callers.retain(|_, s| Arc::strong_count(s) > 1);
            }
            callers
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_caller)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// Parses a `grpc-timeout` header value (gRPC over HTTP/2: at most 8 digits
/// and a unit `H`, `M`, `S`, `m`, `u` or `n`). `None` when malformed.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
