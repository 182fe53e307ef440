#!/usr/bin/env python3
"""A reference Trustline device, written from docs/device-protocol.md alone.

It plays a device's root of trust behind the framed device protocol, over
stdin/stdout (the station's `exec:` link) or a serial port / pseudo-terminal
(`serial:`), keeping its state in a directory so that one process per step
sequence (or per step) works. See README.md for the command line, the fault
switches and how a test sets up the IC-vendor CA.
"""

import argparse
import datetime
import json
import os
import select
import sys
import time
import tty

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import rotcrypto as rc
import wire
from rotcrypto import Refused

PROTOCOL_VERSION = 1
USER_AREA_LEN = 4096
MAX_CHALLENGE = 256
MAX_ANCHOR = 16384
MAX_CHAIN = 8
MAX_FDO_HEADER = 4096
FDO_VERSION = 101
DEFAULT_FIRMWARE = rc.sha256(b"trustline simulated firmware 1.0")

# DeviceLifecycle.
BLANK, CLAIMED, PERSONALISED, IN_SERVICE, DECOMMISSIONED, RETIRED = 1, 2, 3, 4, 5, 6
LIFECYCLE_NAMES = {1: "blank", 2: "claimed", 3: "personalised", 4: "in service",
                   5: "decommissioned", 6: "retired"}

# ErrorCode.
MALFORMED, UNSUPPORTED, PROTOCOL, INVALID_ARGUMENT = 1, 2, 3, 4
ALREADY_CLAIMED, NOT_CLAIMED, ALREADY_PERSONALISED, NOT_PERSONALISED = 5, 6, 7, 8
KEY_DELIVERY_FAILED, KEY_MISMATCH, WRONG_CERTIFICATION, ILLEGAL_TRANSITION = 9, 10, 11, 12
INTERNAL = 13

STEPS = {
    2: "hello", 3: "status", 4: "read-attestation", 5: "claim", 6: "lock-readout",
    7: "generate-key", 8: "install-wrapped-key", 9: "prove-possession",
    10: "store-certification", 11: "identity-proof", 12: "user-reset",
    13: "enter-service", 14: "decommission", 15: "recommission", 16: "retire",
    17: "fdo-header-hmac",
}
ERROR_FIELD = 100

# Lifecycle steps: allowed source states and the state after.
TRANSITIONS = {
    "decommission": ({IN_SERVICE}, DECOMMISSIONED),
    "recommission": ({DECOMMISSIONED}, IN_SERVICE),
    "retire": ({PERSONALISED, IN_SERVICE, DECOMMISSIONED}, RETIRED),
}

EXIT_FRAMING = 3
EXIT_DIED = 75


def log(msg):
    print(f"reference-device: {msg}", file=sys.stderr, flush=True)


# --- state -------------------------------------------------------------------


class State:
    """The device's non-volatile memory: one JSON file, replaced atomically
    (written, fsync'd, renamed) before any answer that reports a change."""

    def __init__(self, directory):
        self.dir = directory
        self.path = os.path.join(directory, "state.json")
        with open(self.path) as f:
            self.s = json.load(f)

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.s, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def key(self, name):
        value = self.s.get(name)
        return rc.key_from_scalar(int(value, 16)) if value else None

    def hex(self, name):
        value = self.s.get(name)
        return bytes.fromhex(value) if value is not None else None


# --- the device --------------------------------------------------------------


