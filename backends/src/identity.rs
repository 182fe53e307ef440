//! The identity in-process calls are made with, and the method paths they
//! are authorized for.
//!
//! Over the network the transport guard authorizes every call from the
//! caller's certificate and the role × RPC table. In-process calls (the
//! provisioner calling the CA and the ledger inside `trustline serve all`)
//! are authorized by the same table: [`RequestIdentity::request`] goes
//! through [`transport::internal_request`], which runs
//! [`transport::authorize`] with the method's path, so a back end can only
//! do in-process what the provisioner's certificate could do over mTLS.

use tonic::{Request, Status};

/// The fully-qualified gRPC paths of the methods the back ends call
/// in-process (each must have a row in `transport::authz`; a unit test
/// checks that the provisioner role may call every one).
pub mod methods {
    /// `CertificateAuthority/IssueDeviceCertificate`.
    pub const CA_ISSUE: &str = "/trustline.v1.CertificateAuthority/IssueDeviceCertificate";
    /// `CertificateAuthority/GenerateWrappedKey`.
    pub const CA_GENERATE_WRAPPED_KEY: &str =
        "/trustline.v1.CertificateAuthority/GenerateWrappedKey";
    /// `CertificateAuthority/GetChain`.
    pub const CA_GET_CHAIN: &str = "/trustline.v1.CertificateAuthority/GetChain";
    /// `CertificateAuthority/SignVoucherEntry`.
    pub const CA_SIGN_VOUCHER_ENTRY: &str = "/trustline.v1.CertificateAuthority/SignVoucherEntry";
    /// `CertificateAuthority/UnsealVoucherEntry`.
    pub const CA_UNSEAL_VOUCHER_ENTRY: &str =
        "/trustline.v1.CertificateAuthority/UnsealVoucherEntry";
    /// `CertificateAuthority/SignCrl`.
    pub const CA_SIGN_CRL: &str = "/trustline.v1.CertificateAuthority/SignCrl";
    /// `CustodyLedger/Append`.
    pub const LEDGER_APPEND: &str = "/trustline.v1.CustodyLedger/Append";
    /// `CustodyLedger/LookupKey`.
    pub const LEDGER_LOOKUP_KEY: &str = "/trustline.v1.CustodyLedger/LookupKey";
    /// `CustodyLedger/GetEntry`.
    pub const LEDGER_GET_ENTRY: &str = "/trustline.v1.CustodyLedger/GetEntry";
    /// `CustodyLedger/GetQuota`.
    pub const LEDGER_GET_QUOTA: &str = "/trustline.v1.CustodyLedger/GetQuota";
    /// `CustodyLedger/PublishCheckpoint`.
    pub const LEDGER_PUBLISH_CHECKPOINT: &str = "/trustline.v1.CustodyLedger/PublishCheckpoint";
    /// `CustodyLedger/GetDeviceHistory`.
    pub const LEDGER_DEVICE_HISTORY: &str = "/trustline.v1.CustodyLedger/GetDeviceHistory";
    /// `CustodyLedger/GetCheckpoint`.
    pub const LEDGER_GET_CHECKPOINT: &str = "/trustline.v1.CustodyLedger/GetCheckpoint";
    /// `CustodyLedger/GetLedgerKey`.
    pub const LEDGER_GET_LEDGER_KEY: &str = "/trustline.v1.CustodyLedger/GetLedgerKey";

    /// Every path above.
    pub const ALL: &[&str] = &[
        CA_ISSUE,
        CA_GENERATE_WRAPPED_KEY,
        CA_GET_CHAIN,
        CA_SIGN_VOUCHER_ENTRY,
        CA_UNSEAL_VOUCHER_ENTRY,
        CA_SIGN_CRL,
        LEDGER_APPEND,
        LEDGER_LOOKUP_KEY,
        LEDGER_GET_ENTRY,
        LEDGER_GET_QUOTA,
        LEDGER_PUBLISH_CHECKPOINT,
        LEDGER_DEVICE_HISTORY,
        LEDGER_GET_CHECKPOINT,
        LEDGER_GET_LEDGER_KEY,
    ];
}

/// The caller the in-process services see (the provisioner's own identity),
/// authorized per call by the role table.
#[derive(Debug, Clone)]
pub struct RequestIdentity(transport::Caller);

impl RequestIdentity {
    /// Calls made as `caller`.
    pub fn new(caller: transport::Caller) -> Self {
        Self(caller)
    }

    /// The caller.
    pub fn caller(&self) -> &transport::Caller {
        &self.0
    }

    /// A request for `method` carrying the authorized caller.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` when the role table does not let this caller
    /// call `method` (never sent: the service is not called).
    pub fn request<T>(&self, message: T, method: &str) -> Result<Request<T>, Status> {
        transport::internal_request(message, &self.0, method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provisioner_may_call_every_in_process_method_and_others_may_not() {
        let provisioner = RequestIdentity::new(
            transport::Caller::new(transport::Role::Provisioner, "hq", "p").expect("caller"),
        );
        let station = RequestIdentity::new(
            transport::Caller::new(transport::Role::Station, "site-a", "s").expect("caller"),
        );
        for method in methods::ALL {
            let request = provisioner.request((), method).expect(method);
            let authorized = transport::authorized(&request).expect("authorized");
            assert_eq!(authorized.rule().method, *method);
            let refused = station.request((), method).expect_err(method);
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{method}");
        }
        let unknown = provisioner
            .request((), "/trustline.v1.CertificateAuthority/Nope")
            .expect_err("unknown method");
        assert_eq!(unknown.code(), tonic::Code::PermissionDenied);
    }
}
