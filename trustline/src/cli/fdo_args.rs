//! The FDO block of `trustline order create` (issue 17;
//! `docs/fdo-vouchers.md` §3): where the order's devices and their owners
//! meet for FIDO Device Onboard, signed into the order so that no station
//! can change it.
//!
//! `--fdo-rv URL` (repeat for several rendezvous servers, tried in order)
//! names one server as `SCHEME://HOST:PORT`: the scheme is FDO's
//! `RVProtocol` (`http`, `https`, `tcp`, `tls`, `coap+tcp`, `coap`), the
//! host a DNS name or an IP address (`[…]` for IPv6), the port both the
//! device's and the owner's. `--fdo-device-info TEXT` is `OVDeviceInfo`
//! (default: the SKU).

use anyhow::{bail, Context};
use clap::Args;
use trustline_proto::fdo::rendezvous::protocol;
use trustline_proto::fdo::{FdoDeviceData, RendezvousInfo, RendezvousInstr};
use trustline_proto::v1;

/// FDO options of `order create`.
#[derive(Debug, Args, Default)]
pub(crate) struct FdoArgs {
    /// An FDO rendezvous server, `SCHEME://HOST:PORT` (repeat for several):
    /// gives the order an FDO block, so every device gets an FDO voucher.
    #[arg(long = "fdo-rv", value_name = "URL")]
    pub(crate) rendezvous: Vec<String>,
    /// The FDO `OVDeviceInfo` text [default: the SKU]; needs `--fdo-rv`.
    #[arg(long, value_name = "TEXT")]
    pub(crate) fdo_device_info: Option<String>,
}

impl FdoArgs {
    /// The order's FDO block, or `None` without `--fdo-rv`.
    ///
    /// # Errors
    /// A malformed URL, device info without a server, data out of FDO's
    /// limits.
    pub(crate) fn block(&self, sku: &str) -> anyhow::Result<Option<v1::FdoOrder>> {
        if self.rendezvous.is_empty() {
            if self.fdo_device_info.is_some() {
                bail!("--fdo-device-info needs at least one --fdo-rv");
            }
            return Ok(None);
        }
        let directives = self
            .rendezvous
            .iter()
            .map(|url| directive(url).with_context(|| format!("--fdo-rv {url:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let data = FdoDeviceData {
            rv_info: RendezvousInfo { directives },
            device_info: self
                .fdo_device_info
                .clone()
                .unwrap_or_else(|| sku.to_owned()),
        };
        let block = data.to_order();
        // The provisioner's own check, run here so that a bad block is
        // refused before the order is signed.
        FdoDeviceData::from_order(&block).context("the fdo block")?;
        Ok(Some(block))
    }
}

/// One rendezvous directive from `SCHEME://HOST:PORT`.
pub(crate) fn directive(url: &str) -> anyhow::Result<Vec<RendezvousInstr>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("expected SCHEME://HOST:PORT");
    };
    let protocol_value = match scheme {
        "http" => protocol::HTTP,
        "https" => protocol::HTTPS,
        "tcp" => protocol::TCP,
        "tls" => protocol::TLS,
        "coap+tcp" => protocol::COAP_TCP,
        "coap" => protocol::COAP_UDP,
        other => bail!("unknown scheme {other:?} (http, https, tcp, tls, coap+tcp, coap)"),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else {
        bail!("expected a port after the host");
    };
    let port: u16 = port.parse().context("the port is not 0 to 65535")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        bail!("no host");
    }
    let address = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => RendezvousInstr::ip_address(ip),
        Err(_) if host.contains(':') => bail!("{host:?} is not an IPv6 address"),
        Err(_) => RendezvousInstr::dns(host),
    };
    Ok(vec![
        address,
        RendezvousInstr::dev_port(port),
        RendezvousInstr::owner_port(port),
        RendezvousInstr::protocol(protocol_value),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustline_proto::fdo::rendezvous::variable;

    #[test]
    fn a_url_names_the_host_ports_and_protocol_and_bad_ones_are_refused() {
        let d = directive("https://rv.example.com:8041").expect("parses");
        assert_eq!(d[0].text_value().as_deref(), Some("rv.example.com"));
        assert_eq!(d[1].uint_value(), Some(8041));
        assert_eq!(d[2].uint_value(), Some(8041));
        assert_eq!(d[3].uint_value(), Some(protocol::HTTPS));
        let ip = directive("tcp://[::1]:80").expect("parses");
        assert_eq!(ip[0].variable, variable::IP_ADDRESS);
        assert_eq!(ip[3].uint_value(), Some(protocol::TCP));
        for bad in [
            "rv.example.com:80",
            "ftp://a:1",
            "https://a",
            "https://a:99999",
            "https://:1",
        ] {
            assert!(directive(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_block_is_only_made_with_a_server_and_defaults_to_the_sku() {
        let none = FdoArgs::default();
        assert!(none.block("X1").expect("no block").is_none());
        let info_only = FdoArgs {
            rendezvous: vec![],
            fdo_device_info: Some("Acme".into()),
        };
        assert!(info_only.block("X1").is_err());
        let args = FdoArgs {
            rendezvous: vec![
                "https://rv.example.com:8041".into(),
                "http://10.0.0.1:80".into(),
            ],
            fdo_device_info: None,
        };
        let block = args.block("X1").expect("block").expect("some");
        let data = FdoDeviceData::from_order(&block).expect("decodes");
        assert_eq!(data.device_info, "X1");
        assert_eq!(data.rv_info.directives.len(), 2);
        let long = FdoArgs {
            rendezvous: vec!["https://a:1".into()],
            fdo_device_info: Some("x".repeat(513)),
        };
        assert!(long.block("X1").is_err());
    }
}
