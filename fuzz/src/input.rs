//! Splitting the fuzzer's flat byte string into the pieces a harness needs:
//! a selector byte, then tagged chunks. The same functions build seeds
//! ([`chunk`]), so the corpus generator and the harnesses agree.

/// The first byte (the harness's mode selector) and the rest; `None` for an
/// empty input.
pub fn selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(s, rest)| (*s, rest))
}

/// One tagged piece of an input: a tag byte and up to 64 KiB of body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// What the piece is (its meaning is the harness's).
    pub tag: u8,
    /// Its bytes.
    pub body: &'a [u8],
}

/// Splits `data` into chunks, each `tag: u8, len: u16 LE, body: len bytes`;
/// a last chunk whose length runs past the end takes what is left.
pub fn chunks(mut data: &[u8]) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    while let [tag, lo, hi, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
        out.push(Chunk {
            tag: *tag,
            body: &rest[..len],
        });
        data = &rest[len..];
    }
    out
}

/// Appends one chunk to `out` in the form [`chunks`] reads.
///
/// # Panics
/// When `body` is longer than 64 KiB (a seed-building bug).
pub fn chunk(tag: u8, body: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(body.len()).expect("a chunk body fits 64 KiB");
    out.push(tag);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_a_short_tail_is_taken_whole() {
        let mut data = Vec::new();
        chunk(1, b"abc", &mut data);
        chunk(2, b"", &mut data);
        assert_eq!(
            chunks(&data),
            vec![
                Chunk {
                    tag: 1,
                    body: b"abc"
                },
                Chunk { tag: 2, body: b"" }
            ]
        );
        assert_eq!(chunks(&[7, 9, 0, b'x']), vec![Chunk { tag: 7, body: b"x" }]);
        assert!(chunks(&[7, 9]).is_empty());
    }
}
