#!/usr/bin/env python3
"""An independent FIDO Device Onboard 1.1 ownership voucher checker.

Written from the FDO 1.1 specification's CDDL (protocol version 101), not
from Trustline's code, on someone else's CBOR and crypto stacks: PyPI's
`cbor2` (CBOR, RFC 8949) and `cryptography` (pyca: X.509, ECDSA P-256,
SHA-256, HMAC). COSE_Sign1 (RFC 9052) is assembled here from its
definition. Trustline's tests use it to check that what Trustline exports
is FDO and that what an FDO tool extends is taken back.

  fdocheck.py verify --voucher V.pem [--manufacturer-key PUB.pem] [--hmac-secret HEX]
      Decodes the PEM `OWNERSHIP VOUCHER`, checks every structural rule, the
      device certificate chain hash, every entry's hashes and signature (and
      the header HMAC given the device secret), prints the fields as JSON.
      Exit status 0 when valid; 1 with {"valid": false, "error": ...} when not.

  fdocheck.py extend --voucher V.pem --owner-key KEY.pem --next-owner PUB.pem --out OUT.pem
      Verifies V, then the current owner (KEY, a PKCS#8 P-256 private key)
      signs a new entry naming the next owner (PUB, a SubjectPublicKeyInfo
      PEM), OVEExtra null; prints {"valid": true, "entries": N, ...}.

The subset checked is the one for SECP256R1 keys: pkType 10 with pkEnc X509,
hashes SHA256 (-16), the header HMAC HMAC-SHA256 (5), entries signed ES256.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import re
import sys
from collections.abc import Mapping

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

PEM_LABEL = "OWNERSHIP VOUCHER"
PROTVER = 101
SHA256, HMAC_SHA256 = -16, 5
SECP256R1, X509 = 10, 1
ES256 = -7
COSE_SIGN1_TAG = 18
RV_NAMES = ["RVDevOnly", "RVOwnerOnly", "RVIPAddress", "RVDevPort", "RVOwnerPort", "RVDns",
            "RVSvCertHash", "RVClCertHash", "RVUserInput", "RVWifiSsid", "RVWifiPw", "RVMedium",
            "RVProtocol", "RVDelaysec", "RVBypass", "RVExtRV"]


class Invalid(Exception):
    """The voucher breaks a rule of the specification."""


def need(cond, why):
    if not cond:
        raise Invalid(why)


def sha256(data):
    return hashlib.sha256(data).digest()


def strict_loads(data, what):
    """One CBOR item in its canonical (shortest, definite) form, nothing
    after it: re-encoding what was read must give back the same bytes."""
    try:
        obj = cbor2.loads(data)
    except Exception as e:  # noqa: BLE001 - any decoder error is a refusal
        raise Invalid(f"{what} is not CBOR: {e}") from e
    need(cbor2.dumps(obj) == data, f"{what} is not in canonical CBOR form (or has trailing bytes)")
    return obj


def is_bytes(v, size=None):
    return isinstance(v, bytes) and (size is None or len(v) == size)


def is_array(v):
    """cbor2 gives arrays as lists, or as tuples inside tags."""
    return isinstance(v, (list, tuple))


def is_map(v):
    """cbor2 gives maps as dicts, or as frozendicts inside tags."""
    return isinstance(v, Mapping)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def read_pem(text):
    blocks = re.findall(r"-----BEGIN ([A-Z ]+)-----\s*(.*?)\s*-----END \1-----", text, re.S)
    vouchers = [body for label, body in blocks if label == PEM_LABEL]
    need(len(vouchers) == 1, f"expected one {PEM_LABEL} PEM block, found {len(vouchers)}")
    try:
        return base64.b64decode("".join(vouchers[0].split()), validate=True)
    except binascii.Error as e:
        raise Invalid(f"bad base64: {e}") from e


def write_pem(data):
    b64 = base64.b64encode(data).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {PEM_LABEL}-----\n" + "\n".join(lines) + f"\n-----END {PEM_LABEL}-----\n"


# --- the CDDL, rule by rule ----------------------------------------------------


def check_hash(h, hashtype, what):
    """Hash / HMac = [hashtype: int, hash: bstr]."""
    need(is_array(h) and len(h) == 2 and is_int(h[0]) and is_bytes(h[1]),
         f"{what} is not [hashtype, bstr]")
    need(h[0] == hashtype, f"{what} has hashtype {h[0]}, expected {hashtype}")
    need(len(h[1]) == 32, f"{what} is not 32 bytes")
    return h[1]


def check_public_key(pk, what):
    """PublicKey = [pkType, pkEnc, pkBody]; SECP256R1 in X509 encoding: the
    body is a SubjectPublicKeyInfo DER."""
    need(is_array(pk) and len(pk) == 3, f"{what} is not [pkType, pkEnc, pkBody]")
    need(pk[0] == SECP256R1 and pk[1] == X509,
         f"{what} is pkType {pk[0]} / pkEnc {pk[1]}, expected SECP256R1 (10) / X509 (1)")
    need(is_bytes(pk[2]), f"{what} body is not a bstr")
    try:
        key = serialization.load_der_public_key(pk[2])
    except ValueError as e:
        raise Invalid(f"{what} is not a SubjectPublicKeyInfo: {e}") from e
    need(isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1),
         f"{what} is not a P-256 key")
    return key


def spki(key):
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def describe_rv_value(var, value):
    try:
        v = cbor2.loads(value)
    except Exception:  # noqa: BLE001
        return value.hex()
    return v.hex() if isinstance(v, bytes) else v


def check_rv_info(rv):
    """RendezvousInfo = [+ RendezvousDirective]; RendezvousDirective =
    [+ RendezvousInstr]; RendezvousInstr = [RVVariable, ? RVValue: bstr .cbor any]."""
    need(is_array(rv) and rv, "OVRVInfo is not a non-empty array")
    out = []
    for directive in rv:
        need(is_array(directive) and directive, "a RendezvousDirective is not a non-empty array")
        instrs = []
        for instr in directive:
            need(is_array(instr) and len(instr) in (1, 2) and is_int(instr[0])
                 and 0 <= instr[0] <= 15, "a RendezvousInstr is not [RVVariable, ? RVValue]")
            entry = {"variable": instr[0], "name": RV_NAMES[instr[0]]}
            if len(instr) == 2:
                need(is_bytes(instr[1]), "an RVValue is not a bstr")
                strict_loads(instr[1], f"{RV_NAMES[instr[0]]} value")
                entry["value"] = describe_rv_value(instr[0], instr[1])
            instrs.append(entry)
        out.append(instrs)
    return out


def check_header(header_bytes):
    """OVHeader = [OVHProtVer, OVGuid, OVRVInfo, OVDeviceInfo, OVPubKey, OVDevCertChainHash]."""
    h = strict_loads(header_bytes, "OVHeader")
    need(is_array(h) and len(h) == 6, "OVHeader is not an array of 6")
    need(h[0] == PROTVER, f"OVHProtVer is {h[0]}, expected {PROTVER}")
    need(is_bytes(h[1], 16), "OVGuid is not a 16-byte bstr")
    rv = check_rv_info(h[2])
    need(isinstance(h[3], str), "OVDeviceInfo is not a tstr")
    mfg = check_public_key(h[4], "OVPubKey")
    need(h[5] is not None, "OVDevCertChainHash is null (EPID devices are not checked here)")
    chain_hash = check_hash(h[5], SHA256, "OVDevCertChainHash")
    return h, rv, mfg, chain_hash


def cose_sign1(entry, what):
    """COSE_Sign1_Tagged = 18([protected: bstr .cbor header_map, unprotected:
    header_map, payload: bstr / nil, signature: bstr])."""
    need(isinstance(entry, cbor2.CBORTag) and entry.tag == COSE_SIGN1_TAG,
         f"{what} is not a tagged (18) COSE_Sign1")
    parts = entry.value
    need(is_array(parts) and len(parts) == 4, f"{what} is not a 4-item COSE_Sign1")
    protected, unprotected, payload, signature = parts
    need(is_bytes(protected) and is_map(unprotected), f"{what} headers are malformed")
    pheader = strict_loads(protected, f"{what} protected header") if protected else {}
    need(is_map(pheader) and pheader.get(1) == ES256, f"{what} is not signed with ES256 (-7)")
    need(2 not in pheader, f"{what} has critical header parameters")
    need(is_bytes(payload), f"{what} has no embedded payload")
    need(is_bytes(signature, 64), f"{what} signature is not 64 bytes (r || s)")
    return protected, payload, signature


def sig_structure(protected, payload):
    """Sig_structure = ["Signature1", body_protected, external_aad, payload]."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