class Device:
    def __init__(self, state, faults):
        self.st = state
        self.faults = faults
        self.version = None
        self.step_name = None

    # Keys. A "wrong-key-at" fault signs this step with a stranger's key.
    def _signer(self, name):
        if self.step_name in self.faults.get("wrong-key-at", ()):
            log(f"fault: signing {self.step_name} with the wrong key")
            return ec.generate_private_key(ec.SECP256R1())
        return self.st.key(name)

    @property
    def rot_id(self):
        return self.st.s["rot_id"]

    def lifecycle(self):
        return self.st.s["lifecycle"]

    def identity(self):
        key = self.st.key("identity_key")
        if key is None:
            raise Refused(NOT_PERSONALISED, "root of trust holds no identity key")
        return key

    # One request body -> one response body.
    def handle(self, body):
        try:
            fields = wire.parse(body)
            rid = wire.get_uint(fields, 1)
        except wire.DecodeError as e:
            return self.error(0, MALFORMED, f"request does not decode: {e}")
        step = [n for n in fields if n in STEPS]
        if len(step) != 1:
            return self.error(rid, UNSUPPORTED, "the request names no step this device knows")
        num = step[0]
        self.step_name = STEPS[num]
        try:
            arg = wire.parse(wire.get_bytes(fields, num))
            if num == 2:
                return self.respond(rid, 2, self.hello(arg))
            if self.version is None:
                return self.error(rid, PROTOCOL, "hello must come first")
            handler = getattr(self, "step_" + self.step_name.replace("-", "_"))
            return self.respond(rid, num, handler(arg))
        except wire.DecodeError as e:
            return self.error(rid, MALFORMED, f"request does not decode: {e}")
        except Refused as e:
            return self.error(rid, e.code, e.reason)
        except OSError as e:
            return self.error(rid, INTERNAL, f"storage failed: {e}")

    def respond(self, rid, num, payload):
        return wire.Msg().uint(1, rid).message(num, payload).done()

    def error(self, rid, code, reason):
        err = wire.Msg().uint(1, code).string(2, reason.encode()[:256].decode(errors="ignore")).done()
        return wire.Msg().uint(1, rid).message(ERROR_FIELD, err).done()

    # --- steps ---

    def hello(self, arg):
        versions = wire.get_repeated_uint(arg, 1)
        if PROTOCOL_VERSION not in versions:
            self.version = None
            raise Refused(PROTOCOL, f"this device speaks protocol version {PROTOCOL_VERSION} only")
        self.version = PROTOCOL_VERSION
        return (wire.Msg().uint(1, PROTOCOL_VERSION).packed(2, sorted(STEPS))
                .repeated_string(3, list(rc.KDFS)).uint(4, wire.MAX_FRAME_LEN)
                .string(5, "trustline reference device (python) 1.0").done())

    def step_status(self, _arg):
        s = self.st.s
        return (wire.Msg().string(1, self.rot_id).uint(2, s["lifecycle"])
                .boolean(3, s["readout_locked"]).bytes(4, self.st.hex("firmware_sha256"))
                .message(5, self.st.hex("claim_receipt")).message(6, self.st.hex("key_attestation"))
                .uint(7, s["reset_counter"]).boolean(8, bool(s.get("cert_chain"))).done())

    def step_read_attestation(self, _arg):
        s = self.st.s
        att = wire.Msg()
        for cert in s["chain"]:
            att.out += wire.Msg().bytes(1, bytes.fromhex(cert)).done()
        att.message(2, self.st.hex("transport_statement"))
        return wire.Msg().message(1, att.done()).done()

    def _challenge(self, arg, num, what="challenge"):
        c = wire.get_bytes(arg, num)
        if not 1 <= len(c) <= MAX_CHALLENGE:
            raise Refused(INVALID_ARGUMENT, f"{what} must be 1 to {MAX_CHALLENGE} bytes")
        return c

    def step_claim(self, arg):
        nonce = self._challenge(arg, 1, "nonce")
        anchor = wire.get_bytes(arg, 2)
        if not 1 <= len(anchor) <= MAX_ANCHOR:
            raise Refused(INVALID_ARGUMENT, f"trust anchor must be 1 to {MAX_ANCHOR} bytes")
        if self.st.s.get("anchor") is not None:
            raise Refused(ALREADY_CLAIMED, "root of trust is already claimed")
        body = (wire.Msg().string(1, self.rot_id).bytes(2, nonce)
                .bytes(3, rc.sha256(anchor)).done())
        receipt = rc.sign_statement(self._signer("attestation_key"), "trustline.v1.ClaimReceipt", body)
        self.st.s.update(anchor=anchor.hex(), claim_receipt=receipt.hex(), lifecycle=CLAIMED)
        self.st.save()
        return wire.Msg().message(1, receipt).done()

    def step_lock_readout(self, _arg):
        if "lock-fails" in self.faults.get("flags", ()):
            log("fault: the readout lock does not take")
        else:
            self.st.s["readout_locked"] = True
            self.st.save()
        return wire.Msg().boolean(1, self.st.s["readout_locked"]).done()

    def _ready_to_personalise(self, challenge_arg, num):
        challenge = self._challenge(challenge_arg, num)
        if self.st.s.get("anchor") is None:
            raise Refused(NOT_CLAIMED, "root of trust is not claimed")
        if self.st.s.get("identity_key"):
            raise Refused(ALREADY_PERSONALISED, "root of trust already holds an identity key")
        if self.lifecycle() != CLAIMED:
            raise Refused(ILLEGAL_TRANSITION,
                          f"cannot personalise a device that is {LIFECYCLE_NAMES[self.lifecycle()]}")
        return challenge

    def _personalise(self, key, mode, challenge):
        s = self.st.s
        body = (wire.Msg().string(1, self.rot_id).bytes(2, rc.spki(key.public_key()))
                .bytes(3, challenge).bytes(4, self.st.hex("firmware_sha256"))
                .boolean(5, s["readout_locked"]).bytes(6, rc.sha256(self.st.hex("anchor")))
                .uint(7, mode).done())
        attestation = rc.sign_statement(self._signer("attestation_key"),
                                        "trustline.v1.KeyAttestation", body)
        # The FDO device secret (section 7.1) is made with the identity key and
        # never leaves the device.
        fdo_secret = s.pop("next_fdo_hmac_secret", None) or os.urandom(32).hex()
        s.update(identity_key=format(rc.scalar(key), "064x"), mode=mode,
                 key_attestation=attestation.hex(), lifecycle=PERSONALISED,
                 fdo_hmac_secret=fdo_secret)
        s.pop("next_identity_key", None)
        self.st.save()
        return wire.Msg().message(1, attestation).done()

    def step_generate_key(self, arg):
        challenge = self._ready_to_personalise(arg, 1)
        key = self.st.key("next_identity_key") or ec.generate_private_key(ec.SECP256R1())
        return self._personalise(key, 1, challenge)

    def step_install_wrapped_key(self, arg):
        kdf = wire.get_string(arg, 4)
        if kdf not in rc.KDFS:
            raise Refused(UNSUPPORTED, f"unknown kdf {kdf!r}")
        challenge = self._ready_to_personalise(arg, 5)
        key = rc.unwrap(self.st.key("transport_key"), wire.get_bytes(arg, 2),
                        wire.get_bytes(arg, 3), kdf)
        if rc.spki(key.public_key()) != wire.get_bytes(arg, 1):
            raise Refused(KEY_MISMATCH, "unwrapped key does not match the announced device public key")
        return self._personalise(key, 2, challenge)

    def step_prove_possession(self, arg):
        serial = wire.get_string(arg, 1)
        challenge = self._challenge(arg, 2)
        if not 1 <= len(serial) <= 64 or not all(0x21 <= ord(c) <= 0x7E for c in serial):
            raise Refused(INVALID_ARGUMENT, "serial must be 1 to 64 printable ascii characters")
        identity = self.identity()
        body = (wire.Msg().string(1, self.rot_id).string(2, serial)
                .bytes(3, rc.spki(identity.public_key())).bytes(4, challenge).done())
        proof = rc.sign_statement(self._signer("identity_key"), "trustline.v1.ProofOfPossession", body)
        return wire.Msg().message(1, proof).done()

    def step_store_certification(self, arg):
        identity = self.identity()
        chain = wire.get_repeated_bytes(arg, 1)
        voucher = wire.get_bytes(arg, 2)
        if not 1 <= len(chain) <= MAX_CHAIN:
            raise Refused(INVALID_ARGUMENT, f"certificate chain must hold 1 to {MAX_CHAIN} certificates")
        try:
            leaf = x509.load_der_x509_certificate(chain[0])
            leaf_spki = rc.spki(leaf.public_key())
        except Exception as e:  # noqa: BLE001
            raise Refused(WRONG_CERTIFICATION, f"leaf does not parse: {e}") from e
        if leaf_spki != rc.spki(identity.public_key()):
            raise Refused(WRONG_CERTIFICATION, "leaf certificate names another key")
        header_bytes, binding, entries = parse_voucher(voucher)
        header = wire.cbor_decode(header_bytes)
        if header[2] != self.rot_id:
            raise Refused(WRONG_CERTIFICATION, "voucher names another device")
        if header[4] != rc.cert_chain_hash(chain):
            raise Refused(WRONG_CERTIFICATION, "voucher names another certificate chain")
        if binding is None:
            binding = rc.make_binding(self._signer("identity_key"), header_bytes)
        elif not rc.binding_is_mine(identity, header_bytes, binding):
            raise Refused(WRONG_CERTIFICATION, "voucher device binding does not verify")
        bound = encode_voucher(header_bytes, binding, entries)
        self.st.s.update(cert_chain=[c.hex() for c in chain], voucher=bound.hex())
        self.st.save()
        return wire.Msg().bytes(1, bound).done()

    def step_identity_proof(self, arg):
        challenge = self._challenge(arg, 1)
        self.identity()
        body = wire.Msg().string(1, self.rot_id).bytes(2, challenge).done()
        proof = rc.sign_statement(self._signer("identity_key"), "trustline.v1.IdentityProof", body)
        return wire.Msg().message(1, proof).done()

    def _reset(self, arg, step):
        challenge = self._challenge(arg, 1)
        state = self.lifecycle()
        if step is not None:
            allowed, after = TRANSITIONS[step]
            if state not in allowed:
                raise Refused(ILLEGAL_TRANSITION, f"cannot {step} a device that is {LIFECYCLE_NAMES[state]}")
            state = after
        self.identity()
        s = self.st.s
        user_area = b"\xff" * USER_AREA_LEN
        s.update(user_area=user_area.hex(), reset_counter=s["reset_counter"] + 1, lifecycle=state)
        body = (wire.Msg().string(1, self.rot_id).bytes(2, challenge).uint(3, s["reset_counter"])
                .bytes(4, rc.sha256(user_area)).uint(5, state).done())
        proof = rc.sign_statement(self._signer("identity_key"), "trustline.v1.ResetProof", body)
        self.st.save()
        return wire.Msg().message(1, proof).done()

    def step_user_reset(self, arg):
        return self._reset(arg, None)

    def step_decommission(self, arg):
        return self._reset(arg, "decommission")

    def step_recommission(self, arg):
        return self._reset(arg, "recommission")

    def step_retire(self, arg):
        return self._reset(arg, "retire")

    def step_fdo_header_hmac(self, arg):
        """Section 7.1: HMAC-SHA256 with the FDO device secret over an FDO
        header that describes this device's stored certification."""
        ov_header = wire.get_bytes(arg, 1)
        if not 1 <= len(ov_header) <= MAX_FDO_HEADER:
            raise Refused(INVALID_ARGUMENT, f"ov_header must be 1 to {MAX_FDO_HEADER} bytes")
        self.identity()
        s = self.st.s
        secret = self.st.hex("fdo_hmac_secret")
        if secret is None:
            raise Refused(NOT_PERSONALISED, "root of trust holds no fdo device secret")
        if not s.get("cert_chain") or not s.get("voucher"):
            raise Refused(WRONG_CERTIFICATION, "the device is not certified")
        guid, manufacturer_spki, chain_hash = parse_fdo_header(ov_header)
        header = wire.cbor_decode(parse_voucher(self.st.hex("voucher"))[0])
        if guid != header[1] or manufacturer_spki != header[5]:
            raise Refused(WRONG_CERTIFICATION, "the fdo header names another voucher")
        chain = [bytes.fromhex(c) for c in s["cert_chain"]]
        if chain_hash != rc.sha256(b"".join(chain)):
            raise Refused(WRONG_CERTIFICATION, "the fdo header names another certificate chain")
        digest = rc.sha256(ov_header)
        bound = self.st.hex("fdo_header_sha256")
        if bound is not None and bound != digest:
            raise Refused(WRONG_CERTIFICATION, "another fdo header is already bound")
        mac = rc.hmac_sha256(secret, ov_header)
        if bound is None:
            s["fdo_header_sha256"] = digest.hex()
            self.st.save()
        return wire.Msg().bytes(1, mac).done()

    def step_enter_service(self, _arg):
        if self.lifecycle() != PERSONALISED:
            raise Refused(ILLEGAL_TRANSITION,
                          f"cannot enter service a device that is {LIFECYCLE_NAMES[self.lifecycle()]}")
        self.st.s["lifecycle"] = IN_SERVICE
        self.st.save()
        return wire.Msg().uint(1, IN_SERVICE).done()


