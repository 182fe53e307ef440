//! PKCS#11 URIs (RFC 7512): naming a key as
//! `pkcs11:token=factory;object=trustline-site-intermediate;type=private`.
//!
//! Path attributes are separated by `;`, query attributes (after `?`) by `&`;
//! values are percent-decoded. `pin-value` is refused: PINs come from a file
//! or an environment variable only, so a URI carrying one is a mistake that
//! would leak it into configuration and logs.

use std::fmt;

use crate::Error;

/// The object class a URI's `type` attribute names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `type=private`
    Private,
    /// `type=public`
    Public,
    /// `type=cert`
    Cert,
    /// `type=secret-key`
    SecretKey,
    /// `type=data`
    Data,
}

/// A parsed PKCS#11 URI. Attributes this CA does not use are kept only so
/// that a URI naming a different token or library is not silently accepted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `object`: the object label.
    pub object: Option<String>,
    /// `id`: the object's `CKA_ID`.
    pub id: Option<Vec<u8>>,
    /// `type`: the object class.
    pub object_type: Option<ObjectType>,
    /// `slot-id`: a slot number (discouraged: slot ids change).
    pub slot_id: Option<u64>,
    /// `module-path` (query): the PKCS#11 module.
    pub module_path: Option<String>,
    /// `pin-source` (query): a file holding the PIN.
    pub pin_source: Option<String>,
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Uri")
            .field("token", &self.token)
            .field("object", &self.object)
            .field("id", &self.id.as_ref().map(hex::encode))
            .field("object_type", &self.object_type)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidUri {
        reason: reason.into(),
    }
}

impl Pkcs11Uri {
    /// Parses `uri`.
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for a missing `pkcs11:` scheme, malformed
    /// percent-encoding, a repeated or unknown attribute, a bad `type`, or a
    /// `pin-value`.
    pub fn parse(uri: &str) -> Result<Self, Error> {
        const MAX_LEN: usize = 4096;
        if uri.len() > MAX_LEN {
            return Err(invalid(format!("longer than {MAX_LEN} bytes")));
        }
        let Some(rest) = uri
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
            .map(|_| &uri[7..])
        else {
            return Err(invalid("it does not start with \"pkcs11:\""));
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("path attribute {attr:?} has no '='")))?;
            let bytes = percent_decode(value)?;
            match name {
                "token" => set(&mut out.token, name, utf8(name, bytes)?)?,
                "manufacturer" => set(&mut out.manufacturer, name, utf8(name, bytes)?)?,
                "model" => set(&mut out.model, name, utf8(name, bytes)?)?,
                "serial" => set(&mut out.serial, name, utf8(name, bytes)?)?,
                "object" => set(&mut out.object, name, utf8(name, bytes)?)?,
                "id" => set(&mut out.id, name, bytes)?,
                "type" => {
                    let t = match utf8(name, bytes)?.as_str() {
                        "private" => ObjectType::Private,
                        "public" => ObjectType::Public,
                        "cert" => ObjectType::Cert,
                        "secret-key" => ObjectType::SecretKey,
                        "data" => ObjectType::Data,
                        other => return Err(invalid(format!("unknown type {other:?}"))),
                    };
                    set(&mut out.object_type, name, t)?;
                }
                "slot-id" => {
                    let text = utf8(name, bytes)?;
                    let n = text
                        .parse::<u64>()
                        .map_err(|_| invalid(format!("slot-id {text:?} is not a number")))?;
                    set(&mut out.slot_id, name, n)?;
                }
                // Accepted and not used for matching by this CA.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {}
                other if other.starts_with("x-") => {}
                other => return Err(invalid(format!("unknown path attribute {other:?}"))),
            }
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("query attribute {attr:?} has no '='")))?;
            match name {
                "pin-value" => {
                    return Err(invalid(
                        "pin-value is refused: the PIN must come from a file or an environment variable",
                    ))
                }
                "pin-source" => {
                    let v = utf8(name, percent_decode(value)?)?;
                    set(&mut out.pin_source, name, v)?;
                }
                "module-path" => {
                    let v = utf8(name, percent_decode(value)?)?;
                    set(&mut out.module_path, name, v)?;
                }
                "module-name" => {}
                other if other.starts_with("x-") => {}
                other => return Err(invalid(format!("unknown query attribute {other:?}"))),
            }
        }
        Ok(out)
    }

    /// A URI naming the private key labelled `object` on token `token`.
    pub fn private_key(token: &str, object: &str) -> String {
        format!(
            "pkcs11:token={};object={};type=private",
            percent_encode(token),
            percent_encode(object)
        )
    }
}

fn set<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), Error> {
    if slot.is_some() {
        return Err(invalid(format!("attribute {name:?} appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn utf8(name: &str, bytes: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|_| invalid(format!("attribute {name:?} is not UTF-8")))
}

/// Decodes `%XX` escapes.
fn percent_decode(s: &str) -> Result<Vec<u8>, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid(format!("bad percent-encoding at byte {i}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Encodes everything outside RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_object_and_type_with_percent_decoding() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=Factory%20HSM%201;object=trustline-site-intermediate;type=private;id=%01%ff",
        )
        .expect("parse");
        assert_eq!(uri.token.as_deref(), Some("Factory HSM 1"));
        assert_eq!(uri.object.as_deref(), Some("trustline-site-intermediate"));
        assert_eq!(uri.object_type, Some(ObjectType::Private));
        assert_eq!(uri.id.as_deref(), Some(&[0x01, 0xff][..]));
    }

    #[test]
    fn query_attributes_are_read_and_pin_value_is_refused() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/pin",
        )
        .expect("parse");
        assert_eq!(
            uri.module_path.as_deref(),
            Some("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(uri.pin_source.as_deref(), Some("/etc/pin"));
        let err = Pkcs11Uri::parse("pkcs11:object=k?pin-value=1234").expect_err("must be refused");
        assert!(err.to_string().contains("pin-value is refused"), "{err}");
        assert!(!err.to_string().contains("1234"));
    }

    #[test]
    fn malformed_uris_are_refused() {
        for bad in [
            "pkcs12:object=k",
            "object=k",
            "pkcs11:object=%zz",
            "pkcs11:object=%4",
            "pkcs11:object=a;object=b",
            "pkcs11:type=secret",
            "pkcs11:colour=blue",
            "pkcs11:object",
        ] {
            assert!(
                matches!(Pkcs11Uri::parse(bad), Err(Error::InvalidUri { .. })),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn private_key_uris_round_trip() {
        let text = Pkcs11Uri::private_key("my token;1", "a/b");
        let uri = Pkcs11Uri::parse(&text).expect("parse");
        assert_eq!(uri.token.as_deref(), Some("my token;1"));
        assert_eq!(uri.object.as_deref(), Some("a/b"));
        assert_eq!(uri.object_type, Some(ObjectType::Private));
    }
}
