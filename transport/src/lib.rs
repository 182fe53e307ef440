//! Everything between a socket and a Trustline service.
//!
//! Key design decision: the caller's role and site come only from its
//! verified client certificate, and one table of role × RPC decides every
//! call (2.4.13.9, 2.4.13.25, 2.4.13.30, 2.4.16.5).

#![forbid(unsafe_code)]
