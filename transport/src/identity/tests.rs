//! Unit tests for caller URIs, site scoping and in-process authorization.

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

const GET_ORDER: &str = "/trustline.v1.Provisioning/GetOrder";

#[test]
fn site_scope_binds_stations_only() {
    let st = Caller::new(Role::Station, "site-a", "st-01").unwrap();
    let scope = authz::authorize(&st, GET_ORDER).unwrap().scope();
    assert!(scope.check("site-a").is_ok());
    let err = tonic::Status::from(scope.check("site-b").unwrap_err());
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("site-b"), "{}", err.message());
    let admin = Caller::new(Role::Admin, "hq", "alice").unwrap();
    let scope = authz::authorize(&admin, GET_ORDER).unwrap().scope();
    assert!(scope.check("site-b").is_ok());
    // A station calling a rule that is not site-scoped is not bound.
    let health = authz::authorize(&st, "/grpc.health.v1.Health/Check").unwrap();
    assert_eq!(health.scope(), authz::SiteScope::Any);
}

#[test]
fn missing_caller_is_unauthenticated() {
    let req = tonic::Request::new(());
    assert_eq!(
        caller(&req).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        authorized(&req).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    // A bare Caller in the extensions is not an authorization.
    let c = Caller::new(Role::Provisioner, "hq", "prov").unwrap();
    let mut bare = tonic::Request::new(());
    bare.extensions_mut().insert(c.clone());
    assert_eq!(
        caller(&bare).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let req = internal_request((), &c, "/trustline.v1.CustodyLedger/Append").unwrap();
    assert_eq!(caller(&req).unwrap(), &c);
}

#[test]
fn in_process_requests_pass_the_same_table() {
    let st = Caller::new(Role::Station, "site-a", "st-01").unwrap();
    let err = internal_request((), &st, "/trustline.v1.CertificateAuthority/SignCrl").unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = internal_request((), &st, "/trustline.v1.Nope/Nope").unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let req = internal_request((), &st, GET_ORDER).unwrap();
    assert_eq!(
        authorized(&req).unwrap().scope(),
        authz::SiteScope::Site("site-a".into())
    );
}
