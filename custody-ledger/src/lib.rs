//! The custody ledger: append-only, hash-chained, Merkle-proven, signed.
//!
//! Key design decision: append-only segment files written by one
//! group-commit writer are the source of truth; sled holds only what can be
//! rebuilt from them. This crate knows nothing about X.509, PKCS#11 or
//! production policy (2.4.14.3, 2.4.14.4, 2.4.14.12, 2.4.14.22).

#![forbid(unsafe_code)]
