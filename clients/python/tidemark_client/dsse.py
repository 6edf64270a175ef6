"""DSSE envelopes as Tidemark uses them (https://github.com/secure-systems-lab/dsse).

A signature is Ed25519 over PAE(payload_type, payload):
``b"DSSEv1 " + len(type) + b" " + type + b" " + len(payload) + b" " + payload``, lengths
in ASCII decimal. A key id is the lower-case hex SHA-256 of the public key's DER
SubjectPublicKeyInfo; it is a hint, so verification tries every key.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, List, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tidemark.v1 import envelope_pb2

REPORT_PAYLOAD_TYPE = "application/vnd.tidemark.report.v1+protobuf"
RETRACTION_PAYLOAD_TYPE = "application/vnd.tidemark.retraction.v1+protobuf"
#: The most signatures the server takes on one envelope.
MAX_SIGNATURES = 4
RECEIPT_PAYLOAD_TYPE = "application/vnd.tidemark.receipt.v1+protobuf"


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE pre-authentication encoding: the bytes a signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Tidemark's key id: hex SHA-256 of the DER SubjectPublicKeyInfo (64 characters)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_private_key(path: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PKCS#8 PEM file (as `tidemark keygen` writes)."""
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


# The y coordinates (little-endian, x's sign bit cleared) of the Ed25519 points of small
# order, and the non-canonical encodings p and p + 1 of 0 and 1 (libsodium's blocklist):
# a signature "by" such a key needs no private key, and OpenSSL's check accepts it.
_SMALL_ORDER_Y = frozenset(
    bytes.fromhex(h)
    for h in (
        "00" * 32,
        "01" + "00" * 31,
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ec" + "ff" * 30 + "7f",
        "ed" + "ff" * 30 + "7f",
        "ee" + "ff" * 30 + "7f",
    )
)


def weak_key(raw: bytes) -> bool:
    """Whether the 32 raw bytes of an Ed25519 public key are a point of small order or
    a y coordinate written as p or more: keys whose signatures need no private key."""
    y = bytearray(raw)
    y[31] &= 0x7F
    return bytes(y) in _SMALL_ORDER_Y or int.from_bytes(y, "little") >= 2**255 - 19


def load_public_key(pem: bytes | str) -> Ed25519PublicKey:
    """An Ed25519 public key from SubjectPublicKeyInfo PEM. A key of small order, or a y
    coordinate written as p or more, is refused (ValueError), as the server refuses it."""
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    if weak_key(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)):
        raise ValueError(
            "this Ed25519 public key is of small order or not canonically encoded: "
            "signatures it 'verifies' can be made without any private key"
        )
    return key


def sign(payload_type: str, payload: bytes, key: Ed25519PrivateKey) -> envelope_pb2.Envelope:
    """An envelope of `payload` signed by `key`."""
    signature = key.sign(pae(payload_type, payload))
    return envelope_pb2.Envelope(
        payload=payload,
        payload_type=payload_type,
        signatures=[envelope_pb2.Signature(keyid=key_id(key.public_key()), sig=signature)],
    )


def verified_by(
    envelope: envelope_pb2.Envelope, keys: Iterable[Ed25519PublicKey]
) -> Optional[Ed25519PublicKey]:
    """The first of `keys` that made one of the envelope's signatures, or None."""
    signers = signed_by(envelope, keys)
    return signers[0] if signers else None


def signed_by(
    envelope: envelope_pb2.Envelope, keys: Iterable[Ed25519PublicKey]
) -> List[Ed25519PublicKey]:
    """Every one of `keys` that made one of the envelope's signatures (a signature's
    `keyid` is only a hint: an empty, absent or wrong one is checked against every key)."""
    keys = list(keys)
    signed = pae(envelope.payload_type, envelope.payload)
    found: List[Ed25519PublicKey] = []
    for signature in envelope.signatures:
        hinted = [k for k in keys if key_id(k) == signature.keyid]
        others = [k for k in keys if key_id(k) != signature.keyid]
        for key in hinted + others:
            if any(key is f for f in found):
                continue
            try:
                key.verify(signature.sig, signed)
                found.append(key)
                break
            except InvalidSignature:
                continue
    return found
