//! Helpers for the end-to-end tests: start real services on loopback with a
//! real SoftHSM2 token and real ledger files, and talk to them as clients do.

#![forbid(unsafe_code)]
