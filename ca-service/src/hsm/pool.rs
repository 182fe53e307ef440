//! A fixed-size pool of logged-in PKCS#11 sessions with exclusive checkout.
//!
//! cryptoki's `Session` is `Send` but not `Sync`: one session serves one
//! thread at a time, so callers check a session out, use it, and the lease
//! returns it on drop. The pool is sized by configuration because real HSMs
//! cap sessions; when every session is busy a caller waits (bounded by the
//! checkout timeout) instead of opening more. A std `Mutex` + `Condvar` is
//! used, not a tokio one: every HSM call is blocking and runs on a blocking
//! thread, never on the async runtime.
//!
//! Login is per process and per token, shared by every session. A session
//! the token reports closed or invalid is discarded and replaced; a session
//! that lost its login (HSM reset) is logged in again — each at most once
//! per operation, so a dead HSM gives a clear error instead of a retry loop.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::RvError;
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::Error;

/// A failure inside an operation run on a pooled session: either a raw
/// PKCS#11 error (which the pool may recover from by replacing the session
/// or logging in again) or an already precise CA error.
#[derive(Debug)]
pub(crate) enum Fault {
    /// A PKCS#11 call failed; names the call.
    P11(&'static str, cryptoki::error::Error),
    /// A precise error that needs no recovery attempt.
    Ca(Error),
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        Fault::Ca(e)
    }
}

/// Adds the PKCS#11 function name to a cryptoki result.
pub(crate) trait P11Context<T> {
    /// Tags an error with the PKCS#11 call that failed.
    fn p11(self, call: &'static str) -> Result<T, Fault>;
}

impl<T> P11Context<T> for cryptoki::error::Result<T> {
    fn p11(self, call: &'static str) -> Result<T, Fault> {
        self.map_err(|e| Fault::P11(call, e))
    }
}

/// The PKCS#11 return value inside a cryptoki error, if any.
pub(crate) fn rv(e: &cryptoki::error::Error) -> Option<RvError> {
    match e {
        cryptoki::error::Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Maps a PKCS#11 failure to the crate's error.
pub(crate) fn map_p11(call: &'static str, token: &str, e: &cryptoki::error::Error) -> Error {
    let reason = e.to_string();
    match rv(e) {
        Some(RvError::PinIncorrect) => Error::WrongPin {
            label: token.to_owned(),
        },
        Some(RvError::PinLocked) => Error::PinLocked {
            label: token.to_owned(),
        },
        Some(
            RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::UserPinNotInitialized
            | RvError::UserTypeInvalid
            | RvError::UserAnotherAlreadyLoggedIn
            | RvError::UserTooManyTypes,
        ) => Error::Login {
            label: token.to_owned(),
            reason,
        },
        Some(RvError::SessionClosed | RvError::SessionHandleInvalid) => Error::SessionClosed {
            operation: call,
            reason,
        },
        Some(RvError::UserNotLoggedIn) => Error::NotLoggedIn { operation: call },
        Some(RvError::TokenNotPresent | RvError::DeviceRemoved | RvError::TokenNotRecognized) => {
            Error::TokenNotPresent {
                label: token.to_owned(),
            }
        }
        Some(RvError::SessionCount) => Error::SessionLimit { reason },
        Some(
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::FunctionNotSupported
            | RvError::CurveNotSupported,
        ) => Error::MechanismUnsupported {
            mechanism: call.to_owned(),
            reason,
        },
        _ => Error::Pkcs11 {
            operation: call,
            reason,
        },
    }
}

struct State {
    idle: Vec<Session>,
    open: usize,
}

/// The session pool of one token.
pub(crate) struct Pool {
    ctx: Pkcs11,
    slot: Slot,
    token: String,
    pin: AuthPin,
    size: usize,
    timeout: Duration,
    state: Mutex<State>,
    returned: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("token", &self.token)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A session checked out of the pool; returned on drop.
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    session: Option<Session>,
}

impl Lease<'_> {
    /// The session.
    pub(crate) fn session(&self) -> &Session {
        // Only `discard` (which consumes the lease) takes the session out.
        match &self.session {
            Some(s) => s,
            None => unreachable!("a lease always holds its session until dropped"),
        }
    }

    /// Closes the session instead of returning it (it is broken); the pool
    /// opens a replacement on demand.
    pub(crate) fn discard(mut self) {
        if let Some(s) = self.session.take() {
            // Closing a session the token already closed fails harmlessly.
            let _ = s.close();
        }
        let mut state = self.pool.lock();
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.pool.returned.notify_one();
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.pool.lock().idle.push(s);
            self.pool.returned.notify_one();
        }
    }
}

impl Pool {
    /// Opens `size` sessions on `slot` and logs the user in.
    ///
    /// # Errors
    /// [`Error::WrongPin`], [`Error::PinLocked`], [`Error::Login`],
    /// [`Error::SessionLimit`] or [`Error::Pkcs11`].
    pub(crate) fn open(
        ctx: Pkcs11,
        slot: Slot,
        token: String,
        pin: AuthPin,
        size: usize,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let pool = Pool {
            ctx,
            slot,
            token,
            pin,
            size: size.max(1),
            timeout,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        };
        let mut sessions = Vec::with_capacity(pool.size);
        for _ in 0..pool.size {
            sessions.push(pool.open_session()?);
        }
        {
            let mut state = pool.lock();
            state.open = sessions.len();
            state.idle = sessions;
        }
        Ok(pool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every
        // critical section is a push, a pop or a counter update.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token's label.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The slot the token is in now.
    pub(crate) fn slot(&self) -> Slot {
        self.slot
    }

    /// The number of sessions.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn open_session(&self) -> Result<Session, Error> {
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| map_p11("C_OpenSession", &self.token, &e))?;
        self.ensure_login(&session)?;
        Ok(session)
    }

