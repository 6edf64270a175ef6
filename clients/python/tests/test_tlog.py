"""tidemark_client.tlog: the signed-note reference vector of Go's golang.org/x/mod/sumdb/note,
the RFC 6962 inclusion-proof vectors, and real receipts and query results checked offline
(any changed byte fails)."""

from __future__ import annotations

import hashlib

import pytest

from tidemark_client import Client, tlog

# golang.org/x/mod/sumdb/note note_test.go (TestNewVerifier, TestOpen).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"


def test_the_go_signed_note_vector_verifies_and_an_altered_one_does_not():
    peter = tlog.NoteVerifier.parse(PETER_VKEY)
    assert (peter.name, peter.key_id) == ("PeterNeumann", 0xC74F20A3)
    # The Go note's text is not a checkpoint: its signature verifies (with EnochRoot's
    # line ignored), then its two-line body is refused.
    note = f"{TEXT}\n{PETER_SIG}{ENOCH_SIG}"
    with pytest.raises(tlog.LogProofError, match="fewer than its three lines"):
        tlog.open_checkpoint(note, peter)
    altered = note.replace("cryptography", "Cryptography")
    with pytest.raises(tlog.LogProofError, match="does not verify"):
        tlog.open_checkpoint(altered, peter)
    with pytest.raises(tlog.LogProofError, match="was altered"):
        tlog.NoteVerifier.parse(PETER_VKEY.replace("c74f20a3", "c74f20a4"))
    # One spelling of the key id, as `tidemark` reads it.
    with pytest.raises(tlog.LogProofError, match="lower-case"):
        tlog.NoteVerifier.parse(PETER_VKEY.replace("c74f20a3", "C74F20A3"))


def test_a_verifier_key_whose_base64_holds_a_plus_sign_is_read():
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    while True:
        raw = b"\x01" + Ed25519PrivateKey.generate().public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )
        encoded = base64.b64encode(raw).decode()
        if "+" in encoded:
            break
    key_id = int.from_bytes(hashlib.sha256(b"example.com/log\n" + raw).digest()[:4], "big")
    verifier = tlog.NoteVerifier.parse(f"example.com/log+{key_id:08x}+{encoded}")
    assert (verifier.name, verifier.key_id) == ("example.com/log", key_id)


