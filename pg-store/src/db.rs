//! Connections and retries.
//!
//! Key design decision: every database call goes through [`retry`], which
//! tells the errors worth another attempt (serialization failures, SQLSTATE
//! 40001, and deadlocks, which the serializable-only engines raise in normal
//! operation; a unique-key backstop firing under a race; lost or refused
//! connections) from the ones that are final, and retries the former with
//! bounded, jittered exponential backoff on a fresh connection. When the
//! attempts run out the caller gets [`Fault::Unavailable`], mapped to
//! `UNAVAILABLE`; the pool drops broken connections and makes new ones,
//! so service resumes by itself once the server is back.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use crate::error::{Error, Result};

/// How hard [`retry`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts of one operation.
    pub attempts: u32,
    /// The first backoff; each next one doubles, up to `max_delay`.
    pub first_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Eight attempts over about three seconds.
    fn default() -> Self {
        Self {
            attempts: 8,
            first_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// What went wrong in one attempt of an operation given to [`retry`].
#[derive(Debug)]
pub enum Fault {
    /// A database error (classified by [`classify`]).
    Db(tokio_postgres::Error),
    /// No connection could be had.
    Pool(PoolError),
    /// A final answer that is not the database's fault (corrupt data, a
    /// refusal, a signer failure): returned at once.
    Final(custody_ledger::Error),
}

impl From<tokio_postgres::Error> for Fault {
    fn from(e: tokio_postgres::Error) -> Self {
        Fault::Db(e)
    }
}

impl From<PoolError> for Fault {
    fn from(e: PoolError) -> Self {
        Fault::Pool(e)
    }
}

impl From<custody_ledger::Error> for Fault {
    fn from(e: custody_ledger::Error) -> Self {
        Fault::Final(e)
    }
}

/// Whether another attempt may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Try again (transient: serialization, deadlock, a lost connection,
    /// the server starting or stopping).
    Transient,
    /// Give up now.
    Permanent,
}

/// Classifies a database error.
pub(crate) fn classify(e: &tokio_postgres::Error) -> Class {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection failed, closed or timed out.
        return Class::Transient;
    };
    let transient = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::UNIQUE_VIOLATION,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::QUERY_CANCELED,
    ];
    if transient.contains(code) || code.code().starts_with("08") {
        Class::Transient
    } else {
        Class::Permanent
    }
}

/// Describes a database error with the server's message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    // Up to a quarter more, so racing replicas spread out.
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// Backoff between the attempts of one operation.
#[derive(Debug)]
pub(crate) struct Backoff<'a> {
    policy: RetryPolicy,
    what: &'a str,
    attempt: u32,
    delay: Duration,
}

impl<'a> Backoff<'a> {
    /// The backoff of an operation named `what`.
    pub(crate) fn new(policy: RetryPolicy, what: &'a str) -> Self {
        Self {
            policy,
            what,
            attempt: 1,
            delay: policy.first_delay,
        }
    }

    /// After a failed attempt: the final error when `fault` is final or
    /// the attempts are used up, else waits and returns `Ok` for the next
    /// attempt.
    pub(crate) async fn failed(&mut self, fault: Fault) -> custody_ledger::Result<()> {
        let last = match fault {
            Fault::Final(e) => return Err(e),
            Fault::Db(e) if classify(&e) == Class::Permanent => {
                return Err(custody_ledger::Error::Io {
                    context: format!("{}: the database refused", self.what),
                    source: std::io::Error::other(describe(&e)),
                });
            }
            Fault::Db(e) => describe(&e),
            Fault::Pool(e) => pool_error(&e),
        };
        if self.attempt >= self.policy.attempts.max(1) {
            return Err(custody_ledger::Error::Unavailable(format!(
                "{}: {last} (gave up after {} attempts)",
                self.what, self.attempt
            )));
        }
        tracing::debug!(what = self.what, attempt = self.attempt, error = %last, "retrying");
        tokio::time::sleep(jitter(self.delay)).await;
        self.delay = (self.delay * 2).min(self.policy.max_delay);
        self.attempt += 1;
        Ok(())
    }
}

/// Runs `op` until it succeeds, fails for good, or the policy's attempts run
/// out. `what` names the operation in errors.
pub async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut op: F,
) -> custody_ledger::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, Fault>>,
{
    let mut backoff = Backoff::new(policy, what);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(f) => backoff.failed(f).await?,
        }
    }
}

fn pool_error(e: &PoolError) -> String {
    match e {
        PoolError::Backend(b) => describe(b),
        other => other.to_string(),
    }
}

/// A connection pool on `url` (a `postgres://` URL or a key=value
/// connection string) of at most `size` connections. Each connection sets
/// `synchronous_commit = on`, so a commit returns only once its WAL is on
/// disk (and on synchronous standbys, if any are configured).
///
/// # Errors
/// [`Error::Config`] for an unparsable connection string.
pub fn pool(url: &str, size: usize) -> Result<Pool> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::Config(format!("{}: {e}", redact(url))))?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(3));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("trustline");
    }
    cfg.options("-c synchronous_commit=on");
    cfg.keepalives_idle(Duration::from_secs(15));
    let manager = Manager::from_config(
        cfg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(3)))
        .recycle_timeout(Some(Duration::from_secs(3)))
        .build()
        .map_err(|e| Error::Config(format!("connection pool: {e}")))
}

/// The connection string without its password, for messages.
pub fn redact(url: &str) -> String {
    // postgres://user:password@host/... -> postgres://user:***@host/...
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let (cred, host) = rest.split_at(at);
            if let Some(colon) = cred.find(':') {
                return format!("{scheme}{}:***{host}", &cred[..colon]);
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `s` names a PostgreSQL database rather than a directory.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/ledger"),
            "postgres://app:***@db:5432/ledger"
        );
        assert_eq!(
            redact("postgres://app@db/ledger"),
            "postgres://app@db/ledger"
        );
        assert_eq!(
            redact("host=db password=s3cret dbname=x"),
            "host=db password=*** dbname=x"
        );
        assert!(is_postgres_url("postgresql://x/y"));
        assert!(!is_postgres_url("/var/lib/trustline/ledger"));
    }
}
