"""The cryptography a Trustline device does (docs/device-protocol.md
sections 1, 4, 6, 7): P-256 keys in canonical SPKI form, low-S ECDSA with
RFC 6979 deterministic nonces, domain-separated statements, ECDH key
unwrapping, and the COSE_Sign1 voucher binding."""

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
)

import wire

# The P-256 group order.
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

KDF_X = "ecdh-x-coordinate"
KDF_SHA256 = "ecdh-sha256-kdf"
KDFS = (KDF_X, KDF_SHA256)
SHA256_KDF_SHARED_INFO = b"trustline.v1.WrappedDeviceKey"
MAX_WRAPPED_LEN = 512
BINDING_CONTENT_TYPE = "application/vnd.trustline.voucher-binding"


class Refused(Exception):
    """A step the device refuses: carries the wire error code."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def sha256(b):
    return hashlib.sha256(b).digest()


def hmac_sha256(key, message):
    """RFC 2104 HMAC with SHA-256 (the FDO header HMAC, section 7.1)."""
    return hmac.new(key, message, hashlib.sha256).digest()


def key_from_scalar(d):
    return ec.derive_private_key(d, ec.SECP256R1())


def scalar(key):
    return key.private_numbers().private_value


def spki(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rot_id(attestation_spki):
    return sha256(attestation_spki).hex()


def _rfc6979_nonces(d, h1):
    """RFC 6979 section 3.2 with HMAC-SHA-256, for a 256-bit order."""
    x = d.to_bytes(32, "big")
    h = (int.from_bytes(h1, "big") % N).to_bytes(32, "big")
    v = b"\x01" * 32
    k = b"\x00" * 32
    k = hmac.new(k, v + b"\x00" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    k = hmac.new(k, v + b"\x01" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    while True:
        v = hmac.new(k, v, hashlib.sha256).digest()
        candidate = int.from_bytes(v, "big")
        if 1 <= candidate < N:
            yield candidate
        k = hmac.new(k, v + b"\x00", hashlib.sha256).digest()
        v = hmac.new(k, v, hashlib.sha256).digest()


def sign_rs(key, message):
    """ECDSA P-256/SHA-256 over message: (r, s), deterministic, low S."""
    d = scalar(key)
    digest = sha256(message)
    e = int.from_bytes(digest, "big")
    for k in _rfc6979_nonces(d, digest):
        r = key_from_scalar(k).public_key().public_numbers().x % N
        if r == 0:
            continue
        s = pow(k, -1, N) * (e + r * d) % N
        if s == 0:
            continue
        if s > N // 2:
            s = N - s
        return r, s


def sign_der(key, message):
    return encode_dss_signature(*sign_rs(key, message))


def verify_der(public_key, message, signature):
    try:
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        return True
    except Exception:  # noqa: BLE001 - any failure is "does not verify"
        return False


def sign_statement(key, domain, body):
    """A SignedStatement: signature over domain || 0x00 || body."""
    return wire.signed_statement(body, sign_der(key, domain.encode() + b"\x00" + body))


def load_spki(der, what):
    try:
        key = serialization.load_der_public_key(der)
    except Exception as e:  # noqa: BLE001
        raise Refused(9, f"{what} is not a public key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise Refused(9, f"{what} is not a p-256 key")
    return key


def kek(transport_key, ephemeral_spki, kdf):
    """Section 6 steps 1 and 2. Returns (Z, KEK)."""
    ephemeral = load_spki(ephemeral_spki, "hsm ephemeral key")
    z = transport_key.exchange(ec.ECDH(), ephemeral)
    if kdf == KDF_X:
        return z, z
    if kdf == KDF_SHA256:
        return z, sha256(z + (1).to_bytes(4, "big") + SHA256_KDF_SHARED_INFO)
    raise Refused(2, f"unknown kdf {kdf!r}")


def _outer_sequence_len(der):
    if len(der) >= 2 and der[0] == 0x30 and der[1] < 0x80:
        total = 2 + der[1]
    elif len(der) >= 3 and der[0] == 0x30 and der[1] == 0x81:
        total = 3 + der[2]
    elif len(der) >= 4 and der[0] == 0x30 and der[1] == 0x82:
        total = 4 + (der[2] << 8 | der[3])
    else:
        raise Refused(9, "unwrapped bytes do not start with a der sequence")
    if total > len(der):
        raise Refused(9, "unwrapped bytes do not start with a der sequence")
    return total


def unwrap(transport_key, ephemeral_spki, wrapped, kdf):
    """Section 6 steps 1 to 4: the unwrapped P-256 private key."""
    if len(wrapped) > MAX_WRAPPED_LEN:
        raise Refused(9, f"wrapped key of {len(wrapped)} bytes exceeds {MAX_WRAPPED_LEN}")
    _, key_encryption_key = kek(transport_key, ephemeral_spki, kdf)
    try:
        plain = aes_key_unwrap_with_padding(key_encryption_key, wrapped)
    except InvalidUnwrap as e:
        raise Refused(9, "unwrap failed: wrong transport key or corrupted blob") from e
    n = _outer_sequence_len(plain)
    if any(plain[n:]):
        raise Refused(9, "non-zero bytes follow the pkcs#8 key")
    try:
        key = serialization.load_der_private_key(plain[:n], None)
    except Exception as e:  # noqa: BLE001
        raise Refused(9, f"unwrapped bytes are not a pkcs#8 key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise Refused(9, "unwrapped key is not p-256")
    return key


# --- the voucher binding (section 7) ---------------------------------------


def cert_chain_hash(chain):
    h = hashlib.sha256()
    for cert in chain:
        h.update(len(cert).to_bytes(4, "big"))
        h.update(cert)
    return h.digest()


def binding_protected(identity_spki):
    kid = sha256(identity_spki)
    return (
        bytes([0xA3, 0x01, 0x26, 0x03])
        + wire.cbor_text(BINDING_CONTENT_TYPE)
        + bytes([0x04])
        + wire.cbor_bytes(kid)
    )


def sig_structure(protected, payload):
    return (
        bytes([0x84])
        + wire.cbor_text("Signature1")
        + wire.cbor_bytes(protected)
        + wire.cbor_bytes(b"")
        + wire.cbor_bytes(payload)
    )


def make_binding(identity_key, header_bytes):
    identity_spki = spki(identity_key.public_key())
    protected = binding_protected(identity_spki)
    payload = sha256(header_bytes)
    r, s = sign_rs(identity_key, sig_structure(protected, payload))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return (
        bytes([0xD2, 0x84])
        + wire.cbor_bytes(protected)
        + bytes([0xA0])
        + wire.cbor_bytes(payload)
        + wire.cbor_bytes(signature)
    )


def binding_is_mine(identity_key, header_bytes, binding):
    identity_spki = spki(identity_key.public_key())
    protected = binding_protected(identity_spki)
    payload = sha256(header_bytes)
    try:
        item = wire.cbor_decode(binding)
    except wire.CborError:
        return False
    if not (isinstance(item, wire.Tagged) and item.tag == 18 and isinstance(item.value, list)):
        return False
    parts = item.value
    if len(parts) != 4 or parts[0] != protected or parts[1] != {} or parts[2] != payload:
        return False
    sig = parts[3]
    if not isinstance(sig, bytes) or len(sig) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    return verify_der(identity_key.public_key(), sig_structure(protected, payload), der)
