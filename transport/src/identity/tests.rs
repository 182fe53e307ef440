//! Unit tests for caller URIs and site scoping.

#![allow(clippy::unwrap_used)] // Tests may unwrap (ARCHITECTURE.md).

use super::*;

#[test]
fn caller_uri_round_trips() {
    let c = Caller::new(Role::Station, "site-a", "st-01").unwrap();
    assert_eq!(c.to_uri(), "urn:trustline:caller:station:site-a:st-01");
    assert_eq!(c.id(), "station/site-a/st-01");
    assert_eq!(Caller::from_uri(&c.to_uri()).unwrap(), c);
}

#[test]
fn malformed_caller_uris_are_refused() {
    for bad in [
        "urn:trustline:caller:station:site-a",
        "urn:trustline:caller:station:site-a:st-01:extra",
        "urn:trustline:caller:root:site-a:st-01",
        "urn:trustline:caller:station::st-01",
        "urn:trustline:caller:station:site/a:st-01",
        "urn:trustline:caller:station:-site:st-01",
        "urn:other:station:site-a:st-01",
    ] {
        assert!(Caller::from_uri(bad).is_err(), "{bad} was accepted");
    }
    let long = "a".repeat(65);
    assert!(Caller::new(Role::Admin, "hq", &long).is_err());
}

#[test]
fn require_site_scopes_stations_only() {
    let st = Caller::new(Role::Station, "site-a", "st-01").unwrap();
    assert!(require_site(&st, "site-a").is_ok());
    let err = require_site(&st, "site-b").unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("site-b"), "{}", err.message());
    let admin = Caller::new(Role::Admin, "hq", "alice").unwrap();
    assert!(require_site(&admin, "site-b").is_ok());
}

#[test]
fn missing_caller_is_unauthenticated() {
    let req = tonic::Request::new(());
    assert_eq!(
        caller(&req).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let c = Caller::new(Role::Provisioner, "hq", "prov").unwrap();
    let req = internal_request((), c.clone());
    assert_eq!(caller(&req).unwrap(), &c);
}
