//! FDO `RendezvousInfo` (FDO 1.1 §3.3.13): where the device (TO1) and the
//! owner (TO0) find the rendezvous server, as the OEM configures it on the
//! order or the hub.
//!
//! ```text
//! RendezvousInfo      = [ + RendezvousDirective ]
//! RendezvousDirective = [ + RendezvousInstr ]
//! RendezvousInstr     = [ RVVariable: uint8, ? RVValue: bstr .cbor any ]
//! ```
//!
//! A directive is one way to reach a server (tried in order); an
//! instruction is one variable of it. The value of an instruction is the
//! CBOR encoding of a typed value wrapped in a byte string: `RVDns` a text
//! string, `RVDevPort`/`RVOwnerPort` an unsigned integer, `RVIPAddress` a
//! 4- or 16-byte string, `RVProtocol` an `RVProtocolValue`. Flags
//! (`RVDevOnly`, `RVOwnerOnly`, `RVBypass`) may carry no value. Decoding
//! keeps every instruction as it was (variable and the value's bytes), so an
//! imported voucher is exported unchanged.

use super::cbor::{self, malformed, Item, Writer};
use crate::Error;

/// Most directives accepted in one `RendezvousInfo`.
pub const MAX_DIRECTIVES: usize = 16;
/// Most instructions accepted in one directive.
pub const MAX_INSTRUCTIONS: usize = 16;
/// The highest `RVVariable` FDO 1.1 defines (`RVExtRV`).
pub const MAX_RV_VARIABLE: u8 = 15;

/// `RVVariable` numbers (FDO 1.1 §3.3.13).
pub mod variable {
    /// `RVDevOnly`: only the device uses this directive.
    pub const DEV_ONLY: u8 = 0;
    /// `RVOwnerOnly`: only the owner uses this directive.
    pub const OWNER_ONLY: u8 = 1;
    /// `RVIPAddress`: the server's IP address.
    pub const IP_ADDRESS: u8 = 2;
    /// `RVDevPort`: the port the device connects to.
    pub const DEV_PORT: u8 = 3;
    /// `RVOwnerPort`: the port the owner connects to.
    pub const OWNER_PORT: u8 = 4;
    /// `RVDns`: the server's DNS name.
    pub const DNS: u8 = 5;
    /// `RVSvCertHash`: hash of the server's TLS certificate.
    pub const SV_CERT_HASH: u8 = 6;
    /// `RVClCertHash`: hash of the TLS CA certificate.
    pub const CL_CERT_HASH: u8 = 7;
    /// `RVUserInput`: ask the user.
    pub const USER_INPUT: u8 = 8;
    /// `RVWifiSsid`.
    pub const WIFI_SSID: u8 = 9;
    /// `RVWifiPw`.
    pub const WIFI_PW: u8 = 10;
    /// `RVMedium`: the network interface to use.
    pub const MEDIUM: u8 = 11;
    /// `RVProtocol`: an `RVProtocolValue`.
    pub const PROTOCOL: u8 = 12;
    /// `RVDelaysec`: wait before the next attempt.
    pub const DELAY_SEC: u8 = 13;
    /// `RVBypass`: skip TO1, the address is the owner's (TO2) service.
    pub const BYPASS: u8 = 14;
    /// `RVExtRV`: an external rendezvous mechanism.
    pub const EXT_RV: u8 = 15;
}

/// `RVProtocolValue` numbers.
pub mod protocol {
    /// `RVProtRest`: the first supported of HTTPS, HTTP, CoAP.
    pub const REST: u64 = 0;
    /// `RVProtHttp`.
    pub const HTTP: u64 = 1;
    /// `RVProtHttps`.
    pub const HTTPS: u64 = 2;
    /// `RVProtTcp`.
    pub const TCP: u64 = 3;
    /// `RVProtTls`.
    pub const TLS: u64 = 4;
    /// `RVProtCoapTcp`.
    pub const COAP_TCP: u64 = 5;
    /// `RVProtCoapUdp`.
    pub const COAP_UDP: u64 = 6;
}

/// One `RendezvousInstr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousInstr {
    /// The `RVVariable` (0 to 15).
    pub variable: u8,
    /// The CBOR encoding inside `RVValue`'s byte string, when present.
    pub value: Option<Vec<u8>>,
}

impl RendezvousInstr {
    fn with_value(variable: u8, value: Vec<u8>) -> Self {
        Self {
            variable,
            value: Some(value),
        }
    }

    /// `RVDns`: the server's DNS name.
    pub fn dns(name: &str) -> Self {
        Self::with_value(variable::DNS, Writer::new().text(name).finish())
    }

