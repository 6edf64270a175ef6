"""Offline checks of Tidemark's transparency-log proofs, as ``tidemark verify-receipt``
makes them, so that a state's own systems need not trust the server (nor the CLI).

A log proof (``Submitted.log_proof``, ``QueryResult.log_proof``) is a C2SP tlog proof
(https://c2sp.org/tlog-proof, ``c2sp.org/tlog-proof@v1``): the entry (base64, on the
``extra`` line), its leaf index, the RFC 9162 §2.1.3 inclusion proof, a blank line and
the checkpoint — a C2SP signed note (https://c2sp.org/signed-note) whose text is a
C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint). The log's note verifier key,
``<origin>+<hex key id>+<base64>``, comes from ``tidemark log verifier-key`` (or
``certs/log.vkey``): keep your own copy rather than fetching it at each check.

>>> proof = verify_log_proof(submitted.log_proof, log_key)
>>> decode_envelope_entry(proof.entry).accepted
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import dsse

#: The first line of every log proof.
HEADER = "c2sp.org/tlog-proof@v1"
#: The signature-type byte of an Ed25519 note key (C2SP signed-note).
_ED25519 = 0x01
#: The signature-type byte of a witness's cosignature key (C2SP tlog-cosignature v1).
_COSIGNATURE_V1 = 0x04
#: The most signature lines a note may carry (as Go's golang.org/x/mod/sumdb/note).
_MAX_SIGNATURES = 100


class LogProofError(ValueError):
    """A log proof, checkpoint or key that does not verify; the message says why."""


@dataclass(frozen=True)
class NoteVerifier:
    """A signed-note verifier key: the signer's name, its key id and Ed25519 key."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def parse(cls, vkey: str) -> "NoteVerifier":
        """Reads ``<name>+<8 hex digits>+<base64 of 0x01 and the 32-byte key>``; the key
        id must be the one the name and key give (C2SP signed-note)."""
        return cls(*_parse_key(vkey, _ED25519, "note verifier key", "`tidemark log verifier-key`"))


@dataclass(frozen=True)
class WitnessKey:
    """A witness's cosignature key (C2SP tlog-cosignature v1): its name, key id and
    Ed25519 key, as ``tidemark log witness`` writes it to ``witness.vkey``."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def parse(cls, vkey: str) -> "WitnessKey":
        """Reads ``<name>+<8 hex digits>+<base64 of 0x04 and the 32-byte key>``."""
        return cls(*_parse_key(vkey, _COSIGNATURE_V1, "witness key", "`tidemark log witness` (witness.vkey)"))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint whose signature verified: the log's origin, tree size and root."""

    origin: str
    size: int
    root: bytes
    #: Extension lines after the root, if any.
    extensions: List[str]


@dataclass(frozen=True)
class VerifiedLogProof:
    """A log proof that verified: the entry it proves, its index, and the checkpoint."""

    #: The entry's bytes (Tidemark's entry encoding, docs/transparency.md).
    entry: bytes
    index: int
    checkpoint: Checkpoint


def _parse_key(vkey: str, kind: int, what: str, source: str):
    """The name, key id and Ed25519 key of a verifier key string
    ``<name>+<8 hex digits>+<base64 of the type byte `kind` and the 32-byte key>``, whose
    key id must be the one its name and key give (C2SP signed-note)."""
    # As a file holds it: past one byte-order mark, with its line feed. The base64 key
    # may itself hold "+": only the first two separate.
    parts = vkey.removeprefix("\ufeff").strip().split("+", 2)
    if len(parts) != 3 or not parts[0] or any(c.isspace() for c in parts[0]):
        raise LogProofError(
            f"not a {what}: expected <name>+<hex key id>+<base64 key>, as {source} writes it"
        )
    name, hex_id, encoded = parts
    raw = _base64(encoded, f"the {what}'s key")
    if len(raw) != 33 or raw[0] != kind:
        raise LogProofError(f"not an Ed25519 {what} (type {kind:#04x}, 32 bytes)")
    if dsse.weak_key(raw[1:]):
        raise LogProofError(
            f"the {what}'s Ed25519 key is of small order or not canonically encoded: "
            "signatures it 'verifies' need no private key"
        )
    key_id = _key_id(name, raw)
    # One spelling, as every signer writes it (Go's note package: %08x) and as `tidemark`
    # reads it: 8 lower-case hex digits.
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise LogProofError(f"the {what}'s id {hex_id!r} is not 8 lower-case hex digits")
    if int(hex_id, 16) != key_id:
        raise LogProofError(
            f"the {what}'s id {hex_id!r} is not {key_id:08x}, the one its name and key "
            "give: the key was altered"
        )
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def _key_id(name: str, raw: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + raw).digest()
    return int.from_bytes(digest[:4], "big")


