#!/usr/bin/env python3
"""Checks the reference device against the test vectors of
docs/device-protocol.md: it manufactures the vectors' die from their fixed
keys, drives it through the framed protocol over stdin/stdout (and once over
a pseudo-terminal), and compares every answer with the document byte for
byte. Prints one line per check and `N passed, M failed`; exits non-zero on
any failure."""

import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cryptography.hazmat.primitives import serialization  # noqa: E402

import rotcrypto as rc  # noqa: E402
import wire  # noqa: E402

DOC = os.path.join(HERE, "..", "docs", "device-protocol.md")
RESULTS = []


def vectors(path):
    """The `name: value` entries of every ```test-vectors block."""
    out, name, in_block = {}, None, False
    with open(path) as f:
        for line in f.read().splitlines():
            if not in_block:
                in_block = line.rstrip() == "```test-vectors"
                continue
            if line.rstrip() == "```":
                in_block, name = False, None
                continue
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.startswith("  ") and name:
                out[name] += bytes.fromhex(line.strip())
                continue
            name, _, value = line.partition(":")
            value = value.strip()
            m = re.fullmatch(r'"(.*)"', value)
            if m:
                out[name], name = m.group(1).encode(), None
            else:
                out[name] = bytes.fromhex(value)
    return out


def check(what, ok, detail=""):
    RESULTS.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {what}{'' if ok else ': ' + detail}", flush=True)


def same(what, got, want):
    check(what, got == want, f"\n  got  {got.hex() if isinstance(got, bytes) else got}\n"
          f"  want {want.hex() if isinstance(want, bytes) else want}")


def pem_file(directory, name, d):
    key = rc.key_from_scalar(int.from_bytes(d, "big"))
    path = os.path.join(directory, name + ".pem")
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return path


class Exec:
    """One `serve` process on stdin/stdout."""

    def __init__(self, state, *faults):
        args = [sys.executable, os.path.join(HERE, "device.py"), "serve", "--state", state]
        for fault in faults:
            args += ["--fault", fault]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.next_id = 100

    def frame(self, frame_bytes):
        """Sends a whole frame; returns the whole answer frame."""
        self.p.stdin.write(frame_bytes)
        self.p.stdin.flush()
        header = self.p.stdout.read(4)
        if len(header) < 4:
            return header
        return header + self.p.stdout.read(int.from_bytes(header, "big"))

    def request(self, num, payload=b""):
        self.next_id += 1
        body = wire.Msg().uint(1, self.next_id).message(num, payload).done()
        answer = self.frame(wire.frame(body))
        fields = wire.parse(answer[4:])
        assert wire.get_uint(fields, 1) == self.next_id, "answer names another request"
        return fields

    def close(self):
        self.p.stdin.close()
        code = self.p.wait(timeout=10)
        self.p.stdout.close()
        self.p.stderr.close()
        return code


def hello(dev):
    return dev.request(2, wire.Msg().packed(1, [1]).done())


def statement(fields, num):
    """The SignedStatement field 1 of answer `num`."""
    return wire.get_bytes(wire.parse(wire.get_bytes(fields, num)), 1)


