#!/usr/bin/env python3
"""Independent verifier of a cosigned Trustline checkpoint (issue 13).

Written from the C2SP specifications alone (signed-note, tlog-checkpoint,
tlog-cosignature), sharing no code with the hub: it checks the note byte for
byte, recomputes the RFC 6962 root from the entries' exact bytes, verifies
the site's ECDSA P-256 signature (signed-note type 0x02, key ID =
SHA-256(SPKI)[:4]) and the witness's cosignature/v1 (Ed25519, key ID =
SHA-256(name || "\\n" || 0x04 || key)[:4], blob = key ID || u64 BE time ||
signature over "cosignature/v1\\ntime <t>\\n" || body).

Usage: verify_cosigned.py CASE.json
CASE: {"note", "site_spki_hex", "witness_name", "witness_key_hex",
       "entries_hex": [...]}
Exit 0 when everything verifies, 1 on a failed check, 3 when the
`cryptography` package is missing (install it with scripts/install-deps.sh).
"""

import base64
import hashlib
import json
import re
import struct
import sys

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:
    print("python3 package 'cryptography' is missing: run scripts/install-deps.sh", file=sys.stderr)
    sys.exit(3)

EM_DASH = "\u2014"


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def mth(leaves):
    """RFC 6962 Merkle Tree Hash over leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def main():
    case = json.load(open(sys.argv[1]))
    note = case["note"]
    raw = note.encode("utf-8")
    if not note.endswith("\n"):
        fail("note does not end with a newline")
    if "\r" in note:
        fail("note contains a carriage return")
    body, sep, sigs = note.rpartition("\n\n")
    if not sep:
        fail("no blank line between body and signatures")
    body += "\n"
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        fail("body has fewer than three lines")
    origin, size_line, root_line = lines[0], lines[1], lines[2]
    if not re.fullmatch(r"0|[1-9][0-9]*", size_line):
        fail("size line is not a decimal without leading zeros")
    size = int(size_line)
    root = base64.b64decode(root_line, validate=True)
    if len(root) != 32 or base64.b64encode(root).decode() != root_line:
        fail("root line is not canonical base64 of 32 bytes")

    entries = [bytes.fromhex(e) for e in case["entries_hex"]]
    if len(entries) != size:
        fail("expected %d entries, got %d" % (size, len(entries)))
    leaves = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
    if mth(leaves) != root:
        fail("root is not the RFC 6962 root of the entries")

    sig_lines = sigs.split("\n")
    if sig_lines[-1] != "":
        fail("signature block does not end with a newline")
    sig_lines = sig_lines[:-1]
    if len(sig_lines) != 2:
        fail("expected exactly two signature lines, got %d" % len(sig_lines))
    parsed = []
    for line in sig_lines:
        m = re.fullmatch(EM_DASH + r" (\S+) ([A-Za-z0-9+/=]+)", line)
        if not m:
            fail("malformed signature line %r" % line)
        parsed.append((m.group(1), base64.b64decode(m.group(2), validate=True)))

    # The site's signature: first line, name = origin, ECDSA P-256 over the body.
    spki = bytes.fromhex(case["site_spki_hex"])
    name, blob = parsed[0]
    if name != origin:
        fail("first signature is not by the origin's key name")
    if blob[:4] != hashlib.sha256(spki).digest()[:4]:
        fail("site key ID is not SHA-256(SPKI)[:4]")
    site_key = serialization.load_der_public_key(spki)
    try:
        site_key.verify(blob[4:], body.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        fail("site signature does not verify")

    # The witness's cosignature/v1.
    wname = case["witness_name"]
    wkey = bytes.fromhex(case["witness_key_hex"])
    name, blob = parsed[1]
    if name != wname:
        fail("second signature is not by the witness")
    key_id = hashlib.sha256(wname.encode() + b"\n" + b"\x04" + wkey).digest()[:4]
    if len(blob) != 4 + 8 + 64 or blob[:4] != key_id:
        fail("cosignature blob has the wrong length or key ID")
    (timestamp,) = struct.unpack(">Q", blob[4:12])
    if timestamp >= 2**63:
        fail("timestamp beyond 2^63 - 1")
    message = b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body.encode()
    try:
        Ed25519PublicKey.from_public_bytes(wkey).verify(blob[12:], message)
    except InvalidSignature:
        fail("cosignature does not verify")

    # Byte for byte: re-assemble the note from its parts.
    again = body + "\n" + "".join(
        "%s %s %s\n" % (EM_DASH, n, base64.b64encode(b).decode()) for n, b in parsed
    )
    if again.encode("utf-8") != raw:
        fail("note is not in canonical signed-note form")
    print("ok: %s size %d, site and witness signatures verify, time %d" % (origin, size, timestamp))


if __name__ == "__main__":
    main()
