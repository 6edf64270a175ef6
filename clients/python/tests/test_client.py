"""tidemark-client against a real server: submit and receipt, a refusal with its reason,
field violations, a query verified with DSSE, an aggregate, an import."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import grpc
import pytest

from tidemark_client import Client, TidemarkError, dsse, tlog
from google.protobuf import json_format
from tidemark.v1 import report_pb2


def json_format_message(report: dict) -> report_pb2.Report:
    return json_format.ParseDict(report, report_pb2.Report())


def test_submit_returns_a_log_proof_and_a_duplicate_gets_the_original(server):
    report = server.sample_reports("AUS", 1, seed=1)[0]
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        assert aus.whoami().state == "AUS"
        first = aus.submit(report)
        assert first.log_proof.startswith("c2sp.org/tlog-proof@v1\n")
        assert not first.duplicate
        assert first.receipt.report_id == report["reportId"]
        again = aus.submit(report)
        assert again.duplicate
        assert again.receipt.sequence == first.receipt.sequence
        assert first.signed_receipt is None
        signed = aus.submit(report, signed_receipt=True)
        facts = aus.verify_receipt(signed.signed_receipt, aus.server_key())
        assert facts == first.receipt
        altered = signed.signed_receipt
        altered.payload = altered.payload + b"\x00"
        with pytest.raises(ValueError):
            aus.verify_receipt(altered, aus.server_key())
    with Client.from_profile(server.endpoint, server.profile("operator")) as operator:
        assert operator.enrol_state("FRA").state == "FRA"
        assert any(e.action == "enrol-state" for e in operator.audit_log(limit=1000))
        with pytest.raises(TidemarkError) as refused:
            Client.from_profile(server.endpoint, server.profile("aus-node")).audit_log()
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_a_negative_zero_is_submitted_in_the_one_encoding_the_server_takes(server):
    report = server.sample_reports("AUS", 1, seed=11)[0]
    report["location"]["point"] = {"latitude": -0.0, "longitude": 110.5}
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        assert not aus.submit(report).duplicate


def test_a_refusal_carries_its_code_and_give_to_get_reason(server):
    with Client.from_profile(server.endpoint, server.profile("idn-node")) as idn:
        with pytest.raises(TidemarkError) as refused:
            list(idn.query("smuggling"))
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.reason == "INSUFFICIENT_CONTRIBUTION"
    assert refused.value.metadata["state"] == "IDN"


def test_a_bad_report_is_refused_naming_each_field(server):
    report = server.sample_reports("AUS", 1, seed=2)[0]
    report["incidentDate"] = "2024-+2-+9"
    report["reportId"] = "{" + report["reportId"].upper() + "}"
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        with pytest.raises(TidemarkError) as refused:
            aus.submit(report)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in refused.value.violations]
    assert "incident_date" in fields and "report_id" in fields, refused.value.violations


def test_a_query_returns_envelopes_that_verify_with_the_owner_key(server):
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        for report in server.sample_reports("AUS", 5, seed=3):
            aus.submit(report)
    with Client.from_profile(server.endpoint, server.profile("idn-node")) as idn:
        idn.submit(server.sample_reports("IDN", 1, seed=4)[0])
        keys = idn.signing_keys("AUS")
        results = list(idn.query("smuggling", reporting_states=["AUS"]))
        assert results
        for result in results:
            report = idn.verify(result.envelope, keys, result.meta.accepted_at_unix)
            assert report.reporting_state == "AUS"
        # Signed by a key revoked before the acceptance: untrusted, and said so — not
        # taken for tampering.
        first = results[0]
        revoked = {
            k: dataclasses.replace(v, revoked_at=first.meta.accepted_at_unix - 1)
            for k, v in keys.items()
        }
        with pytest.raises(ValueError, match="untrusted: signed by key [0-9a-f]+ of AUS, revoked as of"):
            idn.verify(first.envelope, revoked, first.meta.accepted_at_unix)
        # One changed byte and it no longer verifies.
        altered = results[0].envelope
        altered.payload = altered.payload[:-1] + bytes([altered.payload[-1] ^ 1])
        with pytest.raises(ValueError):
            idn.verify(altered, keys)
        # Signed with another state's key: not AUS's report, whatever it says.
        tha = dsse.load_private_key(str(server.certs / "tha-signing.key"))
        forged = dsse.sign(dsse.REPORT_PAYLOAD_TYPE, results[1].envelope.payload, tha)
        with pytest.raises(ValueError, match="not of the state the envelope names"):
            idn.verify(forged)
        # Signed, but not in the one encoding: an unknown field (99, "hidden note")
        # appended, or the report id given a second time.
        aus_key = dsse.load_private_key(str(server.certs / "aus-signing.key"))
        payload = results[1].envelope.payload  # results[0]'s was altered above
        hidden = bytes([0x9A, 0x06, 11]) + b"hidden note"
        second_id = bytes([0x0A, 36]) + b"00000000-0000-4000-8000-000000000000"
        for padded in (payload + hidden, payload + second_id):
            with pytest.raises(ValueError, match="one encoding"):
                idn.verify(dsse.sign(dsse.REPORT_PAYLOAD_TYPE, padded, aus_key), keys)
        assert idn.verify(dsse.sign(dsse.REPORT_PAYLOAD_TYPE, payload, aus_key), keys)
        # A retraction is read as one.
        retraction = report_pb2.Retraction(
            report_id=report.report_id, reporting_state="AUS", version=2, reason="duplicate"
        )
        signed = dsse.sign(
            dsse.RETRACTION_PAYLOAD_TYPE,
            retraction.SerializeToString(),
            dsse.load_private_key(str(server.certs / "aus-signing.key")),
        )
        assert idn.verify(signed) == retraction
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        accesses = aus.access_to_my_data()
        assert any(a.reader_state == "IDN" and a.action == "query" for a in accesses)


def test_an_aggregate_and_an_import(server):
    reports = server.sample_reports("AUS", 30, seed=5)
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        # A report that cannot be read, or is too large to send, is rejected at its
        # index; the others are imported (kind 13: one bad record never ends a batch).
        oversized = dict(reports[2], narrative="y" * (5 << 20))
        unknown_country = dict(reports[4], location=dict(reports[4]["location"], country="ZZZ"))
        broken = [
            reports[0],
            {"persons": {"total": -1}},
            oversized,
            dict(reports[3], bogus=1),
            unknown_country,  # refused by the server: its index is still this list's
            reports[1],
            "[" * 100_000 + "]" * 100_000,  # nested past any reader's depth
        ]
        summary = aus.import_reports(broken)
        assert (summary.accepted, summary.rejected) == (2, 5)
        assert [(r.index, r.code) for r in summary.rejections] == [
            (1, "INVALID_ARGUMENT"),
            (2, "RESOURCE_EXHAUSTED"),
            (3, "INVALID_ARGUMENT"),
            (4, "INVALID_ARGUMENT"),
            (6, "INVALID_ARGUMENT"),
        ]
        assert "country" in str(summary.rejections[3].violations)
        summary = aus.import_reports(reports)
        assert (summary.accepted, summary.duplicates, summary.rejected) == (28, 2, 0)
        again = aus.import_reports(reports[:3])
        assert again.duplicates == 3
    with Client.from_profile(server.endpoint, server.profile("regional-analyst")) as analyst:
        table = analyst.aggregate(["state"], ["reports", "persons"])
        total = [c for c in table.cells if all(k == "*" for k in c.keys)]
        # The regional analyst's answers are perturbed by the cell key method: the
        # shown count is within the documented deviation of the true 30, and the
        # answer says so.
        protection = table.protection
        assert protection.method == "cell-key"
        assert total
        assert abs(total[0].values[0] - 30) <= protection.max_count_deviation
        # Every enum filter takes the spelling `tidemark aggregate` takes, or the proto's.
        for filters in (
            {"modus_operandi": "sea"},
            {"modus_operandi": "MODUS_OPERANDI_SEA"},
            {"category": "maritime", "vessel_type": "rubber-dinghy"},
            {"category": "maritime", "maritime_event": "rescue"},
        ):
            analyst.aggregate(["year"], ["reports"], **filters)
        with pytest.raises(ValueError, match="vessel_type 'Rubber-Dinghy' is not one of: .*rubber-dinghy"):
            analyst.aggregate(["year"], vessel_type="Rubber-Dinghy")


def test_an_import_past_the_servers_limit_on_one_call_goes_on_in_calls_it_takes(small_import_server):
    server = small_import_server
    reports = server.sample_reports("AUS", 8, seed=8)
    reports[1]["location"]["country"] = "ZZZ"
    reports[6]["location"]["country"] = "ZZZ"
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        summary = aus.import_reports(reports)
    assert (summary.accepted, summary.rejected) == (6, 2)
    assert [(r.index, r.code) for r in summary.rejections] == [
        (1, "INVALID_ARGUMENT"),
        (6, "INVALID_ARGUMENT"),
    ]


def test_a_report_larger_than_the_server_takes_is_rejected_alone(small_message_server):
    """The client's own limit is larger than the server's: the server ends the import at
    the envelope it will not take; that one is rejected at its index and the rest go on
    (kind 13: one bad record never ends a batch)."""
    server = small_message_server
    reports = server.sample_reports("AUS", 4, seed=9)
    reports[1]["narrative"] = "a long narrative " * 600  # over 8 KiB signed
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        summary = aus.import_reports(reports)
    assert (summary.accepted, summary.rejected) == (3, 1)
    [refused] = summary.rejections
    assert (refused.index, refused.code) == (1, "RESOURCE_EXHAUSTED")


def test_an_import_the_server_ends_for_the_callers_rights_says_what_it_did(server):
    reports = server.sample_reports("AUS", 3, seed=8)
    with Client.from_profile(server.endpoint, server.profile("operator")) as operator:
        operator.suspend_state("AUS")
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        with pytest.raises(TidemarkError) as ended:
            aus.import_reports(reports)
    error = ended.value
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.partial is not None
    assert error.partial.accepted == 0


def test_a_read_over_budget_says_when_to_retry_and_is_waited_out(small_read_budget_server, monkeypatch):
    import tidemark_client.client as client_module

    server = small_read_budget_server
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        for _ in range(60):
            list(aus.query("smuggling", reporting_states=["AUS"]))
        # Not waited out: the refusal says when to retry, and names its audit record.
        monkeypatch.setattr(client_module, "PUSHBACK_RETRIES", 0)
        with pytest.raises(TidemarkError) as refused:
            list(aus.query("smuggling", reporting_states=["AUS"]))
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 60
        assert refused.value.audit_record
        # Waited out, as the CLI does: the next read goes through.
        monkeypatch.undo()
        list(aus.query("smuggling", reporting_states=["AUS"]))


def test_an_error_survives_pickling(server):
    import pickle

    with Client.from_profile(server.endpoint, server.profile("idn-node")) as idn:
        with pytest.raises(TidemarkError) as refused:
            list(idn.query("smuggling"))
    again = pickle.loads(pickle.dumps(refused.value))
    assert (again.code, again.reason, again.metadata) == (
        refused.value.code,
        refused.value.reason,
        refused.value.metadata,
    )


def test_dsse_matches_the_specification_example():
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    key = dsse.Ed25519PrivateKey.generate()
    envelope = dsse.sign(dsse.REPORT_PAYLOAD_TYPE, report_pb2.Report(report_id="x").SerializeToString(), key)
    assert dsse.verified_by(envelope, [key.public_key()]) is not None
    assert len(envelope.signatures[0].keyid) == 64


def test_keys_tidemark_writes_are_read_by_an_independent_parser(server, tmp_path):
    """PKCS#8 v1 private keys and SubjectPublicKeyInfo public keys, as Python's
    `cryptography` (OpenSSL) reads them; a signature made with the one verifies with the
    other."""
    import subprocess

    stem = tmp_path / "canberra"
    subprocess.run([server.bin, "keygen", "--out", str(stem)], check=True, capture_output=True)
    private = dsse.load_private_key(str(stem) + ".key")
    public = dsse.load_public_key((tmp_path / "canberra.pub.pem").read_bytes())
    public.verify(private.sign(b"hello"), b"hello")
    with open(str(stem) + ".key", "rb") as f:
        der_len = len(__import__("base64").b64decode(b"".join(f.read().splitlines()[1:-1])))
    assert der_len == 48, "PKCS#8 v1 (RFC 8410 §7), no public key inside"


def _channel(server, profile):
    certs = server.certs
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / f"{profile}.key").read_bytes(),
        certificate_chain=(certs / f"{profile}.pem").read_bytes(),
    )
    return grpc.secure_channel(server.endpoint.removeprefix("https://"), credentials)


def test_python_health_checks_every_service_serving(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with _channel(server, "aus-node") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ["", "tidemark.v1.Exchange", "tidemark.v1.Analytics", "tidemark.v1.Admin",
                        "tidemark.v1.Transparency"]:
            answer = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service


def test_python_reflection_lists_services_and_describes_a_method(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with _channel(server, "aus-node") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"tidemark.v1.Exchange", "tidemark.v1.Transparency", "grpc.health.v1.Health"} <= services
        file = database.FindFileContainingSymbol("tidemark.v1.Exchange")
        assert any(s.name == "Exchange" for s in file.service)


def test_a_report_is_read_in_one_spelling_only_and_past_a_byte_order_mark(server):
    report = server.sample_reports("AUS", 1, seed=41)[0]
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        # A key given twice in the JSON text, or a field under both its names, is refused
        # (the parser would keep one, and sign what the author may not have meant).
        text = json.dumps(report)
        twice = text[:-1] + ', "reportId": "%s"}' % uuid.uuid4()
        with pytest.raises(ValueError, match="given twice"):
            aus.submit(twice)
        both = dict(report, report_id=str(uuid.uuid4()))
        with pytest.raises(ValueError, match="given twice, as"):
            aus.submit(both)
        # Anything it cannot read is a ValueError, not a parser's own exception.
        for bad in ([42], dict(report, unknownField=1), dict(report, persons={"total": 1.5})):
            with pytest.raises(ValueError):
                aus.submit(bad)
        # A message carrying fields its schema does not define is refused before signing.
        message = report_pb2.Report()
        message.ParseFromString(
            json_format_message(report).SerializeToString() + b"\xf8\x3e\x01"
        )
        with pytest.raises(ValueError, match="does not define"):
            aus.submit(message)
        # A leading byte-order mark is skipped, in text and in bytes.
        assert not aus.submit("\ufeff" + text).duplicate
        assert aus.submit(("\ufeff" + text).encode()).duplicate


def test_a_log_proof_file_is_read_as_the_cli_reads_it(server):
    report = server.sample_reports("AUS", 1, seed=42)[0]
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        proof = aus.submit(report).log_proof
        key = aus.log_verifier_key()
    for saved in ("\ufeff" + proof, proof.rstrip("\n"), proof + "\n\n", proof.replace("\n", "\r\n")):
        assert tlog.verify_log_proof(saved, key).index == tlog.verify_log_proof(proof, key).index


def test_a_stream_left_early_ends_at_once_and_the_owner_is_told_little(server, tmp_path):
    """With the client's channel options the server cannot send thousands of reports
    ahead of the application: a query left after one result has taken few."""
    reports = server.sample_reports("AUS", 3000, seed=43)
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        assert aus.import_reports(reports).accepted == 3000
        with Client.from_profile(server.endpoint, server.profile("tha-node")) as tha:
            tha.submit(server.sample_reports("THA", 1, seed=44)[0])
            with tha.query("smuggling", reporting_states=["AUS"]) as results:
                next(iter(results))
                time.sleep(1.0)
        time.sleep(0.5)
        read = [a for a in aus.access_to_my_data() if a.reader_state == "THA"]
    assert read and not read[0].in_progress, read
    # About 200 with the options; 1,100 without them (the window grown by gRPC's
    # bandwidth-delay probe), of the 3,000 the query matched.
    assert read[0].count < 600, read[0].count


def test_a_profile_signs_with_its_states_key_and_retracts(server):
    certs = server.certs
    for suffix in ("pem", "key"):
        (certs / f"canberra-1.{suffix}").write_bytes((certs / f"aus-node.{suffix}").read_bytes())
    report, kept = [r for r in server.sample_reports("AUS", 10, seed=45) if "smuggling" in r][:2]
    with Client.from_profile(server.endpoint, certs / "canberra-1") as aus:
        assert aus.signing_key is not None
        aus.submit(kept)
        aus.submit(report)
        retracted = aus.retract(report["reportId"], 2, "entered twice")
        assert retracted.receipt.version == 2
        items = list(aus.sync("smuggling", include_log_proofs=True))
        assert items and all(item.log_proof for item in items)


def test_bad_arguments_are_value_errors_that_name_them(server):
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        with pytest.raises(ValueError, match="not one of: smuggling, maritime"):
            aus.query("SMUGGLING")
        with pytest.raises(ValueError, match="takes a list"):
            aus.query("smuggling", reporting_states="IDN")
        # A state in another spelling is the server's to refuse, not the client's to mend.
        with pytest.raises(TidemarkError) as refused:
            aus.signing_keys("aus")
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        # Numbers out of their field's range name the message and what was given.
        with pytest.raises(ValueError, match="GetConsistencyProofRequest: .*given"):
            aus.consistency_proof(-1)
        with pytest.raises(ValueError, match="Retraction: .*'version': -1"):
            aus.retract("0f8fad5b-d9cb-469f-a165-70867728950e", -1, "x")
    with Client.from_profile(server.endpoint, server.profile("aus-analyst")) as analyst:
        with pytest.raises(ValueError, match="takes a list"):
            analyst.aggregate("month")
    with Client.from_profile(server.endpoint, server.profile("operator")) as operator:
        for bad in ({"after": -1}, {"limit": -5}, {"after": "5"}):
            with pytest.raises(ValueError, match="AuditLogRequest: "):
                operator.audit_log(**bad)


def test_numbers_and_enums_are_read_in_the_spellings_the_cli_reads(server):
    report = server.sample_reports("AUS", 1, seed=46)[0]
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        for spelling in ("1_0", "+1", " 1", "1\n", "01", "\u0661", "\uff11"):
            bad = json.loads(json.dumps(report))
            bad["persons"]["deaths"] = spelling
            with pytest.raises(ValueError, match="persons.deaths"):
                aus.sign(bad)
        bad = json.loads(json.dumps(report))
        bad["sharing"]["scope"] = "1"
        with pytest.raises(ValueError, match="sharing.scope"):
            aus.sign(bad)
        # What the proto3 JSON mapping writes is read: a quoted integer, an integral float.
        good = json.loads(json.dumps(report))
        good["persons"]["deaths"] = "2"
        good["persons"]["total"] = float(good["persons"]["total"])
        assert aus.verify(aus.sign(good), aus.signing_keys()).persons.deaths == 2


def test_file_borne_texts_are_read_past_a_byte_order_mark(server, tmp_path):
    report = server.sample_reports("AUS", 1, seed=47)[0]
    for name in ("aus-node.pem", "aus-node.key", "ca.pem"):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + (server.certs / name).read_bytes())
    with Client.from_profile(server.endpoint, tmp_path / "aus-node",
                             signing_key=server.certs / "aus-signing.key") as aus:
        assert aus.whoami().state == "AUS"
        proof = aus.submit(report).log_proof
        key = aus.log_verifier_key()
        note = aus.checkpoint()
    marked = "\ufeff" + key + "\n"
    assert tlog.verify_log_proof(proof, marked).index >= 0
    # The key id in one spelling, lower case, as the CLI reads it (and as signers write it).
    name, hex_id, rest = key.split("+", 2)
    if hex_id != hex_id.upper():
        with pytest.raises(tlog.LogProofError, match="lower-case"):
            tlog.verify_log_proof(proof, f"{name}+{hex_id.upper()}+{rest}")
    opened = tlog.open_checkpoint("\ufeff" + note.replace("\n", "\r\n"), tlog.NoteVerifier.parse(marked))
    assert opened.size >= 1


def test_an_envelope_signed_by_two_states_verifies_by_the_key_of_the_one_it_names(server):
    report = server.sample_reports("AUS", 1, seed=48)[0]
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        keys = aus.signing_keys()
        envelope = aus.sign(report)
        tha = dsse.load_private_key(str(server.certs / "tha-signing.key"))
        foreign = dsse.sign(dsse.REPORT_PAYLOAD_TYPE, envelope.payload, tha).signatures[0]
        both = type(envelope)(payload_type=envelope.payload_type, payload=envelope.payload)
        both.signatures.extend([foreign, envelope.signatures[0]])
        assert aus.verify(both, keys).reporting_state == "AUS"
        only_tha = type(envelope)(payload_type=envelope.payload_type, payload=envelope.payload)
        only_tha.signatures.extend([foreign])
        with pytest.raises(ValueError, match="not of the state"):
            aus.verify(only_tha, keys)


def test_local_mistakes_are_value_errors(server):
    with pytest.raises(ValueError, match="https://"):
        Client.from_profile("http://127.0.0.1:1", server.profile("aus-node"))
    # An endpoint is written one way, as `tidemark --endpoint` takes it.
    for endpoint, said in (
        ("https://127.0.0.1:055650", "leading zero: write 55650"),
        ("https://127.0.0.1:+5", "not a port"),
        ("https://127.0.0.1:5?a=1", "a query"),
        ("https://127.0.0.1:5/x", "a path"),
        ("https://u@127.0.0.1:5", "a user name"),
        ("https://[0:0:0:0:0:0:0:1]:5", r"write https://\[::1\]:5"),
        ("https://LOCALHOST:5", "write https://localhost:5"),
        ("https://127.0.0.1", "names no port"),
        ("https://127.0.0.01:5", "not a host name"),
        ("https://2130706433:5", "not a host name"),
        ("https://localhost.:5", "not a host name"),
        ("https://[fe80::1%eth0]:5", "without a zone"),
        ("https://[::ffff:7f00:1]:5", r"write https://\[::ffff:127.0.0.1\]:5"),
    ):
        with pytest.raises(ValueError, match=said):
            Client.from_profile(endpoint, server.profile("aus-node"))
    host, port = server.endpoint.removeprefix("https://").rsplit(":", 1)
    with Client.from_profile(f"https://{host}:{port}/", server.profile("aus-node")) as aus:
        assert aus.whoami().spiffe_id
    with Client.from_profile(server.endpoint, server.profile("aus-node")) as aus:
        with pytest.raises(ValueError, match="QueryRequest"):
            aus.query("smuggling", limit="5")
    with Client.from_profile(server.endpoint, server.profile("aus-analyst")) as analyst:
        with pytest.raises(ValueError, match="not one of: month"):
            analyst.aggregate(["Month"])


def test_a_connection_closed_during_a_call_says_what_it_may_mean():
    from tidemark_client.errors import _unavailable_hint

    for said in ("Stream removed", "Socket closed"):
        hint = _unavailable_hint(said)
        assert "revoked" in hint and "whoami" in hint, hint
    assert "revoked" in _unavailable_hint("TSI_DATA_CORRUPTED")
    assert _unavailable_hint("failed to connect to all addresses") == ""
