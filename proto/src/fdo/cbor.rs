//! The strict CBOR (RFC 8949) the FDO codec reads and writes.
//!
//! Reading keeps the exact bytes of every item ([`Item::raw`]), because FDO
//! hashes and signs encoded items (the header, each entry, the HMAC
//! structure) and a re-encoding by another library must never be what a
//! hash is checked against. Only the shortest-head, definite-length form is
//! accepted — so one value has one encoding and re-encoding what was read
//! reproduces the input — and only the types FDO uses: unsigned and
//! negative integers, byte and text strings, arrays, maps with unique keys,
//! tags, `false`, `true` and `null`. Nesting is bounded, and every count is
//! checked against the bytes left before anything is allocated.

use crate::Error;

/// Deepest nesting accepted (FDO's deepest structure, an entry inside the
/// voucher, is 6 levels).
const MAX_DEPTH: usize = 16;

/// A parsed item and the exact bytes it was read from.
#[derive(Clone, Debug)]
pub(crate) struct Item<'a> {
    pub(crate) kind: Kind<'a>,
    pub(crate) raw: &'a [u8],
}

/// What an item is.
#[derive(Clone, Debug)]
pub(crate) enum Kind<'a> {
    Uint(u64),
    /// A negative integer `-1 - n`, holding `n`.
    Nint(u64),
    Bytes(&'a [u8]),
    Text(&'a str),
    Array(Vec<Item<'a>>),
    Map(Vec<(Item<'a>, Item<'a>)>),
    Tag(u64, Box<Item<'a>>),
    False,
    True,
    Null,
}

pub(crate) fn malformed(why: impl Into<String>) -> Error {
    Error::FdoMalformed(why.into())
}

/// Parses exactly one item filling all of `bytes`.
pub(crate) fn parse<'a>(bytes: &'a [u8], what: &str) -> Result<Item<'a>, Error> {
    let mut reader = Reader { buf: bytes, pos: 0 };
    let item = reader
        .item(0)
        .map_err(|e| malformed(format!("{what}: {e}")))?;
    if reader.pos != bytes.len() {
        return Err(malformed(format!(
            "{what}: {} trailing bytes",
            bytes.len() - reader.pos
        )));
    }
    Ok(item)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| "truncated".to_owned())?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Reads a head: major type and argument, refusing indefinite lengths
    /// and any argument not in its shortest form.
    fn head(&mut self) -> Result<(u8, u8, u64), String> {
        let ib = self.take(1)?[0];
        let (major, info) = (ib >> 5, ib & 0x1f);
        let n = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let size = 1usize << (info - 24);
                let mut n = 0u64;
                for b in self.take(size)? {
                    n = (n << 8) | u64::from(*b);
                }
                let shortest = match info {
                    24 => n >= 24,
                    25 => n > 0xff,
                    26 => n > 0xffff,
                    _ => n > 0xffff_ffff,
                };
                // Major 7 with info 24..27 are simple values and floats,
                // refused below; their argument rules do not apply.
                if major != 7 && !shortest {
                    return Err("an integer or length not in its shortest form".to_owned());
                }
                n
            }
            31 => return Err("an indefinite-length item".to_owned()),
            _ => return Err("a reserved head".to_owned()),
        };
        Ok((major, info, n))
    }

    fn count(&self, n: u64, min_item_len: usize) -> Result<usize, String> {
        let left = self.buf.len() - self.pos;
        usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_len) <= left)
            .ok_or_else(|| format!("a count of {n} exceeds the bytes left"))
    }

    fn item(&mut self, depth: usize) -> Result<Item<'a>, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".to_owned());
        }
        let start = self.pos;
        let (major, info, n) = self.head()?;
        let kind = match major {
            0 => Kind::Uint(n),
            1 => Kind::Nint(n),
            2 => {
                let len = self.count(n, 1)?;
                Kind::Bytes(self.take(len)?)
            }
            3 => {
                let len = self.count(n, 1)?;
                let b = self.take(len)?;
                Kind::Text(std::str::from_utf8(b).map_err(|_| "text is not UTF-8".to_owned())?)
            }
            4 => {
                let len = self.count(n, 1)?;
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.item(depth + 1)?);
                }
                Kind::Array(items)
            }
            5 => {
                let len = self.count(n, 2)?;
                let mut pairs: Vec<(Item<'a>, Item<'a>)> = Vec::with_capacity(len);
                for _ in 0..len {
                    let k = self.item(depth + 1)?;
                    if pairs.iter().any(|(seen, _)| seen.raw == k.raw) {
                        return Err("a map with a duplicate key".to_owned());
                    }
                    let v = self.item(depth + 1)?;
                    pairs.push((k, v));
                }
                Kind::Map(pairs)
            }
            6 => Kind::Tag(n, Box::new(self.item(depth + 1)?)),
            _ => match info {
                20 => Kind::False,
                21 => Kind::True,
                22 => Kind::Null,
                _ => return Err("a float, undefined or simple value".to_owned()),
            },
        };
        Ok(Item {
            kind,
            raw: &self.buf[start..self.pos],
        })
    }
}

