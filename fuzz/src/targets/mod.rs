//! The harnesses, grouped by the crate whose decoders they drive.

pub mod ca;
pub mod factory;
pub mod ledger;
pub mod statements;
pub mod station;
pub mod transport;
pub mod voucher;

use trustline_proto::signer::Signer;
use trustline_proto::statement::{self, Statement};
use trustline_proto::v1;

/// `body` signed by `signer` as a statement of type `S`, whatever the bytes
/// are: how a harness gets arbitrary bodies past the signature check.
pub fn sign_body<S: Statement>(signer: &dyn Signer, body: &[u8]) -> v1::SignedStatement {
    let signature = signer
        .sign(&statement::signing_input(S::DOMAIN, body))
        .expect("a software key always signs");
    v1::SignedStatement {
        body: body.to_vec(),
        signature,
    }
}