def cose_verifies(key, protected, payload, signature):
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), sig_structure(protected, payload),
                   ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def check_entry_payload(payload, what):
    """OVEntryPayload = [OVEHashPrevEntry: Hash, OVEHashHdrInfo: Hash,
    OVEExtra: null / bstr .cbor OVEExtraInfo, OVEPubKey: PublicKey]."""
    p = strict_loads(payload, f"{what} payload")
    need(is_array(p) and len(p) == 4, f"{what} payload is not an array of 4")
    prev = check_hash(p[0], SHA256, f"{what} OVEHashPrevEntry")
    hdr = check_hash(p[1], SHA256, f"{what} OVEHashHdrInfo")
    extra = None
    if p[2] is not None:
        need(is_bytes(p[2]), f"{what} OVEExtra is neither null nor a bstr")
        m = strict_loads(p[2], f"{what} OVEExtra")
        need(is_map(m) and all(is_int(k) and is_bytes(v) for k, v in m.items()),
             f"{what} OVEExtraInfo is not {{* int => bstr}}")
        extra = {str(k): v.hex() for k, v in sorted(m.items())}
    key = check_public_key(p[3], f"{what} OVEPubKey")
    return prev, hdr, extra, key


def check_voucher(data, manufacturer_spki=None, hmac_secret=None):
    """OwnershipVoucher = [OVProtVer, OVHeaderTag, OVHeaderHMac,
    OVDevCertChain, OVEntryArray]. Returns (fields as JSON-able dict,
    decoded voucher, current owner key)."""
    v = strict_loads(data, "OwnershipVoucher")
    need(is_array(v) and len(v) == 5, "OwnershipVoucher is not an array of 5")
    need(v[0] == PROTVER, f"OVProtVer is {v[0]}, expected {PROTVER}")
    need(is_bytes(v[1]), "OVHeaderTag is not a bstr")
    header_bytes = v[1]
    h, rv, mfg, chain_hash = check_header(header_bytes)
    need(h[0] == v[0], "OVHProtVer differs from OVProtVer")
    header_hmac = check_hash(v[2], HMAC_SHA256, "OVHeaderHMac")
    hmac_checked = False
    if hmac_secret is not None:
        need(hmac.compare_digest(hmac.new(hmac_secret, header_bytes, hashlib.sha256).digest(),
                                 header_hmac), "OVHeaderHMac does not verify with the device secret")
        hmac_checked = True

    chain = v[3]
    need(chain is not None, "OVDevCertChain is null (EPID devices are not checked here)")
    need(is_array(chain) and chain and all(is_bytes(c) for c in chain),
         "OVDevCertChain is not a non-empty array of bstr")
    certs = []
    for der in chain:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as e:
            raise Invalid(f"a device certificate does not parse: {e}") from e
        certs.append({"sha256": sha256(der).hex(), "subject": cert.subject.rfc4514_string()})
    need(sha256(b"".join(chain)) == chain_hash,
         "OVDevCertChainHash is not the hash of OVDevCertChain")

    mfg_spki = spki(mfg)
    need(h[4][2] == mfg_spki, "OVPubKey is not in canonical SubjectPublicKeyInfo form")
    if manufacturer_spki is not None:
        need(mfg_spki == manufacturer_spki, "OVPubKey is not the expected manufacturer key")

    entries = v[4]
    need(is_array(entries), "OVEntryArray is not an array")
    hdr_info = sha256(h[1] + h[3].encode("utf-8"))                  # hash[GUID||DeviceInfo]
    prev_expected = sha256(header_bytes + cbor2.dumps(v[2]))        # hash[OVHeader||OVHeaderHMac]
    owner = mfg
    out_entries = []
    for i, entry in enumerate(entries):
        what = f"OVEntry {i}"
        protected, payload, signature = cose_sign1(entry, what)
        prev, hdr, extra, next_key = check_entry_payload(payload, what)
        need(hdr == hdr_info, f"{what} OVEHashHdrInfo is not hash(OVGuid || OVDeviceInfo)")
        need(prev == prev_expected, f"{what} OVEHashPrevEntry does not match the "
             + ("header and its HMAC" if i == 0 else f"entry {i - 1}"))
        need(cose_verifies(owner, protected, payload, signature),
             f"{what} signature does not verify under the previous owner's key")
        entry_bytes = cbor2.dumps(entry)
        out_entries.append({
            "index": i,
            "signer_spki": spki(owner).hex(),
            "next_owner_spki": spki(next_key).hex(),
            "prev_hash": prev.hex(),
            "hdr_info_hash": hdr.hex(),
            "extra": extra,
            "sha256": sha256(entry_bytes).hex(),
        })
        prev_expected = sha256(entry_bytes)
        owner = next_key

    fields = {
        "valid": True,
        "protocol_version": v[0],
        "guid": h[1].hex(),
        "rv_info": rv,
        "device_info": h[3],
        "manufacturer_key": {"pk_type": h[4][0], "pk_enc": h[4][1], "spki": mfg_spki.hex()},
        "cert_chain": certs,
        "cert_chain_hash": chain_hash.hex(),
        "header_sha256": sha256(header_bytes).hex(),
        "header_hmac": {"type": v[2][0], "value": header_hmac.hex()},
        "header_hmac_sha256": sha256(header_hmac).hex(),
        "hmac_checked": hmac_checked,
        "entries": out_entries,
        "current_owner_spki": spki(owner).hex(),
    }
    return fields, v, owner, prev_expected, hdr_info