def parse_voucher(voucher):
    """Section 7: (header bytes, binding bytes or None, entries)."""
    bad = Refused(WRONG_CERTIFICATION, "voucher does not parse")
    try:
        v = wire.cbor_decode(voucher)
        if not (isinstance(v, list) and len(v) == 4 and v[0] == 1 and isinstance(v[1], bytes)
                and (v[2] is wire.NULL or isinstance(v[2], bytes)) and isinstance(v[3], list)
                and all(isinstance(e, bytes) for e in v[3])):
            raise bad
        h = wire.cbor_decode(v[1])
        if not (isinstance(h, list) and len(h) == 6 and h[0] == 1 and isinstance(h[1], bytes)
                and len(h[1]) == 16 and isinstance(h[2], str) and isinstance(h[3], str)
                and isinstance(h[4], bytes) and len(h[4]) == 32 and isinstance(h[5], bytes)):
            raise bad
    except wire.CborError as e:
        raise Refused(WRONG_CERTIFICATION, f"voucher does not parse: {e}") from e
    binding = None if v[2] is wire.NULL else v[2]
    if encode_voucher(v[1], binding, v[3]) != voucher:
        raise Refused(WRONG_CERTIFICATION, "voucher is not in canonical form")
    return v[1], binding, v[3]


def parse_fdo_header(ov_header):
    """Section 7.1: (guid, manufacturer SPKI, chain hash) of an FDO OVHeader
    in its one canonical encoding, or WRONG_CERTIFICATION."""
    bad = Refused(WRONG_CERTIFICATION, "the fdo header does not parse")
    try:
        h = wire.cbor_decode(ov_header)
    except wire.CborError as e:
        raise Refused(WRONG_CERTIFICATION, f"the fdo header does not parse: {e}") from e

    def rv_ok(rv):
        return (isinstance(rv, list) and rv and all(
            isinstance(d, list) and d and all(
                isinstance(i, list) and len(i) in (1, 2) and isinstance(i[0], int) and 0 <= i[0] <= 15
                and (len(i) == 1 or isinstance(i[1], bytes)) for i in d) for d in rv))

    if not (isinstance(h, list) and len(h) == 6 and h[0] == FDO_VERSION
            and isinstance(h[1], bytes) and len(h[1]) == 16 and rv_ok(h[2])
            and isinstance(h[3], str)
            and isinstance(h[4], list) and len(h[4]) == 3 and h[4][0] == 10 and h[4][1] == 1
            and isinstance(h[4][2], bytes)
            and isinstance(h[5], list) and len(h[5]) == 2 and h[5][0] == -16
            and isinstance(h[5][1], bytes) and len(h[5][1]) == 32):
        raise bad
    if encode_fdo_header(h) != ov_header:
        raise Refused(WRONG_CERTIFICATION, "the fdo header is not in canonical form")
    return h[1], h[4][2], h[5][1]