    /// `RVIPAddress`: 4 (IPv4) or 16 (IPv6) bytes.
    pub fn ip_address(addr: std::net::IpAddr) -> Self {
        let bytes = match addr {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        Self::with_value(variable::IP_ADDRESS, Writer::new().bytes(&bytes).finish())
    }

    /// `RVDevPort`.
    pub fn dev_port(port: u16) -> Self {
        Self::with_value(variable::DEV_PORT, Writer::new().uint(port.into()).finish())
    }

    /// `RVOwnerPort`.
    pub fn owner_port(port: u16) -> Self {
        Self::with_value(
            variable::OWNER_PORT,
            Writer::new().uint(port.into()).finish(),
        )
    }

    /// `RVProtocol` (see [`protocol`]).
    pub fn protocol(value: u64) -> Self {
        Self::with_value(variable::PROTOCOL, Writer::new().uint(value).finish())
    }

    /// A flag with no value (`RVDevOnly`, `RVOwnerOnly`, `RVBypass`).
    pub fn flag(variable: u8) -> Self {
        Self {
            variable,
            value: None,
        }
    }

    /// The value decoded as text (for `RVDns`, `RVWifiSsid`), if it is one.
    pub fn text_value(&self) -> Option<String> {
        let value = self.value.as_deref()?;
        let item = cbor::parse(value, "rendezvous value").ok()?;
        item.text("rendezvous value").ok().map(str::to_owned)
    }

    /// The value decoded as an unsigned integer (ports, protocol), if it
    /// is one.
    pub fn uint_value(&self) -> Option<u64> {
        let value = self.value.as_deref()?;
        cbor::parse(value, "rendezvous value")
            .ok()?
            .uint("rendezvous value")
            .ok()
    }
}

/// A whole `RendezvousInfo`: directives of instructions, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousInfo {
    /// The directives, tried in order.
    pub directives: Vec<Vec<RendezvousInstr>>,
}

impl RendezvousInfo {
    /// One directive naming a server by DNS name, port and protocol: what
    /// an OEM typically configures for its rendezvous server.
    pub fn server(dns: &str, port: u16, protocol_value: u64) -> Self {
        Self {
            directives: vec![vec![
                RendezvousInstr::dns(dns),
                RendezvousInstr::dev_port(port),
                RendezvousInstr::owner_port(port),
                RendezvousInstr::protocol(protocol_value),
            ]],
        }
    }

    /// The `RendezvousInfo` CBOR (as in `OVRVInfo` and in a production
    /// order's FDO block).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.finish()
    }

    /// Decodes and checks a `RendezvousInfo` (canonical CBOR, nothing after
    /// it).
    ///
    /// # Errors
    /// [`Error::FdoTooLarge`] over [`crate::fdo::MAX_HEADER_LEN`];
    /// [`Error::FdoMalformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > super::MAX_HEADER_LEN {
            return Err(super::header::too_large(bytes.len(), super::MAX_HEADER_LEN));
        }
        Self::read(&cbor::parse(bytes, "rendezvous info")?)
    }

    /// Checks the limits and values FDO allows.
    ///
    /// # Errors
    /// [`Error::FdoMalformed`].
    pub fn check(&self) -> Result<(), Error> {
        if self.directives.is_empty() || self.directives.len() > MAX_DIRECTIVES {
            return Err(malformed(format!(
                "rendezvous info must hold 1 to {MAX_DIRECTIVES} directives"
            )));
        }
        for directive in &self.directives {
            if directive.is_empty() || directive.len() > MAX_INSTRUCTIONS {
                return Err(malformed(format!(
                    "a rendezvous directive must hold 1 to {MAX_INSTRUCTIONS} instructions"
                )));
            }
            for instr in directive {
                if instr.variable > MAX_RV_VARIABLE {
                    return Err(malformed(format!(
                        "unknown rendezvous variable {}",
                        instr.variable
                    )));
                }
                if let Some(value) = &instr.value {
                    cbor::parse(value, "rendezvous value")?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.array(self.directives.len());
        for directive in &self.directives {
            w.array(directive.len());
            for instr in directive {
                match &instr.value {
                    Some(value) => w.array(2).uint(instr.variable.into()).bytes(value),
                    None => w.array(1).uint(instr.variable.into()),
                };
            }
        }
    }

    pub(crate) fn read(item: &Item<'_>) -> Result<Self, Error> {
        let mut directives = Vec::new();
        for directive in item.array("rendezvous info")? {
            let mut instrs = Vec::new();
            for instr in directive.array("rendezvous directive")? {
                let parts = instr.array("rendezvous instruction")?;
                let (variable, value) = match parts {
                    [v] => (v, None),
                    [v, value] => (v, Some(value.bytes("rendezvous value")?.to_vec())),
                    _ => {
                        return Err(malformed(
                            "a rendezvous instruction is not [variable, ? value]",
                        ))
                    }
                };
                let variable = u8::try_from(variable.uint("rendezvous variable")?)
                    .map_err(|_| malformed("rendezvous variable is not a uint8"))?;
                instrs.push(RendezvousInstr { variable, value });
            }
            directives.push(instrs);
        }
        let info = Self { directives };
        info.check()?;
        Ok(info)
    }
}