def _signed_checkpoint(name: str, text: str):
    """A note of `text` signed by a fresh Ed25519 key named `name`, and its verifier."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    raw = b"\x01" + key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    signature = base64.b64encode(key_id + key.sign(text.encode())).decode()
    verifier = tlog.NoteVerifier.parse(f"{name}+{key_id.hex()}+{base64.b64encode(raw).decode()}")
    return f"{text}\n\u2014 {name} {signature}\n", verifier


def test_a_checkpoint_is_read_only_as_the_cli_reads_it():
    root = "gMkMHvDptpiLfR6/OtiLjQw7BS9L+L8j2SmqgqaTp4o="
    note, verifier = _signed_checkpoint("example.com/log", f"example.com/log\n2\n{root}\n")
    assert tlog.open_checkpoint(note, verifier).size == 2
    # Another log's checkpoint, signed by this key: refused in open_checkpoint itself.
    note, verifier = _signed_checkpoint("example.com/log", f"other.example/log\n2\n{root}\n")
    with pytest.raises(tlog.LogProofError, match="is of log 'other.example/log'"):
        tlog.open_checkpoint(note, verifier)
    # A control character other than a line feed, signed or not (C2SP signed-note).
    for char in ["\x1b", "\t", "\x00", "\r"]:
        text = f"example.com/log\n2\n{root}\nx{char}y\n"
        note, verifier = _signed_checkpoint("example.com/log", text)
        with pytest.raises(tlog.LogProofError, match="control character"):
            tlog.open_checkpoint(note, verifier)


# RFC 6962 test vectors (as in Go's transparency-dev/merkle): the 8 leaves below, the
# root of all 8, and the inclusion proof of leaf 0 in the tree of 8.
LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
ROOT8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
PROOF_0_8 = [
    bytes.fromhex("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
    bytes.fromhex("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
    bytes.fromhex("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
]


def _root(leaves):
    if len(leaves) == 1:
        return tlog.leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + _root(leaves[:k]) + _root(leaves[k:])).digest()


def _proof(index, leaves):
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if index < k:
        return _proof(index, leaves[:k]) + [_root(leaves[k:])]
    return _proof(index - k, leaves[k:]) + [_root(leaves[:k])]


def test_inclusion_matches_the_rfc_6962_vectors_and_every_leaf_of_small_trees():
    assert _root(LEAVES) == ROOT8
    tlog.verify_inclusion(tlog.leaf_hash(LEAVES[0]), 0, 8, PROOF_0_8, ROOT8)
    with pytest.raises(tlog.LogProofError):
        tlog.verify_inclusion(tlog.leaf_hash(LEAVES[1]), 0, 8, PROOF_0_8, ROOT8)
    for size in range(1, 9):
        root = _root(LEAVES[:size])
        for index in range(size):
            proof = _proof(index, LEAVES[:size])
            tlog.verify_inclusion(tlog.leaf_hash(LEAVES[index]), index, size, proof, root)
            for wrong in (index + 1, index - 1):
                if 0 <= wrong < size and LEAVES[wrong] != LEAVES[index]:
                    with pytest.raises(tlog.LogProofError):
                        tlog.verify_inclusion(tlog.leaf_hash(LEAVES[index]), wrong, size, proof, root)
            with pytest.raises(tlog.LogProofError):
                tlog.verify_inclusion(tlog.leaf_hash(LEAVES[index]), index, size, proof + [root], root)


def _consistency(m, leaves, whole=True):
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [_root(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return _consistency(m, leaves[:k], whole) + [_root(leaves[k:])]
    return _consistency(m - k, leaves[k:], False) + [_root(leaves[:k])]


def test_consistency_holds_between_every_pair_of_sizes_and_fails_when_altered():
    for new in range(1, 9):
        for old in range(1, new + 1):
            old_root, new_root = _root(LEAVES[:old]), _root(LEAVES[:new])
            proof = _consistency(old, LEAVES[:new])
            tlog.verify_consistency(old, new, old_root, new_root, proof)
            for at in range(len(proof)):
                altered = list(proof)
                altered[at] = bytes(32)
                with pytest.raises(tlog.LogProofError):
                    tlog.verify_consistency(old, new, old_root, new_root, altered)
            if old < new:
                with pytest.raises(tlog.LogProofError):
                    tlog.verify_consistency(old, new, old_root, bytes(32), proof)
                with pytest.raises(tlog.LogProofError):
                    tlog.verify_consistency(old, new, old_root, new_root, proof + [new_root])
    with pytest.raises(tlog.LogProofError, match="shrank"):
        tlog.verify_consistency(5, 4, ROOT8, ROOT8, [])


def test_the_server_log_only_grows_as_its_checkpoints_say(server):
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        log_key = aus.log_verifier_key()
        verifier = tlog.NoteVerifier.parse(log_key)
        reports = server.sample_reports("AUS", 4, seed=21)
        aus.submit(reports[0])
        old = tlog.open_checkpoint(aus.checkpoint(), verifier)
        for report in reports[1:]:
            aus.submit(report)
        new = tlog.open_checkpoint(aus.checkpoint(), verifier)
        assert new.size > old.size
        proof = aus.consistency_proof(old.size, new.size)
        tlog.verify_consistency(old.size, new.size, old.root, new.root, proof)
        with pytest.raises(tlog.LogProofError):
            tlog.verify_consistency(old.size, new.size, old.root, new.root, proof[:-1])
        with pytest.raises(tlog.LogProofError):
            tlog.verify_consistency(old.size, new.size, bytes(32), new.root, proof)


def test_a_checkpoint_cosigned_by_a_states_witness_is_told_and_a_forged_cosignature_is_not(
    server, tmp_path
):
    import subprocess

    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        aus.submit(server.sample_reports("AUS", 1, seed=31)[0])
        log_key = aus.log_verifier_key()
        witness = tmp_path / "witness"
        for _ in range(2):  # the first run records the log, the second cosigns
            subprocess.run(
                [server.bin, "log", "witness", "--state-dir", str(witness),
                 "--endpoint", server.endpoint, "--as", str(server.profile("aus-node"))],
                check=True, capture_output=True,
            )
        witness_key = (witness / "witness.vkey").read_text().strip()
        note = aus.checkpoint()
    name = tlog.WitnessKey.parse(witness_key).name
    assert name.endswith("/witness/AUS")
    assert tlog.cosigned_by(note, log_key, [witness_key, witness_key]) == [name]
    # A cosignature line of a known witness whose signature was changed rejects the note.
    lines = note.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(f"\u2014 {name} "))
    head, signature = lines[at].rsplit(" ", 1)
    at_char = len(signature) - 10  # inside the Ed25519 signature's bytes
    other = "A" if signature[at_char] != "A" else "B"
    flipped = signature[:at_char] + other + signature[at_char + 1 :]
    good = lines[at]
    lines[at] = f"{head} {flipped}"
    with pytest.raises(tlog.LogProofError, match="does not verify"):
        tlog.cosigned_by("\n".join(lines), log_key, [witness_key])
    # ... also after a good line by the same witness (every line is checked).
    lines.insert(at, good)
    with pytest.raises(tlog.LogProofError, match="does not verify"):
        tlog.cosigned_by("\n".join(lines), log_key, [witness_key])
    with pytest.raises(tlog.LogProofError):
        tlog.WitnessKey.parse(log_key)  # a log's key is not a witness's


def test_a_receipt_verifies_offline_and_fails_on_any_changed_byte(server):
    report = server.sample_reports("AUS", 1, seed=11)[0]
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        log_key = aus.log_verifier_key()
        done = aus.submit(report)
    assert log_key == (server.certs / "log.vkey").read_text().strip()
    proven = tlog.verify_log_proof(done.log_proof, log_key)
    assert proven.index >= 0 and proven.checkpoint.origin == log_key.split("+")[0]
    assert tlog.decode_envelope_entry(proven.entry).accepted == done.receipt.accepted_at_unix
    assert tlog.verify_log_proof(done.log_proof.replace("\n", "\r\n"), log_key).index == proven.index
    text = done.log_proof.encode()
    for at in range(len(text)):
        changed = bytearray(text)
        changed[at] ^= 0x01
        try:
            changed_text = changed.decode()
        except UnicodeDecodeError:
            continue
        with pytest.raises(tlog.LogProofError):
            tlog.verify_log_proof(changed_text, log_key)
    other = tlog.NoteVerifier.parse(PETER_VKEY)
    with pytest.raises(tlog.LogProofError):
        tlog.verify_log_proof(done.log_proof, PETER_VKEY)
    assert other.name == "PeterNeumann"


def test_query_results_prove_their_acceptance(server):
    def smuggling(state, seed):
        return [r for r in server.sample_reports(state, 12, seed=seed) if "smuggling" in r]

    submitted = smuggling("AUS", 12)[:3]
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        for report in submitted:
            aus.submit(report)
    with Client.from_profile(server.endpoint, server.profile("idn-node")) as idn:
        idn.submit(smuggling("IDN", 13)[0])
        log_key = idn.log_verifier_key()
        keys = idn.signing_keys("AUS")
        results = list(idn.query("smuggling", reporting_states=["AUS"], include_log_proofs=True))
        assert len(results) == len(submitted) == 3
        for r in results:
            assert idn.verify(r.envelope, keys, r.meta.accepted_at_unix, r.log_proof, log_key)
        first, second = results[0], results[1]
        with pytest.raises(ValueError, match="something else"):
            idn.verify(first.envelope, keys, log_proof=second.log_proof, log_key=log_key)
        with pytest.raises(ValueError, match="the meta was altered"):
            idn.verify(first.envelope, keys, first.meta.accepted_at_unix - 60, first.log_proof, log_key)
        with pytest.raises(ValueError, match="log_key"):
            idn.verify(first.envelope, keys, log_proof=first.log_proof)
        # A key to check against, and nothing to check: refused, not passed over.
        with pytest.raises(ValueError, match="without log_proof"):
            idn.verify(first.envelope, keys, log_key=log_key)


def test_a_public_key_of_small_order_is_refused():
    """The identity point 'verifies' a zero signature on any message (OpenSSL agrees), so
    load_public_key refuses it and the other small-order keys, in both sign encodings."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from tidemark_client import dsse

    def pem(raw: bytes) -> str:
        der = bytes.fromhex("302a300506032b6570032100") + raw
        body = base64.b64encode(der).decode()
        return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"

    identity = bytes([1]) + bytes(31)
    forged = bytes([1]) + bytes(63)
    Ed25519PublicKey.from_public_bytes(identity).verify(forged, b"any report")
    for raw in dsse._SMALL_ORDER_Y:
        for sign in (0, 0x80):
            weak = raw[:31] + bytes([raw[31] | sign])
            with pytest.raises(ValueError, match="small order"):
                dsse.load_public_key(pem(weak))
    real = Ed25519PrivateKey.generate().public_key()
    assert dsse.load_public_key(pem(real.public_bytes(Encoding.Raw, PublicFormat.Raw)))