def _cbor_int(n):
    return wire.cbor_head(0, n) if n >= 0 else wire.cbor_head(1, -1 - n)


def encode_fdo_header(h):
    out = wire.cbor_head(4, 6) + _cbor_int(h[0]) + wire.cbor_bytes(h[1])
    out += wire.cbor_head(4, len(h[2]))
    for directive in h[2]:
        out += wire.cbor_head(4, len(directive))
        for instr in directive:
            out += wire.cbor_head(4, len(instr)) + _cbor_int(instr[0])
            out += wire.cbor_bytes(instr[1]) if len(instr) == 2 else b""
    out += wire.cbor_text(h[3])
    out += wire.cbor_head(4, 3) + _cbor_int(h[4][0]) + _cbor_int(h[4][1]) + wire.cbor_bytes(h[4][2])
    out += wire.cbor_head(4, 2) + _cbor_int(h[5][0]) + wire.cbor_bytes(h[5][1])
    return out


def encode_voucher(header_bytes, binding, entries):
    out = wire.cbor_head(4, 4) + wire.cbor_head(0, 1) + wire.cbor_bytes(header_bytes)
    out += wire.cbor_bytes(binding) if binding is not None else b"\xf6"
    out += wire.cbor_head(4, len(entries)) + b"".join(wire.cbor_bytes(e) for e in entries)
    return out