def main():
    v = vectors(DOC)
    tmp = tempfile.mkdtemp(prefix="trustline-refdev-")
    device_py = os.path.join(HERE, "device.py")
    run = lambda *a: subprocess.run([sys.executable, device_py, *a], check=True,  # noqa: E731
                                    capture_output=True, text=True).stdout.strip()
    ca = os.path.join(tmp, "ca")
    run("vendor-ca", "--out", ca, "--name", "Vector Silicon")
    keys = {n: pem_file(tmp, n, v["input.key." + n]) for n in
            ("attestation", "transport", "identity-on-device")}

    def die(name, *faults):
        state = os.path.join(tmp, name)
        args = ["init", "--state", state, "--vendor-key", os.path.join(ca, "vendor-key.pem"),
                "--vendor-cert", os.path.join(ca, "vendor-cert.pem"),
                "--attestation-key", keys["attestation"], "--transport-key", keys["transport"],
                "--identity-key", keys["identity-on-device"],
                "--fdo-hmac-secret", v["input.fdo-hmac-secret"].hex(),
                "--firmware-sha256", v["input.firmware-sha256"].hex()]
        for fault in faults:
            args += ["--fault", fault]
        return state, run(*args)

    # Identity and the transport-key statement.
    state, rid = die("on-device")
    same("rot_id", rid.encode(), v["rot-id"])
    dev = Exec(state)
    before = dev.request(3)
    check("a request before hello is refused with PROTOCOL",
          wire.get_uint(wire.parse(wire.get_bytes(before, 100)), 1) == 3)
    answer = dev.frame(v["frame.hello.request"])
    h = wire.parse(wire.get_bytes(wire.parse(answer[4:]), 2))
    check("hello answers version 1 and every step",
          wire.get_uint(h, 1) == 1 and wire.get_repeated_uint(h, 2) == list(range(2, 18)))
    att = wire.parse(wire.get_bytes(dev.request(4), 4))
    att = wire.parse(wire.get_bytes(att, 1))
    same("transport-key statement", wire.get_bytes(att, 2), v["transport-key.signed-statement"])
    check("attestation chain is the die certificate", len(wire.get_repeated_bytes(att, 1)) == 1)

    # Claim: the exact frames.
    same("claim response frame", dev.frame(v["frame.claim.request"]), v["frame.claim.response"])
    again = wire.parse(dev.frame(v["frame.claim-again.request"])[4:])
    want = wire.parse(v["frame.claim-again.response"][4:])
    same("second claim refused with ALREADY_CLAIMED",
         wire.get_uint(wire.parse(wire.get_bytes(again, 100)), 1),
         wire.get_uint(wire.parse(wire.get_bytes(want, 100)), 1))

    # On-device personalisation, proofs, voucher.
    dev.request(6)
    nonce = v["input.nonce"]
    ka = dev.request(7, wire.Msg().bytes(1, nonce).done())
    same("key attestation (on-device)", statement(ka, 7), v["key-attestation-on-device.signed-statement"])
    pop = dev.request(9, wire.Msg().string(1, v["input.serial"].decode()).bytes(2, nonce).done())
    same("proof of possession", statement(pop, 9), v["proof-of-possession.signed-statement"])
    code = dev.close()
    check("exec session ends with status 0", code == 0, f"status {code}")

    # A second process continues from the state directory.
    dev = Exec(state)
    hello(dev)
    store = wire.Msg().bytes(1, v["input.device-certificate"]).bytes(2, v["voucher.unbound"]).done()
    bound = wire.get_bytes(wire.parse(wire.get_bytes(dev.request(10, store), 10)), 1)
    same("bound voucher", bound, v["voucher.bound"])
    store = wire.Msg().bytes(1, v["input.device-certificate"]).bytes(2, bound).done()
    again = wire.get_bytes(wire.parse(wire.get_bytes(dev.request(10, store), 10)), 1)
    same("storing the bound voucher again returns it unchanged", again, v["voucher.bound"])

    # The FDO header HMAC (section 7.1): the exact frames, a repeat, refusals.
    wrong_guid = bytearray(v["fdo.ov-header"])
    wrong_guid[4] ^= 1
    got = wire.parse(wire.get_bytes(dev.request(17, wire.Msg().bytes(1, bytes(wrong_guid)).done()), 100))
    check("an fdo header naming another guid is WRONG_CERTIFICATION", wire.get_uint(got, 1) == 11)
    same("fdo header hmac response frame", dev.frame(v["frame.fdo-header-hmac.request"]),
         v["frame.fdo-header-hmac.response"])
    mac = wire.get_bytes(wire.parse(wire.get_bytes(dev.request(17, wire.Msg().bytes(1, v["fdo.ov-header"]).done()), 17)), 1)
    same("the same fdo header again gets the same hmac", mac, v["fdo.header-hmac"])
    other = v["fdo.ov-header"].replace(v["input.fdo-device-info"], v["input.fdo-device-info"].upper())
    got = wire.parse(wire.get_bytes(dev.request(17, wire.Msg().bytes(1, other).done()), 100))
    check("a second, different fdo header is WRONG_CERTIFICATION", wire.get_uint(got, 1) == 11)
    got = wire.parse(wire.get_bytes(dev.request(17, wire.Msg().bytes(1, b"").done()), 100))
    check("an empty fdo header is INVALID_ARGUMENT", wire.get_uint(got, 1) == 4)
    challenge = v["input.field-challenge"]
    ip = dev.request(11, wire.Msg().bytes(1, challenge).done())
    same("identity proof", statement(ip, 11), v["identity-proof.signed-statement"])
    reset = dev.request(12, wire.Msg().bytes(1, challenge).done())
    same("reset proof (user reset)", statement(reset, 12), v["reset-proof-user-reset.signed-statement"])
    dev.request(13)
    decommission = dev.request(14, wire.Msg().bytes(1, challenge).done())
    same("reset proof (decommission)", statement(decommission, 14),
         v["reset-proof-decommission.signed-statement"])
    err = dev.request(14, wire.Msg().bytes(1, challenge).done())
    check("a second decommission is an ILLEGAL_TRANSITION",
          wire.get_uint(wire.parse(wire.get_bytes(err, 100)), 1) == 12)
    status = wire.parse(wire.get_bytes(dev.request(3), 3))
    same("status keeps the claim receipt", wire.get_bytes(status, 5), v["claim-receipt.signed-statement"])
    dev.close()

    # Key delivery, step by step, then through the protocol under each KDF.
    transport = rc.key_from_scalar(int.from_bytes(v["input.key.transport"], "big"))
    for kdf in rc.KDFS:
        z, kek = rc.kek(transport, v["hsm-ephemeral.spki"], kdf)
        same(f"ecdh z ({kdf})", z, v["key-delivery.z"])
        same(f"kek ({kdf})", kek, v[f"key-delivery.{kdf}.kek"])
        key = rc.unwrap(transport, v["hsm-ephemeral.spki"], v[f"key-delivery.{kdf}.wrapped"], kdf)
        same(f"unwrapped key ({kdf})", rc.spki(key.public_key()), v["identity-hsm.spki"])
        state, _ = die("hsm-" + kdf)
        dev = Exec(state)
        hello(dev)
        dev.frame(v["frame.claim.request"])
        dev.request(6)
        install = (wire.Msg().bytes(1, v["identity-hsm.spki"]).bytes(2, v["hsm-ephemeral.spki"])
                   .bytes(3, v[f"key-delivery.{kdf}.wrapped"]).string(4, kdf).bytes(5, nonce).done())
        got = dev.request(8, install)
        same(f"key attestation (hsm, {kdf})", statement(got, 8), v["key-attestation-hsm.signed-statement"])
        dev.close()

    # Refusals that change nothing.
    state, _ = die("refusals")
    dev = Exec(state)
    hello(dev)
    dev.frame(v["frame.claim.request"])
    wrong = (wire.Msg().bytes(1, v["identity-on-device.spki"]).bytes(2, v["hsm-ephemeral.spki"])
             .bytes(3, v["key-delivery.ecdh-x-coordinate.wrapped"]).string(4, "ecdh-x-coordinate")
             .bytes(5, nonce).done())
    got = wire.parse(wire.get_bytes(dev.request(8, wrong), 100))
    check("a key that unwraps to another key is a KEY_MISMATCH", wire.get_uint(got, 1) == 10)
    tampered = bytearray(v["key-delivery.ecdh-x-coordinate.wrapped"])
    tampered[10] ^= 1
    bad = (wire.Msg().bytes(1, v["identity-hsm.spki"]).bytes(2, v["hsm-ephemeral.spki"])
           .bytes(3, bytes(tampered)).string(4, "ecdh-x-coordinate").bytes(5, nonce).done())
    got = wire.parse(wire.get_bytes(dev.request(8, bad), 100))
    check("a corrupted wrapped key is KEY_DELIVERY_FAILED", wire.get_uint(got, 1) == 9)
    hkdf = bad.replace(b"ecdh-x-coordinate", b"hkdf-sha256-xxxxx")
    got = wire.parse(wire.get_bytes(dev.request(8, hkdf), 100))
    check("an unknown kdf is UNSUPPORTED", wire.get_uint(got, 1) == 2)
    got = wire.parse(wire.get_bytes(dev.request(40), 100))
    check("an unknown step is UNSUPPORTED", wire.get_uint(got, 1) == 2)
    got = wire.parse(dev.frame(wire.frame(b"\xff\xff\xff"))[4:])
    check("bytes that are not a request are MALFORMED",
          wire.get_uint(wire.parse(wire.get_bytes(got, 100)), 1) == 1)
    status = wire.parse(wire.get_bytes(dev.request(3), 3))
    check("after the refusals the device is still claimed, not personalised",
          wire.get_uint(status, 2) == 2 and not wire.get_bytes(status, 6))
    dev.p.stdin.write(b"\xff\xff\xff\xff")
    dev.p.stdin.flush()
    code = dev.p.wait(timeout=10)
    check("a bad frame length ends the exec session with status 3", code == 3, f"status {code}")

    # A fault: signing with the wrong key.
    state, _ = die("wrong-key", "wrong-key-at=claim")
    dev = Exec(state)
    hello(dev)
    got = wire.parse(dev.frame(v["frame.claim.request"])[4:])
    receipt = wire.parse(statement(got, 5))
    check("wrong-key-at=claim signs a receipt that does not verify",
          not rc.verify_der(rc.load_spki(v["attestation.spki"], "key"),
                            b"trustline.v1.ClaimReceipt\x00" + wire.get_bytes(receipt, 1),
                            wire.get_bytes(receipt, 2)))
    dev.close()

    # Serial mode over a pseudo-terminal pair.
    state, _ = die("serial")
    p = subprocess.Popen([sys.executable, device_py, "serve", "--state", state, "--pty"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        path = p.stdout.readline().strip()
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        import tty
        tty.setraw(fd)
        os.write(fd, v["frame.hello.request"])
        got = b""
        deadline = time.time() + 10
        while time.time() < deadline and (len(got) < 4 or len(got) < 4 + int.from_bytes(got[:4], "big")):
            got += os.read(fd, 4096)
        h = wire.parse(wire.get_bytes(wire.parse(got[4:]), 2))
        check(f"serial mode answers hello on {path}", wire.get_uint(h, 1) == 1)
        os.write(fd, v["frame.claim.request"])
        got = b""
        while len(got) < 4 or len(got) < 4 + int.from_bytes(got[:4], "big"):
            got += os.read(fd, 4096)
        same("serial mode claim response frame", got, v["frame.claim.response"])
        os.close(fd)
    finally:
        p.terminate()
        p.wait(timeout=10)

    passed = sum(RESULTS)
    print(f"{passed} passed, {len(RESULTS) - passed} failed")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