// ---------------------------------------------------------------------------
// Typed accessors: each names what it expected in its refusal.
// ---------------------------------------------------------------------------

impl<'a> Item<'a> {
    pub(crate) fn array(&self, what: &str) -> Result<&[Item<'a>], Error> {
        match &self.kind {
            Kind::Array(items) => Ok(items),
            _ => Err(malformed(format!("{what} is not an array"))),
        }
    }

    pub(crate) fn array_of(&self, len: usize, what: &str) -> Result<&[Item<'a>], Error> {
        let items = self.array(what)?;
        if items.len() != len {
            return Err(malformed(format!(
                "{what} has {} items, not {len}",
                items.len()
            )));
        }
        Ok(items)
    }

    pub(crate) fn uint(&self, what: &str) -> Result<u64, Error> {
        match self.kind {
            Kind::Uint(n) => Ok(n),
            _ => Err(malformed(format!("{what} is not an unsigned integer"))),
        }
    }

    /// Any integer that fits an `i64`.
    pub(crate) fn int(&self, what: &str) -> Result<i64, Error> {
        let v = match self.kind {
            Kind::Uint(n) => i64::try_from(n).ok(),
            Kind::Nint(n) => i64::try_from(n).ok().map(|n| -1 - n),
            _ => return Err(malformed(format!("{what} is not an integer"))),
        };
        v.ok_or_else(|| malformed(format!("{what} is out of range")))
    }

    pub(crate) fn bytes(&self, what: &str) -> Result<&'a [u8], Error> {
        match self.kind {
            Kind::Bytes(b) => Ok(b),
            _ => Err(malformed(format!("{what} is not a byte string"))),
        }
    }

    pub(crate) fn fixed<const N: usize>(&self, what: &str) -> Result<[u8; N], Error> {
        self.bytes(what)?
            .try_into()
            .map_err(|_| malformed(format!("{what} is not {N} bytes")))
    }

    pub(crate) fn text(&self, what: &str) -> Result<&'a str, Error> {
        match self.kind {
            Kind::Text(s) => Ok(s),
            _ => Err(malformed(format!("{what} is not a text string"))),
        }
    }

    pub(crate) fn map(&self, what: &str) -> Result<&[(Item<'a>, Item<'a>)], Error> {
        match &self.kind {
            Kind::Map(pairs) => Ok(pairs),
            _ => Err(malformed(format!("{what} is not a map"))),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }
}

// ---------------------------------------------------------------------------
// Writing: always definite lengths and shortest heads.
// ---------------------------------------------------------------------------

