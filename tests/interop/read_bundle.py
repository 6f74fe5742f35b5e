#!/usr/bin/env python3
"""An independent reader of jek bundle format v1, written from docs/bundle-format.md alone.

It parses the container, verifies the DSSE envelope with securesystemslib (the Secure
Systems Lab's DSSE implementation, not ours), and checks every component against the
signed in-toto statement. Usage: read_bundle.py BUNDLE PUBKEY.pem
Prints a JSON summary and exits 0 if everything checks, 1 otherwise.
"""
import hashlib
import json
import struct
import sys

from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

MAGIC = b"\x89JEK\r\n\x1a\n"
ROLES = {1: "bzimage", 2: "vmlinux", 3: "initramfs", 4: "cmdline", 5: "config"}
ENVELOPE = 0x00FF


def parse(data):
    if data[:8] != MAGIC:
        raise ValueError("bad magic")
    version, count, reserved = struct.unpack_from("<HHI", data, 8)
    if version != 1 or reserved != 0:
        raise ValueError("bad header")
    pos, sections, envelope, last = 16, {}, None, 0
    for _ in range(count):
        kind, res, length = struct.unpack_from("<H6sQ", data, pos)
        if res != bytes(6) or kind <= last or envelope is not None:
            raise ValueError(f"bad section header at {pos}")
        last = kind
        body = data[pos + 16 : pos + 16 + length]
        if len(body) != length:
            raise ValueError("truncated")
        if kind == ENVELOPE:
            envelope = body
        else:
            sections[ROLES[kind]] = body
        pos += 16 + length
    if pos != len(data) or envelope is None:
        raise ValueError("trailing bytes or no envelope")
    return sections, envelope


def main():
    data = open(sys.argv[1], "rb").read()
    pem = open(sys.argv[2], "rb").read()
    public = serialization.load_pem_public_key(pem)
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    keyid = hashlib.sha256(spki).hexdigest()
    sections, envelope_bytes = parse(data)
    envelope = Envelope.from_dict(json.loads(envelope_bytes))
    accepted = envelope.verify([SSlibKey.from_crypto(public, keyid=keyid)], 1)
    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://jek.dev/BundleManifest/v1"
    sizes = {c["role"]: c["size"] for c in statement["predicate"]["components"]}
    listed = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    if set(listed) != set(sections) or set(sizes) != set(sections):
        raise ValueError("components and manifest disagree")
    for role, body in sections.items():
        if hashlib.sha256(body).hexdigest() != listed[role] or len(body) != sizes[role]:
            raise ValueError(f"digest mismatch for {role}")
    print(json.dumps({
        "keyid": keyid,
        "accepted": sorted(accepted),
        "name": statement["predicate"]["name"],
        "securityVersion": statement["predicate"]["securityVersion"],
        "cmdline": sections["cmdline"].decode(),
    }))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report any failure as a rejection
        print(f"rejected: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
