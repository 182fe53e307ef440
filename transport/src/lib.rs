//! Everything between a socket and a Trustline service.
//!
//! Key design decision: the caller's role and site come only from its
//! verified client certificate, and one table of role × RPC decides every
//! call (2.4.13.9, 2.4.13.25, 2.4.13.30, 2.4.16.5).
//!
//! How a binary serves a set of services:
//!
//! ```no_run
//! # async fn run() -> Result<(), transport::Error> {
//! use transport::{CredentialPaths, Guard, Limits, Metrics, ServerTls};
//! transport::install_crypto_provider();
//! let guard = Guard::new(Limits::default(), Metrics::global().clone());
//! let (mut routes, _health) = transport::operational_routes(&guard)?;
//! // routes.add_service(CaServer::new(ca).with_message_limits(guard.limits()));
//! let tls = ServerTls::from_files(&CredentialPaths::in_dir("pki".as_ref(), "ca-server"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7443")
//!     .await
//!     .map_err(|e| transport::Error::Listener(e.to_string()))?;
//! transport::serve(routes.routes(), listener, tls, guard, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! A handler gets its already authorized caller with [`authorized`] and
//! scopes site-bound work with [`Authorized::scope`]; a client connects with
//! [`ClientTls::connect`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod authz;
mod error;
pub mod guard;
pub mod identity;
pub mod limits;
pub mod lockout;
pub mod metrics;
pub mod ops;
pub mod pki;
pub mod revocation;
mod server;
pub mod tls;

pub use admin::AdminService;
pub use authz::{authorize, Authorized, OtherSite, Rule, SiteScope};
pub use error::Error;
pub use guard::{Guard, GuardService, InProcessChannel, Step, StepRefusal, StreamSteps};
pub use identity::{authorized, caller, internal_request, Caller, Role, ServerIdentity};
pub use limits::{Limits, MessageLimits, RateLimit};
pub use lockout::{LockoutPolicy, LockoutTracker};
pub use metrics::{serve_metrics, Metrics, UplinkMetrics};
pub use ops::{health_service, operational_routes};
pub use revocation::Revocations;
pub use server::serve;
pub use tls::{install_crypto_provider, ClientTls, CredentialPaths, ServerTls};
