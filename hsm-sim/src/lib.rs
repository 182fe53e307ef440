//! Simulated secure hardware for tests and the demo — never the production
//! path.
//!
//! Two halves: a SoftHSM2 token lifecycle (a token in a directory of its own,
//! initialised over PKCS#11), and simulated device roots of trust with their
//! IC vendors, including adversarial fleets (clones, counterfeits, replays).

#![forbid(unsafe_code)]