def _base64(text: str, what: str) -> bytes:
    """Standard base64 with padding, in its one spelling (no other characters)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LogProofError(f"{what} is not standard base64") from None
    if base64.b64encode(raw).decode() != text:
        raise LogProofError(f"{what} is not standard base64 in its one spelling")
    return raw


def _decimal(text: str, what: str) -> int:
    """A decimal number without sign or leading zeros, below 2^64."""
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise LogProofError(f"{what} {text!r} is not a decimal number without leading zeros")
    value = int(text)
    if value >= 1 << 64:
        raise LogProofError(f"{what} {text} is out of range")
    return value


def as_note(text: str) -> str:
    """Note text as `tidemark` reads it from a file: past one leading UTF-8 byte-order
    mark, with CR LF line ends as LF, and ending in one line feed however many it had
    (editors add or take one away)."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").rstrip("\n") + "\n"


def open_checkpoint(note: str, verifier: NoteVerifier) -> Checkpoint:
    """Checks the note's signature by `verifier` (every signature line of its name and
    key id must verify; others are ignored) and reads the checkpoint it signs, which must
    name the verifier's log as its origin. A note read from a file is read as
    :func:`as_note` says; past that, it holds no control character but line feeds (C2SP
    signed-note)."""
    note = as_note(note)
    for offset, char in enumerate(note.encode()):
        if char < 0x20 and char != 0x0A:
            raise LogProofError(
                f"note has control character U+{char:04X} at byte {offset}; only newline is allowed"
            )
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise LogProofError("the checkpoint is not a signed note (text, a blank line, signatures)")
    text, signatures = note[: split + 1], note[split + 2 : -1]
    if not signatures:
        raise LogProofError("the checkpoint carries no signature")
    verified = False
    for number, line in enumerate(signatures.split("\n"), start=1):
        if number > _MAX_SIGNATURES:
            raise LogProofError("the checkpoint carries too many signatures")
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or not parts[1]:
            raise LogProofError(f"signature line {number} is not '— <name> <base64>'")
        raw = _base64(parts[2], f"signature line {number}")
        if len(raw) < 5:
            raise LogProofError(f"signature line {number} is too short")
        if parts[1] != verifier.name or int.from_bytes(raw[:4], "big") != verifier.key_id:
            continue  # another signer's (a witness's cosignature, say)
        try:
            verifier.public_key.verify(raw[4:], text.encode())
        except InvalidSignature:
            raise LogProofError(
                "the checkpoint's signature does not verify with the log's key: it was "
                "altered, or comes from another log"
            ) from None
        verified = True
    if not verified:
        raise LogProofError(
            f"the checkpoint is not signed by {verifier.name}+{verifier.key_id:08x}: another "
            "log's, or the wrong key was given"
        )
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise LogProofError("the checkpoint has fewer than its three lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not origin:
        raise LogProofError("the checkpoint names no origin")
    if origin != verifier.name:
        raise LogProofError(f"the checkpoint is of log {origin!r}, not of {verifier.name!r}")
    extensions = lines[3:]
    if any(not e for e in extensions):
        raise LogProofError("the checkpoint has an empty extension line")
    root_hash = _base64(root, "the checkpoint's root hash")
    if len(root_hash) != 32:
        raise LogProofError("the checkpoint's root hash is not 32 bytes")
    return Checkpoint(origin, _decimal(size, "the tree size"), root_hash, extensions)


def cosigned_by(note: str, log_key: str, witness_keys: Sequence[str]) -> List[str]:
    """The names of the distinct witnesses, among `witness_keys`, whose valid cosignature
    (C2SP tlog-cosignature v1: Ed25519 over ``cosignature/v1``, ``time <t>`` and the
    checkpoint's text) the checkpoint `note` carries — once the log's own signature on it
    is checked with `log_key`. A witness named twice, or two names for one key, counts
    once: a quorum is of distinct cosigners. A cosignature line by one of the witnesses
    (its name and key id) that does not verify raises :class:`LogProofError`, as C2SP
    signed-note asks of a signature by a known key: something altered it."""
    note = as_note(note)
    open_checkpoint(note, NoteVerifier.parse(log_key))
    split = note.rfind("\n\n")
    text, lines = note[: split + 1], note[split + 2 : -1].split("\n")
    witnesses: List[WitnessKey] = []
    for vkey in witness_keys:
        w = WitnessKey.parse(vkey)
        if not any(d.name == w.name or d.public_key == w.public_key for d in witnesses):
            witnesses.append(w)
    cosigned = []
    for w in witnesses:
        # Every line by the witness is checked, wherever it stands: one that does not
        # verify is refused even after a good one (C2SP signed-note), as the CLI does.
        for line in lines:
            parts = line.split(" ")
            if len(parts) != 3 or parts[1] != w.name:
                continue
            try:
                raw = _base64(parts[2], "a cosignature")
            except LogProofError:
                raw = b""
            if len(raw) < 4 or int.from_bytes(raw[:4], "big") != w.key_id:
                continue
            time = int.from_bytes(raw[4:12], "big")
            message = f"cosignature/v1\ntime {time}\n{text}".encode()
            try:
                if len(raw) != 4 + 8 + 64:
                    raise InvalidSignature()
                w.public_key.verify(raw[12:], message)
            except InvalidSignature:
                raise LogProofError(
                    f"the cosignature by witness {w.name} ({w.key_id:08x}) does not verify: "
                    "the checkpoint or the cosignature was altered"
                ) from None
            if w.name not in cosigned:
                cosigned.append(w.name)
    return cosigned


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: that `leaf` is leaf `index` of the tree of `size` leaves with
    `root`, by `proof`. LogProofError otherwise."""
    if index >= size:
        raise LogProofError(f"leaf index {index} is not in a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise LogProofError("the inclusion proof is longer than the tree needs")
        if fn & 1 or fn == sn:
            r = _node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogProofError("the inclusion proof is shorter than the tree needs")
    if r != root:
        raise LogProofError("the entry is not in the log under this checkpoint (the root differs)")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: that the tree of `old_size` leaves with `old_root` is a prefix of
    the tree of `new_size` leaves with `new_root` — the log only grew — by `proof` (as
    ``Client.consistency_proof`` returns it). LogProofError otherwise."""
    if old_size > new_size:
        raise LogProofError(f"the log shrank: {old_size} leaves, then {new_size}")
    if old_size == new_size or old_size == 0:
        if proof:
            raise LogProofError("a proof between these sizes is empty")
        if old_size == new_size and old_root != new_root:
            raise LogProofError("two roots for one tree size: the log was rewritten")
        return
    path = ([old_root] if old_size & (old_size - 1) == 0 else []) + list(proof)
    if not path:
        raise LogProofError("the consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise LogProofError("the consistency proof is longer than the trees need")
        if fn & 1 or fn == sn:
            fr = _node_hash(c, fr)
            sr = _node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogProofError("the consistency proof is shorter than the trees need")
    if fr != old_root:
        raise LogProofError("the proof does not lead to the old root: the log was rewritten")
    if sr != new_root:
        raise LogProofError("the proof does not lead to the new root: the log was rewritten")


def verify_log_proof(text: str, log_key: str) -> VerifiedLogProof:
    """Checks a log proof offline against the log's note verifier key: the checkpoint is
    signed by it and names its origin, and the entry the proof carries is included
    under it at its index. Returns the entry, index and checkpoint; LogProofError
    otherwise. A proof read from a file is read as `tidemark verify-receipt` reads one:
    past one leading UTF-8 byte-order mark, with CR LF line ends as LF, and ending in one
    line feed however many it had (editors add or take one away)."""
    verifier = NoteVerifier.parse(log_key)
    lines = as_note(text).split("\n")
    if lines[0] != HEADER:
        raise LogProofError(f"not a log proof: the first line must be {HEADER!r}")
    at = 1
    entry: Optional[bytes] = None
    if at < len(lines) and lines[at].startswith("extra "):
        entry = _base64(lines[at][len("extra ") :], "the extra line")
        at += 1
    if at >= len(lines) or not lines[at].startswith("index "):
        raise LogProofError("the proof lacks its 'index N' line")
    index = _decimal(lines[at][len("index ") :], "the leaf index")
    at += 1
    hashes = []
    while at < len(lines) and lines[at]:
        node = _base64(lines[at], f"proof line {at + 1}")
        if len(node) != 32:
            raise LogProofError(f"proof line {at + 1} is not a 32-byte hash")
        hashes.append(node)
        at += 1
    if at >= len(lines) - 1:
        raise LogProofError("the proof has no blank line followed by a checkpoint")
    if entry is None:
        raise LogProofError("the proof carries no entry (its 'extra' line is missing)")
    checkpoint = open_checkpoint("\n".join(lines[at + 1 :]), verifier)
    verify_inclusion(leaf_hash(entry), index, checkpoint.size, hashes, checkpoint.root)
    return VerifiedLogProof(entry, index, checkpoint)


@dataclass(frozen=True)
class EnvelopeEntry:
    """An envelope's log entry (``tidemark.v1 envelope``, docs/transparency.md), read
    in its one encoding by :func:`decode_envelope_entry`."""

    sequence: int
    state: str
    #: ``sha256:`` and the hex SHA-256 of the report id as written.
    report: str
    version: int
    category: str
    kind: str
    #: When its batch committed, Unix seconds.
    accepted: int
    #: ``sha256:`` and the hex SHA-256 of the exact DSSE payload bytes.
    payload: str


_NUMBER = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_STATE = re.compile(r"[A-Z]{3}", re.ASCII)


def _whole(value: str, at_least: int, at_most: int, what: str) -> int:
    if not _NUMBER.fullmatch(value) or not at_least <= int(value) <= at_most:
        raise LogProofError(f"its {what} is {value!r}, not a whole number from {at_least}")
    return int(value)


def decode_envelope_entry(entry: bytes) -> EnvelopeEntry:
    """Reads an envelope's log entry only in its one encoding, as ``tidemark verify``
    does (``Entry::decode``): its header, then each field on its own line in the
    documented order, as ``key value`` with one space, decimal numbers in ASCII without
    sign or leading zeros, ``sha256:`` with 64 lower-case hex digits, one line feed at
    the end and nothing after. Any other spelling — a field twice, an extra line, other
    digits — is a :class:`LogProofError`: read leniently, an entry with a second
    ``accepted`` line moved a revoked key's report before its revocation."""
    try:
        text = entry.decode("utf-8")
    except UnicodeDecodeError:
        raise LogProofError("the log entry is not UTF-8") from None
    if not text.endswith("\n"):
        raise LogProofError("the log entry does not end with a line feed")
    lines = text[:-1].split("\n")
    names = ["sequence", "state", "report", "version", "category", "kind", "accepted", "payload"]
    if lines[0] != "tidemark.v1 envelope":
        raise LogProofError(f"not an envelope's log entry: its first line is {lines[0]!r}")
    if len(lines) != 1 + len(names):
        raise LogProofError(
            f"the log entry has {len(lines) - 1} field lines; an envelope's has {len(names)}"
        )
    values = {}
    for number, (line, name) in enumerate(zip(lines[1:], names), start=2):
        key, space, value = line.partition(" ")
        if key != name or not space:
            raise LogProofError(f"line {number} of the log entry is {line!r}, not `{name} …`")
        values[name] = value
    for name, pattern in (("state", _STATE), ("report", _DIGEST), ("payload", _DIGEST)):
        if not pattern.fullmatch(values[name]):
            raise LogProofError(f"its {name} is {values[name]!r}, not in its one spelling")
    if values["category"] not in ("smuggling-incident", "maritime-movement"):
        raise LogProofError(f"its category is {values['category']!r}")
    if values["kind"] not in ("report", "retraction"):
        raise LogProofError(f"its kind is {values['kind']!r}")
    return EnvelopeEntry(
        sequence=_whole(values["sequence"], 1, 2**64 - 1, "sequence"),
        state=values["state"],
        report=values["report"],
        version=_whole(values["version"], 1, 2**32 - 1, "version"),
        category=values["category"],
        kind=values["kind"],
        accepted=_whole(values["accepted"], 0, 2**63 - 1, "acceptance time"),
        payload=values["payload"],
    )