    /// Logs the user in unless the token says this application already is.
    fn ensure_login(&self, session: &Session) -> Result<(), Error> {
        let state = session
            .get_session_info()
            .map_err(|e| map_p11("C_GetSessionInfo", &self.token, &e))?
            .session_state();
        if matches!(state, SessionState::RwUser | SessionState::RoUser) {
            return Ok(());
        }
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) => Ok(()),
            Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => Ok(()),
            Err(e) => Err(map_p11("C_Login", &self.token, &e)),
        }
    }

    /// Checks a session out, waiting up to the checkout timeout.
    ///
    /// # Errors
    /// [`Error::PoolExhausted`] after the timeout; an error opening a
    /// replacement session.
    pub(crate) fn checkout(&self) -> Result<Lease<'_>, Error> {
        let deadline = Instant::now() + self.timeout;
        let mut state = self.lock();
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    session: Some(session),
                });
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return match self.open_session() {
                    Ok(session) => Ok(Lease {
                        pool: self,
                        session: Some(session),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::PoolExhausted {
                    size: self.size,
                    waited: self.timeout,
                });
            }
            state = self
                .returned
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Whether the token still considers this application logged in on
    /// `session`; `None` when the session itself is gone.
    fn logged_in(&self, session: &Session) -> Option<bool> {
        let info = session.get_session_info().ok()?;
        Some(matches!(
            info.session_state(),
            SessionState::RwUser | SessionState::RoUser
        ))
    }

    /// Runs `op` on a pooled session. On failure the pool tries one
    /// recovery before reporting: a session the token reports closed is
    /// replaced, and a lost login (HSM reset, another component logging
    /// out) is restored — a lost login can surface as "not logged in", as an
    /// invalid key handle or as a missing private key, so the session's
    /// state is checked rather than the error code.
    ///
    /// # Errors
    /// Whatever `op` fails with, PKCS#11 failures mapped by [`map_p11`].
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut(&Session) -> Result<T, Fault>,
    ) -> Result<T, Error> {
        let mut recovered = false;
        loop {
            let lease = self.checkout()?;
            let failure = match op(lease.session()) {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if !recovered {
                recovered = true;
                let closed = matches!(
                    &failure,
                    Fault::P11(_, e) if matches!(
                        rv(e),
                        Some(RvError::SessionClosed | RvError::SessionHandleInvalid)
                    )
                );
                match self.logged_in(lease.session()) {
                    None => {
                        tracing::warn!(token = %self.token, "HSM session closed; replacing it");
                        lease.discard();
                        continue;
                    }
                    Some(_) if closed => {
                        tracing::warn!(token = %self.token, "HSM session closed; replacing it");
                        lease.discard();
                        continue;
                    }
                    Some(false) => {
                        tracing::warn!(token = %self.token, "HSM login lost; logging in again");
                        match lease.session().login(UserType::User, Some(&self.pin)) {
                            Ok(()) => continue,
                            Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => continue,
                            Err(e) => return Err(map_p11("C_Login", &self.token, &e)),
                        }
                    }
                    Some(true) => {}
                }
            }
            return Err(match failure {
                Fault::Ca(e) => e,
                Fault::P11(call, e) => map_p11(call, &self.token, &e),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    fn p11(rv: RvError) -> cryptoki::error::Error {
        cryptoki::error::Error::Pkcs11(rv, Function::Sign)
    }

    #[test]
    fn a_busy_pool_times_out_and_a_discarded_session_is_replaced() {
        let token = hsm_sim::softhsm::test_token("pool").expect("token");
        let mut config = crate::HsmConfig::new(
            token.label.clone(),
            crate::PinSource::File(token.pin_file.clone()),
        );
        config.module = Some(token.module.clone());
        config.pool_size = 1;
        config.checkout_timeout = Duration::from_millis(50);
        let hsm = crate::Hsm::open(&config).expect("open");
        let held = hsm.pool().checkout().expect("first checkout");
        let err = hsm
            .pool()
            .checkout()
            .err()
            .expect("the second checkout must time out");
        assert!(
            matches!(err, Error::PoolExhausted { size: 1, .. }),
            "{err:?}"
        );
        held.discard();
        let fresh = hsm.pool().checkout().expect("a replacement session");
        assert!(matches!(
            fresh
                .session()
                .get_session_info()
                .expect("info")
                .session_state(),
            SessionState::RwUser
        ));
    }

    #[test]
    fn pkcs11_failures_map_to_precise_variants() {
        let t = "tok";
        assert!(matches!(
            map_p11("C_Login", t, &p11(RvError::PinIncorrect)),
            Error::WrongPin { .. }
        ));
        assert!(matches!(
            map_p11("C_Login", t, &p11(RvError::PinLocked)),
            Error::PinLocked { .. }
        ));
        assert!(matches!(
            map_p11("C_Sign", t, &p11(RvError::SessionHandleInvalid)),
            Error::SessionClosed {
                operation: "C_Sign",
                ..
            }
        ));
        assert!(matches!(
            map_p11("C_Sign", t, &p11(RvError::SessionClosed)),
            Error::SessionClosed { .. }
        ));
        assert!(matches!(
            map_p11("C_Sign", t, &p11(RvError::UserNotLoggedIn)),
            Error::NotLoggedIn { .. }
        ));
        assert!(matches!(
            map_p11("C_Sign", t, &p11(RvError::DeviceRemoved)),
            Error::TokenNotPresent { .. }
        ));
        assert!(matches!(
            map_p11("C_DeriveKey", t, &p11(RvError::MechanismParamInvalid)),
            Error::MechanismUnsupported { .. }
        ));
        assert!(matches!(
            map_p11("C_Sign", t, &p11(RvError::GeneralError)),
            Error::Pkcs11 {
                operation: "C_Sign",
                ..
            }
        ));
    }
}