# --- links -------------------------------------------------------------------


class FdLink:
    """Frames over file descriptors (stdin/stdout, or one serial fd)."""

    def __init__(self, rfd, wfd):
        self.rfd, self.wfd = rfd, wfd

    def read_exact(self, n):
        out = bytearray()
        while len(out) < n:
            try:
                chunk = os.read(self.rfd, n - len(out))
            except OSError:  # a pty whose other end closed
                chunk = b""
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def write(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def drain_until_idle(self, idle_s=0.2):
        while select.select([self.rfd], [], [], idle_s)[0]:
            try:
                if not os.read(self.rfd, 4096):
                    return
            except OSError:
                return


def parse_faults(specs):
    faults = {"flags": set()}
    for spec in specs:
        name, _, value = spec.partition("=")
        if name in ("die-at", "garbage-at", "wrong-key-at"):
            faults.setdefault(name, set()).add(value)
        elif name == "slow-at":
            step, _, seconds = value.partition(":")
            faults.setdefault("slow-at", {})[step] = float(seconds or 10)
        elif name == "lock-fails":
            faults["flags"].add("lock-fails")
        else:
            raise SystemExit(f"unknown fault {spec!r}")
        for step in [value.partition(":")[0]] if value else []:
            if step not in STEPS.values():
                raise SystemExit(f"unknown step {step!r} in fault {spec!r}")
    return faults


def step_of(body):
    try:
        fields = wire.parse(body)
    except wire.DecodeError:
        return None
    names = [STEPS[n] for n in fields if n in STEPS]
    return names[0] if len(names) == 1 else None


def serve(device, link, serial):
    """Answers frames until the stream ends. Returns the exit status."""
    faults = device.faults
    while True:
        try:
            body = wire.read_frame(link.read_exact)
        except wire.FrameError as e:
            log(f"framing error: {e}")
            try:
                link.write(wire.frame(device.error(0, MALFORMED, str(e))))
            except OSError:
                pass
            if not serial:
                return EXIT_FRAMING
            link.drain_until_idle()
            device.version = None
            continue
        if body is None:
            return 0
        step = step_of(body)
        if step in faults.get("die-at", ()):
            log(f"fault: dying at {step}")
            os._exit(EXIT_DIED)
        if step in faults.get("slow-at", {}):
            log(f"fault: answering {step} slowly")
            time.sleep(faults["slow-at"][step])
        if step in faults.get("garbage-at", ()):
            log(f"fault: answering {step} with garbage")
            link.write(b"\xde\xad\xbe\xef garbage, not a frame \x00\x01")
            continue
        link.write(wire.frame(device.handle(body)))


def open_serial(path, baud):
    import termios

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, f"B{baud}", None)
    if speed is None:
        raise SystemExit(f"unsupported baud rate {baud}")
    attrs[4] = attrs[5] = speed
    attrs[2] &= ~(termios.CRTSCTS | termios.PARENB | termios.CSTOPB)
    attrs[2] |= termios.CS8 | termios.CLOCAL | termios.CREAD
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