def test_a_log_or_witness_key_of_small_order_is_refused():
    """A checkpoint or cosignature 'signed' by the identity point needs no private key:
    such verifier keys are refused, for the log (0x01) and for witnesses (0x04)."""
    import base64

    identity = bytes([1]) + bytes(31)
    for kind in (0x01, 0x04):
        raw = bytes([kind]) + identity
        key_id = tlog._key_id("evil.example/log", raw)
        vkey = f"evil.example/log+{key_id:08x}+{base64.b64encode(raw).decode()}"
        with pytest.raises(tlog.LogProofError, match="small order"):
            tlog._parse_key(vkey, kind, "verifier key", "the log")


def test_a_ca_bundle_with_a_key_of_small_order_is_refused():
    """A CA whose key is the identity point could 'sign' any server certificate: the
    client refuses a bundle holding one, naming its place."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.x509.oid import NameOID

    from tidemark_client.client import _no_weak_ca

    issuer_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(public_key) -> bytes:  # type: ignore[no-untyped-def]
        built = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(issuer_key, hashes.SHA256())
        )
        return built.public_bytes(serialization.Encoding.PEM)

    good = cert(issuer_key.public_key())
    weak = cert(Ed25519PublicKey.from_public_bytes(bytes([1]) + bytes(31)))
    _no_weak_ca(good)
    with pytest.raises(ValueError, match="certificate 2 has an Ed25519 key of small order"):
        _no_weak_ca(good + weak)


_ENTRY = (
    "tidemark.v1 envelope\nsequence 12\nstate AUS\nreport sha256:" + "ab" * 32
    + "\nversion 1\ncategory smuggling-incident\nkind report\naccepted 1796609216\n"
    "payload sha256:" + "cd" * 32 + "\n"
)


def test_an_envelope_entry_is_read_only_in_its_one_encoding():
    entry = tlog.decode_envelope_entry(_ENTRY.encode())
    assert (entry.sequence, entry.state, entry.accepted) == (12, "AUS", 1796609216)
    for changed in [
        # A second, earlier acceptance time before the real one.
        _ENTRY.replace("accepted 1796609216", "accepted 1796609211\naccepted 1796609216"),
        _ENTRY.replace("1796609216", "\u0661\u0667\u0669\u0666\u0666\u0660\u0669\u0662\u0661\u0666"),
        _ENTRY.replace("accepted 1796609216", "accepted 01796609216"),
        _ENTRY[:-1],
        _ENTRY + "note hello\n",
        _ENTRY.replace("state AUS", "state  AUS"),
        _ENTRY.replace("state AUS", "state aus"),
        _ENTRY.replace("report sha256:ab", "report sha256:AB"),
        _ENTRY.replace("kind report", "kind Report"),
        _ENTRY.replace("version 1\n", "version 0\n"),
        _ENTRY.replace("tidemark.v1 envelope", "tidemark.v1  envelope"),
    ]:
        with pytest.raises(tlog.LogProofError):
            tlog.decode_envelope_entry(changed.encode())


def test_an_entry_must_record_what_the_payload_says():
    import hashlib

    from tidemark.v1 import envelope_pb2, report_pb2
    from tidemark_client import dsse
    from tidemark_client.client import _entry_disagrees

    report = report_pb2.Report(
        report_id="0f8fad5b-d9cb-469f-a165-70867728950e",
        reporting_state="AUS",
        version=1,
        smuggling=report_pb2.SmugglingIncident(),
    )
    envelope = envelope_pb2.Envelope(
        payload_type=dsse.REPORT_PAYLOAD_TYPE, payload=report.SerializeToString()
    )
    text = _ENTRY.replace(
        "sha256:" + "ab" * 32, "sha256:" + hashlib.sha256(report.report_id.encode()).hexdigest()
    )
    assert _entry_disagrees(tlog.decode_envelope_entry(text.encode()), envelope) == ""
    for field, changed in [
        ("state", text.replace("state AUS", "state THA")),
        ("version", text.replace("version 1", "version 7")),
        ("kind", text.replace("kind report", "kind retraction")),
        ("category", text.replace("smuggling-incident", "maritime-movement")),
        ("report", _ENTRY),
    ]:
        said = _entry_disagrees(tlog.decode_envelope_entry(changed.encode()), envelope)
        assert said.startswith(f"{field} "), said
    # A payload not in its one encoding (a retraction under the report's type) is not
    # compared field by field: `verify` refuses it for what it is.
    retraction = report_pb2.Retraction(report_id=report.report_id, reporting_state="AUS", version=2)
    misfiled = envelope_pb2.Envelope(
        payload_type=dsse.REPORT_PAYLOAD_TYPE, payload=retraction.SerializeToString()
    )
    assert _entry_disagrees(tlog.decode_envelope_entry(text.encode()), misfiled) == ""
