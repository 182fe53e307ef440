//! The station ↔ device protocol (`docs/device-protocol.md`): the framing
//! both ends of an `exec:` or `serial:` link use, and the generated
//! `trustline.device.v1` messages.
//!
//! A frame is a 4-byte big-endian length `N`, `1 ≤ N ≤` [`MAX_FRAME_LEN`],
//! followed by `N` bytes of one protobuf message: a [`v1::DeviceRequest`]
//! from the station or a [`v1::DeviceResponse`] from the device. The length
//! is checked before anything is allocated, so a peer that sends garbage
//! costs at most one refused header.

use std::io::{Read, Write};

use prost::Message;

use crate::Error;

/// Generated code for package `trustline.device.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("trustline.device.v1");
}

/// The protocol version this code speaks (the document's version).
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame body, in bytes, either way.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Length of the frame header.
pub const FRAME_HEADER_LEN: usize = 4;

/// The body length a frame header announces, checked against the limits.
///
/// # Errors
/// [`Error::FrameLength`] for 0 or more than [`MAX_FRAME_LEN`].
pub fn frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(header);
    match usize::try_from(len) {
        Ok(n) if (1..=MAX_FRAME_LEN).contains(&n) => Ok(n),
        _ => Err(Error::FrameLength {
            len,
            max: MAX_FRAME_LEN,
        }),
    }
}

/// One frame: header and body.
///
/// # Errors
/// [`Error::FrameLength`] when the encoded message is larger than
/// [`MAX_FRAME_LEN`] (or empty, which only an all-default message is).
pub fn encode_frame<M: Message>(message: &M) -> Result<Vec<u8>, Error> {
    let body_len = message.encoded_len();
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    if body_len == 0 || body_len > MAX_FRAME_LEN {
        return Err(Error::FrameLength {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body_len);
    out.extend_from_slice(&len.to_be_bytes());
    message.encode_raw(&mut out);
    Ok(out)
}

/// Reads one frame body. `Ok(None)` when the stream ends cleanly before a
/// header (the peer closed the session).
///
/// # Errors
/// [`Error::FrameLength`], [`Error::FrameTruncated`] when the stream ends
/// inside a frame, [`Error::FrameIo`] for any other read error.
pub fn read_frame<R: Read>(reader: &mut R) -> Result<Option<Vec<u8>>, Error> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < FRAME_HEADER_LEN {
        return Err(Error::FrameTruncated {
            expected: FRAME_HEADER_LEN,
            got,
        });
    }
    let len = frame_len(header)?;
    let mut body = vec![0u8; len];
    let got = read_full(reader, &mut body)?;
    if got < len {
        return Err(Error::FrameTruncated { expected: len, got });
    }
    Ok(Some(body))
}

/// Writes one frame and flushes.
///
/// # Errors
/// [`Error::FrameLength`], [`Error::FrameIo`].
pub fn write_frame<W: Write, M: Message>(writer: &mut W, message: &M) -> Result<(), Error> {
    let frame = encode_frame(message)?;
    writer.write_all(&frame).map_err(Error::FrameIo)?;
    writer.flush().map_err(Error::FrameIo)
}

/// Decodes a request frame body.
///
/// # Errors
/// [`Error::FrameDecode`] for bytes that are not a `DeviceRequest`.
pub fn decode_request(body: &[u8]) -> Result<v1::DeviceRequest, Error> {
    v1::DeviceRequest::decode(body).map_err(Error::FrameDecode)
}

/// Decodes a response frame body.
///
/// # Errors
/// [`Error::FrameDecode`] for bytes that are not a `DeviceResponse`.
pub fn decode_response(body: &[u8]) -> Result<v1::DeviceResponse, Error> {
    v1::DeviceResponse::decode(body).map_err(Error::FrameDecode)
}

/// Fills `buf` unless the stream ends first; returns how much was read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::FrameIo(e)),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> v1::DeviceRequest {
        v1::DeviceRequest {
            id: 1,
            step: Some(v1::device_request::Step::Hello(v1::HelloRequest {
                versions: vec![PROTOCOL_VERSION],
                station: "st-1".into(),
            })),
        }
    }

    #[test]
    fn a_frame_round_trips_and_a_clean_end_is_none() {
        let frame = encode_frame(&hello()).expect("encode");
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().expect("4")) as usize,
            frame.len() - 4
        );
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let mut reader = two.as_slice();
        for _ in 0..2 {
            let body = read_frame(&mut reader).expect("read").expect("a frame");
            assert_eq!(decode_request(&body).expect("decode"), hello());
        }
        assert!(read_frame(&mut reader).expect("clean end").is_none());
    }

    #[test]
    fn bad_lengths_and_truncation_are_refused_before_allocating() {
        for header in [[0, 0, 0, 0], [0, 1, 0, 1], [0xff, 0xff, 0xff, 0xff]] {
            assert!(matches!(frame_len(header), Err(Error::FrameLength { .. })));
        }
        assert_eq!(frame_len([0, 1, 0, 0]).ok(), Some(MAX_FRAME_LEN));
        let frame = encode_frame(&hello()).expect("encode");
        for cut in [1, 3, 5, frame.len() - 1] {
            let mut reader = &frame[..cut];
            assert!(
                matches!(read_frame(&mut reader), Err(Error::FrameTruncated { .. })),
                "cut at {cut}"
            );
        }
        let too_big = v1::DeviceResponse {
            id: 0,
            result: Some(v1::device_response::Result::StoreCertification(
                v1::StoreCertificationResponse {
                    voucher: vec![0; MAX_FRAME_LEN],
                },
            )),
        };
        assert!(matches!(
            encode_frame(&too_big),
            Err(Error::FrameLength { .. })
        ));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(
            decode_response(&[0xff, 0xff, 0xff]),
            Err(Error::FrameDecode(_))
        ));
    }
}