# --- manufacture: vendor CA and dies -------------------------------------------


def _name(org, cn, serial=None):
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
             x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    return x509.Name(attrs)


def _write_pem(path, data, private=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ca_cert(subject, issuer, public_key, signing_key, path_len):
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    end = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                              critical=True))
    return builder.sign(signing_key, hashes.SHA256())


def cmd_vendor_ca(args):
    os.makedirs(args.out, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(args.name, f"{args.name} Root CA")
    root = _ca_cert(root_name, root_name, root_key.public_key(), root_key, None)
    _write_pem(os.path.join(args.out, "vendor-key.pem"), _key_pem(root_key), private=True)
    _write_pem(os.path.join(args.out, "vendor-cert.pem"), root.public_bytes(serialization.Encoding.PEM))
    if args.intermediate:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _ca_cert(_name(args.name, f"{args.name} RoT Issuing CA"), root_name,
                        key.public_key(), root_key, 0)
        _write_pem(os.path.join(args.out, "issuing-key.pem"), _key_pem(key), private=True)
        _write_pem(os.path.join(args.out, "issuing-cert.pem"), cert.public_bytes(serialization.Encoding.PEM))
    print(os.path.join(args.out, "vendor-cert.pem"))
    return 0


def _load_key(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SystemExit(f"{path}: not a p-256 private key")
    return key


def cmd_init(args):
    if os.path.exists(os.path.join(args.state, "state.json")) and not args.force:
        raise SystemExit(f"{args.state} already holds a device (use --force to replace it)")
    os.makedirs(args.state, exist_ok=True)
    issuer_key = _load_key(args.vendor_key)
    with open(args.vendor_cert, "rb") as f:
        issuer = x509.load_pem_x509_certificate(f.read())
    attestation = _load_key(args.attestation_key) if args.attestation_key else ec.generate_private_key(ec.SECP256R1())
    transport = _load_key(args.transport_key) if args.transport_key else ec.generate_private_key(ec.SECP256R1())
    org = issuer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    org = org[0].value if org else "Reference Silicon"
    chip_serial = args.chip_serial or "REF-" + os.urandom(5).hex().upper()
    die = (x509.CertificateBuilder()
           .subject_name(_name(org, f"{org} RoT attestation key", chip_serial))
           .issuer_name(issuer.subject).public_key(attestation.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
           .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc))
           .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
           .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                          critical=True)
           .sign(issuer_key, hashes.SHA256()))
    chain = [die.public_bytes(serialization.Encoding.DER)]
    if issuer.subject != issuer.issuer:  # an intermediate travels in the chain
        chain.append(issuer.public_bytes(serialization.Encoding.DER))
    attestation_spki = rc.spki(attestation.public_key())
    rid = rc.rot_id(attestation_spki)
    statement = rc.sign_statement(
        attestation, "trustline.v1.TransportKeyStatement",
        wire.Msg().string(1, rid).bytes(2, rc.spki(transport.public_key())).done())
    state = {
        "rot_id": rid,
        "chip_serial": chip_serial,
        "attestation_key": format(rc.scalar(attestation), "064x"),
        "transport_key": format(rc.scalar(transport), "064x"),
        "chain": [c.hex() for c in chain],
        "transport_statement": statement.hex(),
        "firmware_sha256": args.firmware_sha256 or DEFAULT_FIRMWARE.hex(),
        "readout_locked": False,
        "anchor": None,
        "claim_receipt": None,
        "identity_key": None,
        "key_attestation": None,
        "cert_chain": [],
        "voucher": None,
        "user_area": (b"\xff" * USER_AREA_LEN).hex(),
        "reset_counter": 0,
        "lifecycle": BLANK,
        "faults": args.fault or [],
    }
    if args.identity_key:
        state["next_identity_key"] = format(rc.scalar(_load_key(args.identity_key)), "064x")
    if args.fdo_hmac_secret:
        secret = bytes.fromhex(args.fdo_hmac_secret)
        if len(secret) != 32:
            raise SystemExit("--fdo-hmac-secret must be 32 bytes of hex")
        state["next_fdo_hmac_secret"] = secret.hex()
    st = State.__new__(State)
    st.dir, st.path, st.s = args.state, os.path.join(args.state, "state.json"), state
    st.save()
    print(rid)
    return 0


