"""Encodings the device protocol uses, written from docs/device-protocol.md:
a small protobuf codec (proto3, the canonical form of section 1), the bit of
CBOR the voucher needs (section 7), and the frame format (section 8.1).
No generated code: this module is the proof that the document is enough."""

import struct

MAX_FRAME_LEN = 65536

# --- protobuf -----------------------------------------------------------


class DecodeError(ValueError):
    """Bytes that are not a valid protobuf message."""


def varint(n):
    if n < 0:
        raise ValueError("negative varint")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tag(num, wire_type):
    return varint(num << 3 | wire_type)


class Msg:
    """Builds a message field by field, in the order given (callers give
    increasing field numbers), leaving out defaults like proto3 does."""

    def __init__(self):
        self.out = bytearray()

    def bytes(self, num, value):
        if value:
            self.out += _tag(num, 2) + varint(len(value)) + value
        return self

    def string(self, num, value):
        return self.bytes(num, value.encode())

    def uint(self, num, value):
        if value:
            self.out += _tag(num, 0) + varint(value)
        return self

    def boolean(self, num, value):
        return self.uint(num, 1 if value else 0)

    def message(self, num, value):
        """A sub-message that is present (even if empty), e.g. a oneof arm."""
        if value is not None:
            self.out += _tag(num, 2) + varint(len(value)) + value
        return self

    def packed(self, num, values):
        if values:
            body = b"".join(varint(v) for v in values)
            self.out += _tag(num, 2) + varint(len(body)) + body
        return self

    def repeated_string(self, num, values):
        for v in values:
            self.out += _tag(num, 2) + varint(len(v.encode())) + v.encode()
        return self

    def done(self):
        return bytes(self.out)


def _read_varint(buf, i):
    shift = 0
    n = 0
    while True:
        if i >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def parse(buf):
    """Field number -> list of values (int for varints, bytes for
    length-delimited). Fixed-width fields are skipped; groups refused."""
    fields = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise DecodeError("field number 0")
        if wt == 0:
            value, i = _read_varint(buf, i)
        elif wt == 2:
            n, i = _read_varint(buf, i)
            if i + n > len(buf):
                raise DecodeError("truncated field")
            value = bytes(buf[i:i + n])
            i += n
        elif wt == 1:
            i += 8
            value = None
        elif wt == 5:
            i += 4
            value = None
        else:
            raise DecodeError(f"wire type {wt}")
        if i > len(buf):
            raise DecodeError("truncated field")
        if value is not None:
            fields.setdefault(num, []).append(value)
    return fields


def get_bytes(fields, num):
    v = fields.get(num, [b""])[-1]
    if not isinstance(v, bytes):
        raise DecodeError(f"field {num} is not length-delimited")
    return v


def get_string(fields, num):
    try:
        return get_bytes(fields, num).decode()
    except UnicodeDecodeError as e:
        raise DecodeError(f"field {num} is not utf-8") from e


def get_uint(fields, num):
    v = fields.get(num, [0])[-1]
    if not isinstance(v, int):
        raise DecodeError(f"field {num} is not a varint")
    return v


def get_repeated_uint(fields, num):
    out = []
    for v in fields.get(num, []):
        if isinstance(v, int):
            out.append(v)
        else:  # packed
            i = 0
            while i < len(v):
                n, i = _read_varint(v, i)
                out.append(n)
    return out


def get_repeated_bytes(fields, num):
    out = fields.get(num, [])
    if any(not isinstance(v, bytes) for v in out):
        raise DecodeError(f"field {num} is not length-delimited")
    return list(out)


def signed_statement(body, signature):
    return Msg().bytes(1, body).bytes(2, signature).done()


# --- CBOR (only what the voucher uses) ---------------------------------


class CborError(ValueError):
    """Bytes that are not the CBOR the voucher format allows."""


def cbor_head(major, n):
    m = major << 5
    if n < 24:
        return bytes([m | n])
    if n < 0x100:
        return bytes([m | 24, n])
    if n < 0x10000:
        return bytes([m | 25]) + struct.pack(">H", n)
    if n < 0x100000000:
        return bytes([m | 26]) + struct.pack(">I", n)
    return bytes([m | 27]) + struct.pack(">Q", n)


def cbor_bytes(b):
    return cbor_head(2, len(b)) + b


def cbor_text(s):
    b = s.encode()
    return cbor_head(3, len(b)) + b


NULL = object()


class Tagged:
    def __init__(self, tag, value):
        self.tag, self.value = tag, value


def cbor_decode(buf):
    """One item, no trailing bytes: ints, bstr, tstr, arrays, maps (as a
    list of pairs), tags and null."""
    value, i = _cbor_item(buf, 0, 0)
    if i != len(buf):
        raise CborError("trailing bytes")
    return value


def _cbor_item(buf, i, depth):
    if depth > 16:
        raise CborError("nested too deeply")
    if i >= len(buf):
        raise CborError("truncated")
    ib = buf[i]
    i += 1
    major, info = ib >> 5, ib & 0x1F
    if ib == 0xF6:
        return NULL, i
    if info < 24:
        n = info
    elif info in (24, 25, 26, 27):
        size = 1 << (info - 24)
        if i + size > len(buf):
            raise CborError("truncated")
        n = int.from_bytes(buf[i:i + size], "big")
        i += size
    else:
        raise CborError("indefinite or reserved length")
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major in (2, 3):
        if i + n > len(buf):
            raise CborError("truncated string")
        s = bytes(buf[i:i + n])
        i += n
        if major == 3:
            try:
                return s.decode(), i
            except UnicodeDecodeError as e:
                raise CborError("bad text") from e
        return s, i
    if major == 4:
        items = []
        for _ in range(n):
            v, i = _cbor_item(buf, i, depth + 1)
            items.append(v)
        return items, i
    if major == 5:
        pairs = []
        for _ in range(n):
            k, i = _cbor_item(buf, i, depth + 1)
            v, i = _cbor_item(buf, i, depth + 1)
            pairs.append((k, v))
        return dict(pairs) if all(isinstance(k, int) for k, _ in pairs) else pairs, i
    if major == 6:
        v, i = _cbor_item(buf, i, depth + 1)
        return Tagged(n, v), i
    raise CborError(f"major type {major} not used here")


# --- frames --------------------------------------------------------------


class FrameError(Exception):
    """A frame header out of range, or a stream that ended inside a frame."""


def frame(body):
    if not 1 <= len(body) <= MAX_FRAME_LEN:
        raise FrameError(f"frame of {len(body)} bytes")
    return struct.pack(">I", len(body)) + body


def read_frame(read_exact):
    """read_exact(n) returns up to n bytes (fewer only at the end of the
    stream). Returns the body, or None at a clean end before a header."""
    header = read_exact(4)
    if not header:
        return None
    if len(header) < 4:
        raise FrameError("stream ended inside a frame header")
    (n,) = struct.unpack(">I", header)
    if not 1 <= n <= MAX_FRAME_LEN:
        raise FrameError(f"frame length {n} is outside 1 to {MAX_FRAME_LEN}")
    body = read_exact(n)
    if len(body) < n:
        raise FrameError(f"stream ended inside a frame: {len(body)} of {n} bytes")
    return body