/// Appends CBOR items to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) out: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn head(&mut self, major: u8, n: u64) -> &mut Self {
        let m = major << 5;
        if n < 24 {
            self.out.push(m | n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            self.out.extend_from_slice(&[m | 24, n]);
        } else if let Ok(n) = u16::try_from(n) {
            self.out.push(m | 25);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(n) {
            self.out.push(m | 26);
            self.out.extend_from_slice(&n.to_be_bytes());
        } else {
            self.out.push(m | 27);
            self.out.extend_from_slice(&n.to_be_bytes());
        }
        self
    }

    pub(crate) fn uint(&mut self, n: u64) -> &mut Self {
        self.head(0, n)
    }

    pub(crate) fn int(&mut self, n: i64) -> &mut Self {
        if n >= 0 {
            self.head(0, n.unsigned_abs())
        } else {
            // -1 - n ≥ 0 for n < 0, and fits a u64.
            self.head(1, (-1 - n).unsigned_abs())
        }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.head(2, b.len() as u64);
        self.out.extend_from_slice(b);
        self
    }

    pub(crate) fn text(&mut self, s: &str) -> &mut Self {
        self.head(3, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
        self
    }

    pub(crate) fn array(&mut self, len: usize) -> &mut Self {
        self.head(4, len as u64)
    }

    pub(crate) fn map(&mut self, len: usize) -> &mut Self {
        self.head(5, len as u64)
    }

    pub(crate) fn tag(&mut self, tag: u64) -> &mut Self {
        self.head(6, tag)
    }

    pub(crate) fn null(&mut self) -> &mut Self {
        self.out.push(0xf6);
        self
    }

    /// Appends bytes that already are one encoded item.
    pub(crate) fn raw(&mut self, item: &[u8]) -> &mut Self {
        self.out.extend_from_slice(item);
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(bytes: &[u8]) -> String {
        match parse(bytes, "item") {
            Err(Error::FdoMalformed(why)) => why,
            other => panic!("{bytes:02x?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn only_the_shortest_definite_form_is_read() {
        assert!(refused(&[0x18, 0x05]).contains("shortest"));
        assert!(refused(&[0x19, 0x00, 0xff]).contains("shortest"));
        assert!(refused(&[0x9f, 0xff]).contains("indefinite"));
        assert!(refused(&[0x5f, 0x41, 0x00, 0xff]).contains("indefinite"));
        assert!(refused(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 0]).contains("float"));
        assert!(refused(&[0xf7]).contains("simple"));
        assert!(refused(&[0x01, 0x02]).contains("trailing"));
        assert!(refused(&[0xa2, 0x01, 0x02, 0x01, 0x03]).contains("duplicate"));
        assert!(refused(&[0x62, 0xff, 0xfe]).contains("UTF-8"));
        // A huge count is refused before anything is allocated.
        assert!(refused(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).contains("count"));
        let deep = [vec![0x81; MAX_DEPTH + 1], vec![0x00]].concat();
        assert!(refused(&deep).contains("deeply"));
    }

    #[test]
    fn what_is_written_reads_back_with_its_raw_bytes() {
        let mut w = Writer::new();
        w.array(5)
            .uint(101)
            .int(-16)
            .bytes(&[1, 2, 3])
            .text("dev")
            .map(1);
        w.int(-1_414_679_601).null();
        let bytes = w.finish();
        let item = parse(&bytes, "test").expect("parses");
        let items = item.array_of(5, "test").expect("array");
        assert_eq!(items[0].uint("v").expect("uint"), 101);
        assert_eq!(items[1].int("h").expect("int"), -16);
        assert_eq!(items[2].bytes("b").expect("bytes"), [1, 2, 3]);
        assert_eq!(items[3].text("t").expect("text"), "dev");
        let pairs = items[4].map("m").expect("map");
        assert_eq!(pairs[0].0.int("k").expect("key"), -1_414_679_601);
        assert!(pairs[0].1.is_null());
        assert_eq!(items[2].raw, [0x43, 1, 2, 3]);
        assert_eq!(item.raw, bytes.as_slice());
    }
}
