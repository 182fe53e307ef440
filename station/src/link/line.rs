//! `station run --link`: the device link of a run, as written on the
//! command line (`sim`, `exec:COMMAND`, `serial:PATH[,BAUD]`), and
//! [`LineLink`], the one type the run drives whichever link was chosen.

use trustline_proto::device::v1 as dv1;
use trustline_proto::v1;

use super::{DeviceLink, ExecCommand, FramedLink, LinkOptions, SerialPath, WrappedKey};
use crate::error::Result;
#[cfg(feature = "sim")]
use crate::sim::SimLink;

/// A `--link` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSpec {
    /// Simulated dies (`sim`; needs the `sim` feature to drive).
    Sim,
    /// `exec:COMMAND`: the command is started per device.
    Exec(ExecCommand),
    /// `serial:PATH[,BAUD]`: a serial port per device.
    Serial(SerialPath),
}

impl std::str::FromStr for LinkSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "sim" {
            Ok(LinkSpec::Sim)
        } else if let Some(command) = s.strip_prefix("exec:") {
            Ok(LinkSpec::Exec(command.parse()?))
        } else if let Some(path) = s.strip_prefix("serial:") {
            Ok(LinkSpec::Serial(path.parse()?))
        } else {
            Err(format!(
                "unknown device link {s:?} (sim, exec:COMMAND or serial:PATH[,BAUD])"
            ))
        }
    }
}

impl std::fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkSpec::Sim => f.write_str("sim"),
            LinkSpec::Exec(c) => write!(f, "exec:{c}"),
            LinkSpec::Serial(p) => write!(f, "serial:{p}"),
        }
    }
}

impl LinkSpec {
    /// The framed link of device `index` (`{index}` substituted), or `None`
    /// for `sim`, whose dies the caller makes.
    pub fn framed(&self, index: usize, options: &LinkOptions) -> Option<FramedLink> {
        match self {
            LinkSpec::Sim => None,
            LinkSpec::Exec(command) => Some(FramedLink::exec(command, index, options.clone())),
            LinkSpec::Serial(path) => {
                Some(FramedLink::serial(path.for_index(index), options.clone()))
            }
        }
    }
}

/// A device on whichever link the run uses.
pub enum LineLink {
    /// A simulated die.
    #[cfg(feature = "sim")]
    Sim(Box<SimLink>),
    /// A device behind the framed protocol (`exec:`, `serial:`).
    Framed(Box<FramedLink>),
}

impl From<FramedLink> for LineLink {
    fn from(link: FramedLink) -> Self {
        LineLink::Framed(Box::new(link))
    }
}

#[cfg(feature = "sim")]
impl From<SimLink> for LineLink {
    fn from(link: SimLink) -> Self {
        LineLink::Sim(Box::new(link))
    }
}

/// Calls the same method on whichever link it is.
macro_rules! each {
    ($self:ident, $link:ident => $call:expr) => {
        match $self {
            #[cfg(feature = "sim")]
            LineLink::Sim($link) => $call,
            LineLink::Framed($link) => $call,
        }
    };
}

impl DeviceLink for LineLink {
    async fn open(&mut self) -> Result<()> {
        each!(self, l => l.open().await)
    }

    async fn status(&mut self) -> Result<dv1::StatusResponse> {
        each!(self, l => l.status().await)
    }

    async fn read_attestation(&mut self) -> Result<v1::RotAttestation> {
        each!(self, l => l.read_attestation().await)
    }

    async fn claim(&mut self, nonce: &[u8], anchor: &[u8]) -> Result<v1::SignedStatement> {
        each!(self, l => l.claim(nonce, anchor).await)
    }

    async fn lock_readout(&mut self) -> Result<()> {
        each!(self, l => l.lock_readout().await)
    }

    async fn generate_key(&mut self, challenge: &[u8]) -> Result<v1::SignedStatement> {
        each!(self, l => l.generate_key(challenge).await)
    }

    async fn install_wrapped_key(
        &mut self,
        key: &WrappedKey,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement> {
        each!(self, l => l.install_wrapped_key(key, challenge).await)
    }

    async fn prove_possession(
        &mut self,
        serial: &str,
        challenge: &[u8],
    ) -> Result<v1::SignedStatement> {
        each!(self, l => l.prove_possession(serial, challenge).await)
    }

    async fn store_certification(&mut self, chain: &[Vec<u8>], voucher: &[u8]) -> Result<Vec<u8>> {
        each!(self, l => l.store_certification(chain, voucher).await)
    }

    async fn fdo_header_hmac(&mut self, ov_header: &[u8]) -> Result<Option<[u8; 32]>> {
        each!(self, l => l.fdo_header_hmac(ov_header).await)
    }

    async fn finish(&mut self) -> Result<()> {
        each!(self, l => l.finish().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_links_parse_and_print_back() {
        for text in [
            "sim",
            "exec:python3 device.py serve --state 'dir/dev-{index}'",
            "serial:/dev/ttyACM0,115200",
        ] {
            let spec: LinkSpec = text.parse().expect(text);
            assert_eq!(
                spec.to_string().parse::<LinkSpec>().expect("round trip"),
                spec
            );
        }
        assert_eq!(
            "serial:/dev/ttyUSB1".parse::<LinkSpec>().expect("serial"),
            LinkSpec::Serial(SerialPath {
                path: "/dev/ttyUSB1".into(),
                baud: 115_200
            })
        );
        for bad in ["", "probe:x", "exec:", "serial:"] {
            assert!(bad.parse::<LinkSpec>().is_err(), "{bad:?}");
        }
    }
}