# --- commands -----------------------------------------------------------------


def load_public_pem(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    need(isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1),
         f"{path} is not a P-256 public key")
    return key


def cmd_verify(args):
    with open(args.voucher) as f:
        data = read_pem(f.read())
    mfg = spki(load_public_pem(args.manufacturer_key)) if args.manufacturer_key else None
    secret = bytes.fromhex(args.hmac_secret) if args.hmac_secret else None
    fields, *_ = check_voucher(data, mfg, secret)
    print(json.dumps(fields, indent=1, sort_keys=True))
    return 0


def cmd_extend(args):
    with open(args.voucher) as f:
        data = read_pem(f.read())
    _, v, owner, prev_hash, hdr_info = check_voucher(data)
    with open(args.owner_key, "rb") as f:
        owner_key = serialization.load_pem_private_key(f.read(), None)
    need(isinstance(owner_key, ec.EllipticCurvePrivateKey)
         and spki(owner_key.public_key()) == spki(owner),
         "the owner key is not the voucher's current owner")
    next_owner = load_public_pem(args.next_owner)
    payload = cbor2.dumps([[SHA256, prev_hash], [SHA256, hdr_info], None,
                           [SECP256R1, X509, spki(next_owner)]])
    protected = cbor2.dumps({1: ES256})
    der = owner_key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    entries = list(v[4]) + [cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature])]
    out = cbor2.dumps([v[0], v[1], v[2], v[3], entries])
    fields, *_ = check_voucher(out)
    with open(args.out, "w") as f:
        f.write(write_pem(out))
    print(json.dumps({"valid": True, "entries": len(fields["entries"]),
                      "current_owner_spki": fields["current_owner_spki"]}))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="fdocheck.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a PEM ownership voucher; print its fields as JSON")
    v.add_argument("--voucher", required=True)
    v.add_argument("--manufacturer-key", help="PEM public key the header must name")
    v.add_argument("--hmac-secret", help="hex device secret: also check OVHeaderHMac")
    e = sub.add_parser("extend", help="the current owner signs an entry naming the next owner")
    e.add_argument("--voucher", required=True)
    e.add_argument("--owner-key", required=True, help="PEM PKCS#8 private key of the current owner")
    e.add_argument("--next-owner", required=True, help="PEM public key of the next owner")
    e.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        return {"verify": cmd_verify, "extend": cmd_extend}[args.command](args)
    except Invalid as e:
        print(json.dumps({"valid": False, "error": str(e)}))
        return 1


if __name__ == "__main__":
    sys.exit(main())
