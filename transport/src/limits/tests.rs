//! Unit tests for the token bucket, the per-caller concurrency cap and the
//! `grpc-timeout` parser.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use super::*;

#[test]
fn token_bucket_allows_a_burst_then_refills() {
    let limiter = RateLimiter::new(RateLimit {
        per_second: 10.0,
        burst: 3,
    });
    let t0 = Instant::now();
    for _ in 0..3 {
        assert!(limiter.try_acquire("station/a/1", t0).is_ok());
    }
    let wait = limiter.try_acquire("station/a/1", t0).unwrap_err();
    assert!(wait <= Duration::from_millis(100), "{wait:?}");
    // Another caller has its own bucket.
    assert!(limiter.try_acquire("station/a/2", t0).is_ok());
    // 100 ms later one token is back.
    let t1 = t0 + Duration::from_millis(100);
    assert!(limiter.try_acquire("station/a/1", t1).is_ok());
    assert!(limiter.try_acquire("station/a/1", t1).is_err());
}

#[test]
fn concurrency_cap_is_per_caller_and_released_on_drop() {
    let limiter = ConcurrencyLimiter::new(2);
    let a = limiter.try_acquire("x").unwrap();
    let _b = limiter.try_acquire("x").unwrap();
    assert!(limiter.try_acquire("x").is_none());
    assert!(limiter.try_acquire("y").is_some());
    drop(a);
    assert!(limiter.try_acquire("x").is_some());
}

#[test]
fn grpc_timeout_parses_every_unit_and_refuses_junk() {
    assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
    assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
    assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
    assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
    assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
    for bad in ["", "S", "123456789S", "12x", "-1S", "1.5S", "1é"] {
        assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
    }
}

#[test]
fn limits_deserialize_with_defaults() {
    let limits: Limits = serde_json::from_str(r#"{"max_decode_bytes": 1024}"#).unwrap();
    assert_eq!(limits.max_decode_bytes, 1024);
    assert_eq!(limits.max_encode_bytes, Limits::default().max_encode_bytes);
    assert!(serde_json::from_str::<Limits>(r#"{"max_decode_byte": 1}"#).is_err());
}
