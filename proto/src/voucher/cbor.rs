//! The little CBOR (RFC 8949) this format needs: unsigned integers, byte
//! and text strings, arrays, null — always definite length, shortest head —
//! and the strict accessors decoding uses.

use ciborium::value::Value;

use crate::Error;

pub(super) const MAJOR_UINT: u8 = 0;
pub(super) const MAJOR_BYTES: u8 = 2;
pub(super) const MAJOR_TEXT: u8 = 3;
pub(super) const MAJOR_ARRAY: u8 = 4;
pub(super) const CBOR_NULL: u8 = 0xf6;

pub(super) fn put_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[m | 24, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(m | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(m | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

pub(super) fn put_uint(out: &mut Vec<u8>, n: u64) {
    put_head(out, MAJOR_UINT, n);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

pub(super) fn put_text(out: &mut Vec<u8>, s: &str) {
    put_head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn malformed(why: impl Into<String>) -> Error {
    Error::VoucherMalformed(why.into())
}

pub(super) fn parse_cbor(bytes: &[u8], what: &str) -> Result<Value, Error> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader(&mut rest)
        .map_err(|e| malformed(format!("{what} is not CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{what} has {} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

pub(super) fn array(value: Value, len: usize, what: &str) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) if items.len() == len => Ok(items),
        _ => Err(malformed(format!("{what} is not an array of {len} items"))),
    }
}

/// The next item of an array whose length was checked; `Null` past the end
/// (which every typed accessor then refuses).
pub(super) fn next(items: &mut std::vec::IntoIter<Value>) -> Value {
    items.next().unwrap_or(Value::Null)
}

pub(super) fn uint(value: Value, what: &str) -> Result<u64, Error> {
    match value {
        Value::Integer(i) => u64::try_from(i).map_err(|_| malformed(format!("{what} is negative"))),
        _ => Err(malformed(format!("{what} is not an unsigned integer"))),
    }
}

pub(super) fn bytes_of(value: Value, what: &str) -> Result<Vec<u8>, Error> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(malformed(format!("{what} is not a byte string"))),
    }
}

pub(super) fn fixed<const N: usize>(value: Value, what: &str) -> Result<[u8; N], Error> {
    bytes_of(value, what)?
        .try_into()
        .map_err(|_| malformed(format!("{what} is not {N} bytes")))
}

pub(super) fn text(value: Value, what: &str) -> Result<String, Error> {
    match value {
        Value::Text(s) => Ok(s),
        _ => Err(malformed(format!("{what} is not a text string"))),
    }
}