def cmd_serve(args):
    state = State(args.state)
    faults = parse_faults(list(state.s.get("faults", [])) + (args.fault or []))
    device = Device(state, faults)
    if args.pty:
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        # Keep the slave open too, so the master does not hang up between
        # station sessions.
        print(os.ttyname(slave), flush=True)
        return serve_serial_forever(device, FdLink(master, master))
    if args.serial:
        fd = open_serial(args.serial, args.baud)
        return serve_serial_forever(device, FdLink(fd, fd))
    return serve(device, FdLink(sys.stdin.fileno(), sys.stdout.fileno()), serial=False)


def serve_serial_forever(device, link):
    while True:
        serve(device, link, serial=True)
        # The other end went away: wait for it to come back.
        time.sleep(0.05)


def main(argv=None):
    p = argparse.ArgumentParser(prog="device.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("vendor-ca", help="make an IC-vendor CA (key and self-signed certificate)")
    v.add_argument("--out", required=True)
    v.add_argument("--name", default="Reference Silicon")
    v.add_argument("--intermediate", action="store_true",
                   help="also make an issuing intermediate (issuing-key.pem, issuing-cert.pem)")
    i = sub.add_parser("init", help="manufacture a blank die into a state directory; prints its rot_id")
    i.add_argument("--state", required=True)
    i.add_argument("--vendor-key", required=True, help="PEM key of the CA that certifies the die")
    i.add_argument("--vendor-cert", required=True, help="PEM certificate of that CA")
    i.add_argument("--attestation-key", help="PEM: use this attestation key (test vectors)")
    i.add_argument("--transport-key", help="PEM: use this transport key (test vectors)")
    i.add_argument("--identity-key", help="PEM: the key on-device generation yields (test vectors)")
    i.add_argument("--fdo-hmac-secret", help="hex: the FDO device secret personalisation yields (test vectors)")
    i.add_argument("--firmware-sha256", help="hex digest the die reports as measured")
    i.add_argument("--chip-serial")
    i.add_argument("--fault", action="append", help="a fault stored with the device (see README)")
    i.add_argument("--force", action="store_true")
    s = sub.add_parser("serve", help="speak the device protocol (stdin/stdout unless --serial/--pty)")
    s.add_argument("--state", required=True)
    s.add_argument("--serial", help="serial device path")
    s.add_argument("--baud", type=int, default=115200)
    s.add_argument("--pty", action="store_true", help="open a pseudo-terminal pair and print its path")
    s.add_argument("--fault", action="append", help="die-at=STEP, garbage-at=STEP, slow-at=STEP:SECONDS, "
                   "wrong-key-at=STEP, lock-fails")
    args = p.parse_args(argv)
    return {"vendor-ca": cmd_vendor_ca, "init": cmd_init, "serve": cmd_serve}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
