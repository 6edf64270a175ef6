"""The Tidemark client: one mutual-TLS channel, typed calls, DSSE signing built in."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import time

from google.protobuf.message import DecodeError, Message
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Generic, Iterable, Iterator, List, Mapping, Optional, Tuple, Type, TypeVar, Union, cast

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from tidemark.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    analytics_pb2,
    analytics_pb2_grpc,
    envelope_pb2,
    exchange_pb2,
    exchange_pb2_grpc,
    report_pb2,
    transparency_pb2,
    transparency_pb2_grpc,
)

from . import dsse, tlog
from .errors import PUSHBACK_RETRIES, TidemarkError

ReportLike = Union[report_pb2.Report, Mapping[str, Any], str, bytes]
T = TypeVar("T")


@dataclass(frozen=True)
class SigningKey:
    """A registered report-signing key, as the server lists it."""

    key_id: str
    #: The state whose reports it signs (ISO 3166-1 alpha-3).
    state: str
    public_key: Ed25519PublicKey
    #: Unix seconds; `valid_until` and `revoked_at` are 0 when unset.
    valid_from: int
    valid_until: int
    revoked_at: int

    def active_at(self, at: int) -> bool:
        """Whether it may sign at Unix time `at`."""
        return (
            at >= self.valid_from
            and (self.valid_until == 0 or at < self.valid_until)
            and (self.revoked_at == 0 or at < self.revoked_at)
        )


class Stream(Generic[T]):
    """The results of a streaming call: iterate them, or `cancel()` the call (from any
    thread). Errors are raised as :class:`TidemarkError` while iterating. A call the
    server refuses over the caller's budget of reads before it sends anything is made
    again after the wait the server asks for, up to ``PUSHBACK_RETRIES`` times (as
    `tidemark query` and `sync` do)."""

    def __init__(self, call: Any, restart: Optional[Any] = None) -> None:
        self._call = call
        self._restart = restart
        self._started = False
        self._retries = PUSHBACK_RETRIES

    def __iter__(self) -> "Stream[T]":
        return self

    def __next__(self) -> T:
        while True:
            try:
                item = next(self._call)
                self._started = True
                return cast(T, item)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.CANCELLED and self._call.cancelled():
                    raise StopIteration from None
                refused = TidemarkError.from_rpc_error(error)
                if self._started or self._restart is None or not _waits_out(refused, self._retries):
                    raise refused from None
                self._retries -= 1
                self._call = self._restart()

    def cancel(self) -> None:
        """Ends the call; iteration then stops."""
        self._call.cancel()

    def close(self) -> None:
        """Ends the call (as :meth:`cancel`): call it when leaving a loop early, or use the
        stream in a ``with`` block, so that the read ends at once rather than when the
        stream is garbage-collected (until then the server goes on sending, and counts
        what it sent as read)."""
        self._call.cancel()

    def __enter__(self) -> "Stream[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self._call.cancel()

def _waits_out(refused: TidemarkError, retries: int) -> bool:
    """Whether `refused` is a read over the caller's budget that may be made again (with
    `retries` left): then it has waited as long as the server asked."""
    if refused.code != grpc.StatusCode.RESOURCE_EXHAUSTED or refused.retry_after is None or retries <= 0:
        return False
    time.sleep(refused.retry_after)
    return True


#: The category names the methods take.
CATEGORIES = {
    "smuggling": report_pb2.CATEGORY_SMUGGLING_INCIDENT,
    "maritime": report_pb2.CATEGORY_MARITIME_MOVEMENT,
}


def _no_weak_ca(ca_pem: bytes) -> None:
    """Refuses (ValueError) a CA bundle holding a certificate whose Ed25519 key is of
    small order: anyone could make server certificates 'signed' by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        return  # gRPC refuses a bundle it cannot read, saying so
    for place, cert in enumerate(certs, start=1):
        key = cert.public_key()
        if isinstance(key, Ed25519PublicKey) and dsse.weak_key(
            key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ):
            raise ValueError(
                f"the CA bundle's certificate {place} has an Ed25519 key of small order: "
                "anyone can make certificates 'signed' by it, so it is not trusted; take it out"
            )


def _category(name: Any) -> int:
    """The Category value of a category name the methods take; ValueError otherwise."""
    if not isinstance(name, str) or name not in CATEGORIES:
        raise ValueError(f"category {name!r} is not one of: {', '.join(CATEGORIES)}")
    return CATEGORIES[name]


def _no_bare_strings(fields: Mapping[str, Any], message: Any) -> None:
    """Refuses a string given for a repeated field (``reporting_states="IDN"``), which
    protobuf would take as a list of its characters."""
    for name, value in fields.items():
        field = message.DESCRIPTOR.fields_by_name.get(name)
        repeated = field is not None and (
            getattr(field, "is_repeated", None)
            if getattr(field, "is_repeated", None) is not None
            else field.label == FieldDescriptor.LABEL_REPEATED
        )
        if repeated and isinstance(value, (str, bytes)):
            raise ValueError(f"{name} takes a list, not a string: {name}=[{value!r}]")


def _cli_names(enum: Any, prefix: str, renamed: Mapping[str, str]) -> Dict[str, int]:
    """An enum's values by the names `tidemark aggregate` takes for them (lower case,
    with hyphens), one spelling each."""
    names = {}
    for value in enum.DESCRIPTOR.values:
        if value.number == 0:
            continue
        name = value.name.removeprefix(prefix).lower().replace("_", "-")
        names[renamed.get(name, name)] = value.number
    return names


#: The dimension names `aggregate` takes, as `tidemark aggregate --by` does.
DIMENSIONS = _cli_names(analytics_pb2.Dimension, "DIMENSION_", {"reporting-state": "state"})
#: The metric names `aggregate` takes, as `tidemark aggregate --metric` does.
METRICS = _cli_names(analytics_pb2.Metric, "METRIC_", {"fee-per-person": "fee"})


def _enum_prefix(enum: Any) -> str:
    """The prefix every value name of a proto enum shares (``VESSEL_TYPE_``)."""
    names = [value.name for value in enum.values]
    prefix = os.path.commonprefix(names)
    return prefix[: prefix.rfind("_") + 1]


def _enum_value(field: Any, given: Any) -> Any:
    """The number of enum field `field`'s value `given`: its name in the proto
    (``VESSEL_TYPE_RUBBER_DINGHY``) or as `tidemark` takes it (``rubber-dinghy``, lower
    case with hyphens, one spelling); anything else (a number, say) as given."""
    if not isinstance(given, str):
        return given
    enum = field.enum_type
    if given in enum.values_by_name:
        return enum.values_by_name[given].number
    prefix = _enum_prefix(enum)
    labels = {
        value.name.removeprefix(prefix).lower().replace("_", "-"): value.number
        for value in enum.values
        if value.number != 0
    }
    if given not in labels:
        raise ValueError(f"{field.name} {given!r} is not one of: {', '.join(labels)}")
    return labels[given]


def _enum_labels(message: Any, fields: Mapping[str, Any]) -> Dict[str, Any]:
    """`fields` with every enum value given by name turned into its number."""
    out = dict(fields)
    for name, value in fields.items():
        field = message.DESCRIPTOR.fields_by_name.get(name)
        if field is None or field.enum_type is None:
            continue
        if isinstance(value, (list, tuple)):
            out[name] = [_enum_value(field, v) for v in value]
        else:
            out[name] = _enum_value(field, value)
    return out


def _entry_disagrees(entry: tlog.EnvelopeEntry, envelope: envelope_pb2.Envelope) -> str:
    """What log entry `entry`, which commits to `envelope`'s payload, records otherwise
    than the payload says (its state, report id, version, kind, and a report's
    category), or "" — as ``tidemark verify`` holds it: an entry of the right payload
    under another state's name would credit one state's report to another."""
    try:
        return _payload_disagrees(entry, envelope)
    except DecodeError:
        # Not a readable payload: `verify` refuses it as such.
        return ""


def _payload_disagrees(entry: tlog.EnvelopeEntry, envelope: envelope_pb2.Envelope) -> str:
    message: Message
    if envelope.payload_type == dsse.RETRACTION_PAYLOAD_TYPE:
        retraction = report_pb2.Retraction.FromString(envelope.payload)
        message = retraction
        report_id, state, version, kind = (
            retraction.report_id,
            retraction.reporting_state,
            retraction.version,
            "retraction",
        )
        category = None
    else:
        report = report_pb2.Report.FromString(envelope.payload)
        message = report
        report_id, state, version, kind = (
            report.report_id,
            report.reporting_state,
            report.version,
            "report",
        )
        details = report.WhichOneof("details")
        category = {"smuggling": "smuggling-incident", "maritime": "maritime-movement"}.get(
            details or ""
        )
    # A payload not in its one encoding (another kind's, say) is `verify`'s to refuse, by
    # that reason, not compared field by field.
    canonical: Message = type(message)()
    canonical.CopyFrom(message)
    canonical.DiscardUnknownFields()
    _zero_negative_zeros(canonical)
    if canonical.SerializeToString(deterministic=True) != envelope.payload:
        return ""
    report_digest = "sha256:" + hashlib.sha256(report_id.encode()).hexdigest()
    for field, recorded, signed in (
        ("state", entry.state, state),
        ("report", entry.report, report_digest),
        ("version", entry.version, version),
        ("kind", entry.kind, kind),
        ("category", entry.category, category or entry.category),
    ):
        if recorded != signed:
            return f"{field} {recorded}, where the signed payload says {signed}"
    return ""


def _inactive(key: "SigningKey", at: int) -> str:
    """Why `key` was not active at `at` (Unix seconds), in words."""
    def when(t: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    said = f"signed by key {key.key_id} of {key.state}"
    if key.revoked_at and key.revoked_at <= at:
        return f"{said}, revoked as of {when(key.revoked_at)}, before its acceptance ({when(at)})"
    if key.valid_until and key.valid_until <= at:
        return f"{said}, valid until {when(key.valid_until)}, before its acceptance ({when(at)})"
    return f"{said}, valid from {when(key.valid_from)}, after its acceptance ({when(at)})"


def _named(names: Mapping[str, int], given: Any, what: str) -> int:
    if not isinstance(given, str) or given not in names:
        raise ValueError(f"{what} {given!r} is not one of: {', '.join(names)}")
    return names[given]


#: Channel options that bound what the server can send ahead of the application: gRPC's
#: bandwidth-delay probe would otherwise grow the HTTP/2 flow-control windows to
#: megabytes, so that a read ended early (or by a revocation) has already sent — and
#: counted as read in the owner's access list — thousands of reports the application
#: never took.
CHANNEL_OPTIONS = (("grpc.http2.bdp_probe", 0),)

#: The server's default ``limits.max_message_bytes``: :meth:`Client.import_reports`
#: rejects a larger signed report itself, by index, rather than send it (the server
#: would end the whole import).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass
class Submitted:
    """What the server answered to one submission."""

    #: The receipt as a C2SP tlog proof (text), checked offline by `tidemark verify-receipt`.
    log_proof: str
    #: The server's signed receipt (a DSSE envelope over `receipt`), only when asked for
    #: with ``submit(..., signed_receipt=True)`` (one signature per submission).
    signed_receipt: Optional[envelope_pb2.Envelope]
    #: What was accepted: sequence, envelope digest, report id, version, accepted time.
    receipt: envelope_pb2.Receipt
    #: The identical envelope had been accepted before (the receipt is the original's).
    duplicate: bool


def _is_host_name(host: str) -> bool:
    """Whether `host` is a DNS host name as RFC 1123 §2.1 writes one (as ``tidemark
    --endpoint`` takes it): labels of letters, digits and hyphens (not first or last), the
    last not all digits, no empty label or trailing dot."""
    labels = host.split(".")

    def label(text: str) -> bool:
        return (
            0 < len(text) <= 63
            and not text.startswith("-")
            and not text.endswith("-")
            and all(c.isascii() and (c.isalnum() or c == "-") for c in text)
        )

    return len(host) <= 253 and all(label(part) for part in labels) and not labels[-1].isdigit()


def _endpoint_target(endpoint: str) -> str:
    """The ``host:port`` of an endpoint ``https://HOST:PORT`` (an optional ``/`` after
    it), written one way, as ``tidemark --endpoint`` takes it: a port of digits without
    a leading zero, an IP address as written back (IPv6 in brackets, compressed and lower
    case, RFC 5952), a host name in lower case; nothing else. ``ValueError`` names what
    to write."""
    example = "e.g. https://127.0.0.1:50051"
    if not endpoint.startswith("https://"):
        raise ValueError(
            f"endpoint {endpoint!r}: Tidemark is served over TLS only; give https://host:port, {example}"
        )
    authority = endpoint[len("https://") :]
    authority = authority[:-1] if authority.endswith("/") else authority
    for mark, what in (("@", "a user name"), ("#", "a fragment"), ("?", "a query"), ("/", "a path")):
        if mark in authority:
            raise ValueError(f"endpoint {endpoint!r} has {what}: give https://HOST:PORT alone, {example}")
    if authority.startswith("["):
        host, sep, port = authority.partition("]:")
        host += "]"
    else:
        host, sep, port = authority.rpartition(":")
    if not sep or not host:
        raise ValueError(f"endpoint {endpoint!r} names no port: give it after the host, {example}")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r}: port {port!r} is not a port (1 to 65535)")
    if str(int(port)) != port:
        raise ValueError(f"endpoint {endpoint!r}: port {port!r} has a leading zero: write {int(port)}")
    if host.startswith("["):
        try:
            if "%" in host:
                raise ValueError("a zone")
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"endpoint {endpoint!r}: {host} is not an IPv6 address (without a zone)") from None
        # RFC 5952 §5: an IPv4-mapped address ends in dotted decimal, as Rust writes it.
        mapped = address.ipv4_mapped
        canonical = f"[::ffff:{mapped}]" if mapped is not None else f"[{address}]"
    else:
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            if not _is_host_name(host):
                raise ValueError(
                    f"endpoint {endpoint!r}: {host!r} is not a host name (labels of letters, "
                    "digits and '-', the last not all digits, no trailing dot) nor an IP "
                    "address as written (no leading zeros)"
                ) from None
            canonical = host.lower()
    if canonical != host:
        raise ValueError(
            f"endpoint {endpoint!r}: host {host!r} is written another way than addresses and "
            f"names are: write https://{canonical}:{port}"
        )
    return f"{host}:{port}"


def _node_state(cert_pem: bytes) -> Optional[str]:
    """The state a node certificate's SPIFFE ID names (``spiffe://…/state/AUS/node/…``),
    or None for any other certificate."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return None
    for uri in uris:
        parts = uri.split("/")
        # spiffe: / "" / trust domain / state / AUS / node / name
        if len(parts) == 7 and parts[0] == "spiffe:" and parts[3] == "state" and parts[5] == "node":
            return parts[4]
    return None


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """A JSON object's members, refused if a key is given twice (json.loads would keep
    the last, and sign what the author may not have meant)."""
    seen: Dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} is given twice in one object: give it once")
        seen[key] = value
    return seen


def _one_name_per_field(value: Any, descriptor: Any, path: str = "") -> None:
    """Refuses a field given under both its proto3 JSON names (``reportId`` and
    ``report_id``): the parser would keep one silently."""
    if not isinstance(value, Mapping):
        return
    named: Dict[Any, str] = {}
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key) or next(
            (f for f in descriptor.fields if f.json_name == key), None
        )
        if field is None:
            continue
        if field in named:
            raise ValueError(
                f"{path}{field.json_name} is given twice, as {named[field]!r} and {key!r}: "
                "give it once"
            )
        named[field] = key
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            items = item if isinstance(item, list) else [item]
            for i, each in enumerate(items):
                where = f"{path}{field.json_name}[{i}]." if isinstance(item, list) else f"{path}{field.json_name}."
                _one_name_per_field(each, field.message_type, where)


#: A number as JSON writes one (RFC 8259 §6), in ASCII: what the proto3 JSON mapping
#: takes for a number given as a string too. Python's own int() and float() would also
#: take "1_0", "+1", " 1", "01" and other scripts' digits, and sign the value they read.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

_INTEGERS = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}


def _json_scalars(value: Any, descriptor: Any, path: str = "") -> None:
    """Refuses, naming the field, a number or enum value in a spelling `tidemark submit`
    refuses: a number in a string must be written as JSON writes numbers (no sign +,
    spaces, underscores, leading zeros or non-ASCII digits; "NaN" and "Infinity" for
    floating point), an enum value is its name or a JSON number, and a bool is no
    number."""
    if not isinstance(value, Mapping):
        return
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key) or next(
            (f for f in descriptor.fields if f.json_name == key), None
        )
        if field is None or item is None:
            continue
        name = f"{path}{field.json_name}"
        items = item if isinstance(item, list) else [item]
        for i, each in enumerate(items):
            where = f"{name}[{i}]" if isinstance(item, list) else name
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if not field.message_type.GetOptions().map_entry:
                    _json_scalars(each, field.message_type, where + ".")
            elif field.type in _INTEGERS or field.type in _FLOATS:
                special = field.type in _FLOATS and each in ("NaN", "Infinity", "-Infinity")
                if isinstance(each, bool) or (
                    isinstance(each, str) and not special and not _JSON_NUMBER.fullmatch(each)
                ):
                    raise ValueError(
                        f"{where}: {each!r} is not a number as JSON writes one (no + sign, "
                        "spaces, underscores, leading zeros or other digits)"
                    )
            elif field.type == FieldDescriptor.TYPE_ENUM:
                named = isinstance(each, str) and each in field.enum_type.values_by_name
                numbered = isinstance(each, int) and not isinstance(each, bool)
                if not (named or numbered):
                    raise ValueError(
                        f"{where}: {each!r} is not one of the names of "
                        f"{field.enum_type.name} (nor a number)"
                    )


def _report(report: ReportLike) -> report_pb2.Report:
    """The report as a message: a message (copied), JSON text or bytes (one leading
    UTF-8 byte-order mark is skipped, as every Tidemark reader does), or a dict in the
    proto3 JSON mapping. ValueError for anything it cannot be read as."""
    if isinstance(report, report_pb2.Report):
        message = report_pb2.Report()
        message.CopyFrom(report)
        known = report_pb2.Report()
        known.CopyFrom(message)
        known.DiscardUnknownFields()
        if known.ByteSize() != message.ByteSize():
            raise ValueError(
                "the report carries fields this client's Report message does not define (read "
                "from a newer schema?): the server takes a payload only in its one encoding, "
                "without them; build the report from its known fields"
            )
    else:
        try:
            if isinstance(report, bytes):
                report = report.decode("utf-8")
            if isinstance(report, str):
                report = json.loads(report.removeprefix("\ufeff"), object_pairs_hook=_no_duplicate_keys)
            if not isinstance(report, Mapping):
                raise ValueError(f"a report is a JSON object, not {type(report).__name__}")
            _one_name_per_field(report, report_pb2.Report.DESCRIPTOR)
            _json_scalars(report, report_pb2.Report.DESCRIPTOR)
            message = json_format.ParseDict(dict(report), report_pb2.Report())
        except (json_format.ParseError, TypeError, OverflowError, UnicodeDecodeError) as error:
            raise ValueError(f"not a report in the proto3 JSON mapping: {error}") from error
    _zero_negative_zeros(message)
    return message


def _zero_negative_zeros(message: Any) -> None:
    """Writes -0.0 as 0.0 in every float field. Python's protobuf serialises a -0.0
    that other encoders (the server's included) omit as the default value, and the
    server accepts a signed payload only in its one encoding (see Envelope.payload)."""
    floating = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
    for field, value in message.ListFields():
        # `is_repeated` in newer protobuf releases, `label` in older ones.
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:
            repeated = field.label == FieldDescriptor.LABEL_REPEATED
        if field.type in floating:
            if repeated:
                for i, item in enumerate(value):
                    if item == 0.0:
                        value[i] = 0.0
            elif value == 0.0:
                setattr(message, field.name, 0.0)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            for item in value if repeated else [value]:
                _zero_negative_zeros(item)


class Client:
    """A connection to a Tidemark server as one principal.

    ``Client.from_profile("https://127.0.0.1:50051", "certs/aus-node")`` reads
    ``certs/aus-node.pem``, ``certs/aus-node.key``, ``certs/ca.pem`` and, for signing,
    ``certs/aus-signing.key`` — the same profile ``tidemark --as`` takes. Every method
    raises :class:`TidemarkError` when the server refuses.
    """

    def __init__(
        self,
        endpoint: str,
        cert_pem: bytes,
        key_pem: bytes,
        ca_pem: bytes,
        signing_key: Optional[Ed25519PrivateKey] = None,
        timeout: Optional[float] = 30.0,
        options: Iterable[Tuple[str, Any]] = CHANNEL_OPTIONS,
    ) -> None:
        target = _endpoint_target(endpoint)
        _no_weak_ca(ca_pem)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        #: gRPC channel arguments; the default, CHANNEL_OPTIONS, bounds what a stream
        #: sends ahead of the application.
        self._channel = grpc.secure_channel(target, credentials, options=list(options))
        self._cert_pem = cert_pem
        self._exchange = exchange_pb2_grpc.ExchangeStub(self._channel)
        self._analytics = analytics_pb2_grpc.AnalyticsStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)
        self._transparency = transparency_pb2_grpc.TransparencyStub(self._channel)
        self.signing_key = signing_key
        #: Seconds each unary call may take (None: no deadline); streams and
        #: :meth:`import_reports` have none.
        self.timeout = timeout

    @classmethod
    def from_profile(
        cls,
        endpoint: str,
        profile: Union[str, Path],
        signing_key: Optional[Union[str, Path]] = None,
        timeout: Optional[float] = 30.0,
        options: Iterable[Tuple[str, Any]] = CHANNEL_OPTIONS,
    ) -> "Client":
        """A client for the profile `tidemark --as` would use: ``certs/aus-node`` reads
        ``certs/aus-node.pem``, ``.key`` and ``certs/ca.pem``. A node certificate signs,
        as `tidemark --as` does, with ``<state>-signing.key`` beside it, the state being
        the one its SPIFFE ID names (``…/state/AUS/node/…``: ``aus-signing.key``); give
        `signing_key` to use another file."""
        profile = Path(profile)
        name = profile.name

        def read(path: Path) -> bytes:
            # Past one byte-order mark, as every Tidemark reader of a file.
            return path.read_bytes().removeprefix(b"\xef\xbb\xbf")

        cert_pem = read(profile.parent / f"{name}.pem")
        if signing_key is None:
            state = _node_state(cert_pem)
            if state is not None:
                beside = profile.parent / f"{state.lower()}-signing.key"
                signing_key = beside if beside.exists() else None
        return cls(
            endpoint,
            cert_pem=cert_pem,
            key_pem=read(profile.parent / f"{name}.key"),
            ca_pem=read(profile.parent / "ca.pem"),
            signing_key=dsse.load_private_key(str(signing_key)) if signing_key else None,
            timeout=timeout,
            options=options,
        )

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    _UNARY = object()

    def _call(self, method: Any, request: Any, timeout: Any = _UNARY) -> Any:
        """One call; one refused over the caller's budget of reads is made again after
        the wait the server asks for, up to ``PUSHBACK_RETRIES`` times."""
        retries = PUSHBACK_RETRIES
        while True:
            try:
                return method(request, timeout=self.timeout if timeout is Client._UNARY else timeout)
            except grpc.RpcError as error:
                refused = TidemarkError.from_rpc_error(error)
                # A request stream (import) is used up: it is not made again.
                if isinstance(request, Iterator) or not _waits_out(refused, retries):
                    raise refused from None
                retries -= 1
            except ValueError as error:  # a closed channel
                raise TidemarkError(grpc.StatusCode.UNAVAILABLE, str(error)) from None

    @staticmethod
    def _request(kind: Any, **fields: Any) -> Any:
        """A request message from keyword fields; ValueError naming the message when a
        field is not of its type or out of its range."""
        try:
            return kind(**_enum_labels(kind, fields))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{kind.DESCRIPTOR.name}: {error} (given {fields!r})") from None

    @staticmethod
    def _stream(method: Any, request: Any) -> Stream[Any]:
        try:
            return Stream(method(request), restart=lambda: method(request))
        except ValueError as error:  # a closed channel
            raise TidemarkError(grpc.StatusCode.UNAVAILABLE, str(error)) from None

    def whoami(self) -> exchange_pb2.WhoAmIResponse:
        """Who the server sees: SPIFFE ID, role, state, certificate serial and validity."""
        return self._call(self._exchange.WhoAmI, exchange_pb2.WhoAmIRequest())

    def sign(self, report: ReportLike) -> envelope_pb2.Envelope:
        """A report (message, JSON text or dict in the proto3 JSON mapping) as a DSSE
        envelope signed with this client's signing key."""
        if self.signing_key is None:
            raise ValueError("this client has no signing key: pass signing_key=")
        payload = _report(report).SerializeToString()
        return dsse.sign(dsse.REPORT_PAYLOAD_TYPE, payload, self.signing_key)

    def retract(
        self, report_id: str, version: int, reason: str, signed_receipt: bool = False
    ) -> Submitted:
        """Signs and submits the retraction of one of your state's reports: `version` is
        the one it creates (the report's latest plus one), `reason` why (at most 500
        characters). The state is your signing key's (the report's own)."""
        state = _node_state(self._cert_pem)
        if state is None:
            raise ValueError("only a node certificate retracts its state's reports")
        if self.signing_key is None:
            raise ValueError("this client has no signing key: pass signing_key=")
        retraction = self._request(
            report_pb2.Retraction,
            report_id=report_id,
            reporting_state=state,
            version=version,
            reason=reason,
        )
        envelope = dsse.sign(
            dsse.RETRACTION_PAYLOAD_TYPE, retraction.SerializeToString(), self.signing_key
        )
        request = exchange_pb2.SubmitRequest(envelope=envelope, signed_receipt=signed_receipt)
        answer = self._call(self._exchange.Submit, request)
        signed = answer.receipt if answer.HasField("receipt") else None
        return Submitted(answer.log_proof, signed, answer.accepted, answer.duplicate)

    def submit(self, report: ReportLike, signed_receipt: bool = False) -> Submitted:
        """Signs and submits one report; returns the receipts once it is durable (the log
        proof always; a receipt signed by the server too when `signed_receipt`)."""
        request = exchange_pb2.SubmitRequest(
            envelope=self.sign(report), signed_receipt=signed_receipt
        )
        answer = self._call(self._exchange.Submit, request)
        signed = answer.receipt if answer.HasField("receipt") else None
        return Submitted(answer.log_proof, signed, answer.accepted, answer.duplicate)

    def import_reports(
        self, reports: Iterable[ReportLike], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> exchange_pb2.ImportResponse:
        """Signs and submits many reports on one stream: counts accepted, duplicates and
        rejected, with each rejection's index (its position in `reports`), code and field
        violations. A report that cannot be read as one (``INVALID_ARGUMENT``) or whose
        signed envelope is larger than `max_message_bytes` — the server's
        ``limits.max_message_bytes`` — (``RESOURCE_EXHAUSTED``) is rejected here, at its
        index, and the others are sent. When the server ends an import part-way for one
        envelope it will not take (larger than its own ``limits.max_message_bytes``) or
        for its limit on one call (``limits.max_import_items``), what it took is counted,
        that envelope is rejected at its index and the rest go on in calls the size of
        what it took, as ``tidemark import`` does. No deadline applies (a large import
        takes as long as it takes); an import the server ends for anything else (the
        caller's rights, the server stopping) raises :class:`TidemarkError` with the
        counts so far in ``partial``."""
        if self.signing_key is None:
            raise ValueError("this client has no signing key: pass signing_key=")
        here: List[exchange_pb2.ImportRejection] = []
        sent: List[int] = []  # the index in `reports` of each envelope sent
        requests = []
        for index, report in enumerate(reports):
            try:
                request = exchange_pb2.SubmitRequest(envelope=self.sign(report))
            except (ValueError, RecursionError) as error:  # nested past the JSON reader's depth
                here.append(
                    exchange_pb2.ImportRejection(
                        index=index, code="INVALID_ARGUMENT", message=f"not a report: {error}"
                    )
                )
                continue
            size = request.ByteSize()
            if size > max_message_bytes:
                here.append(
                    exchange_pb2.ImportRejection(
                        index=index,
                        code="RESOURCE_EXHAUSTED",
                        message=f"the signed report is {size} bytes; the server accepts at "
                        f"most {max_message_bytes} (limits.max_message_bytes): shorten its text",
                    )
                )
                continue
            sent.append(index)
            requests.append(request)

        done = exchange_pb2.ImportResponse()

        def count(summary: exchange_pb2.ImportResponse, batch: List[int]) -> None:
            """Adds what one call did; its rejections' indexes are into `batch`."""
            done.accepted += summary.accepted
            done.duplicates += summary.duplicates
            done.rejected += summary.rejected
            for rejection in summary.rejections:
                if rejection.index < len(batch):
                    rejection.index = batch[rejection.index]
                done.rejections.append(rejection)

        def with_those_here() -> exchange_pb2.ImportResponse:
            merged = exchange_pb2.ImportResponse()
            merged.CopyFrom(done)
            rejections = sorted([*merged.rejections, *here], key=lambda r: r.index)
            del merged.rejections[:]
            merged.rejections.extend(rejections)
            merged.rejected += len(here)
            return merged

        pending = list(zip(sent, requests))
        most: Optional[int] = None  # envelopes per call, once the server said
        while pending:
            batch = pending if most is None else pending[:most]
            try:
                summary = self._call(
                    self._exchange.Import, iter([r for _, r in batch]), timeout=None
                )
            except TidemarkError as error:
                partial = error.partial
                if partial is None:
                    error.partial = with_those_here()
                    raise
                taken = partial.accepted + partial.duplicates + partial.rejected
                count(partial, [i for i, _ in batch[:taken]])
                if error.code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    error.partial = with_those_here()
                    raise
                if taken == 0:
                    # Ended at its first envelope, having taken nothing: that one is what
                    # the server would not take; the rest go on.
                    here.append(
                        exchange_pb2.ImportRejection(
                            index=batch[0][0], code="RESOURCE_EXHAUSTED", message=error.message
                        )
                    )
                    pending = pending[1:]
                else:
                    pending = pending[taken:]
                    most = taken
                continue
            count(summary, [i for i, _ in batch])
            pending = pending[len(batch) :]
        return with_those_here()

    def standing(self) -> exchange_pb2.MyStandingResponse:
        """Where this state stands in give-to-get, per category."""
        return self._call(self._exchange.MyStanding, exchange_pb2.MyStandingRequest())

    def query(self, category: str = "smuggling", **filters: Any) -> Stream[exchange_pb2.QueryResult]:
        """Other states' (and your own) reports of `category` ("smuggling" or "maritime"),
        filtered by QueryRequest fields (``from_date="2024-01-01"``,
        ``reporting_states=["AUS"]``, …). Each result holds the envelope exactly as signed:
        check it with :meth:`verify`."""
        _no_bare_strings(filters, exchange_pb2.QueryRequest)
        request = self._request(exchange_pb2.QueryRequest, category=_category(category), **filters)
        return self._stream(self._exchange.Query, request)

    def sync(
        self, category: str = "smuggling", after_sequence: int = 0, include_log_proofs: bool = False
    ) -> Stream[exchange_pb2.SyncItem]:
        """Every change of `category` after `after_sequence`, oldest first; with
        `include_log_proofs`, each item's ``log_proof`` proves its acceptance (check it
        with :meth:`verify`)."""
        request = self._request(
            exchange_pb2.SyncRequest,
            category=_category(category),
            after_sequence=after_sequence,
            include_log_proofs=include_log_proofs,
        )
        return self._stream(self._exchange.Sync, request)

    def subscribe(self, category: str = "smuggling", **filters: Any) -> Stream[exchange_pb2.SyncItem]:
        """Matching changes as they are committed, until the returned stream is closed
        (``close()``, ``cancel()`` or the end of a ``with`` block)."""
        _no_bare_strings(filters, exchange_pb2.QueryRequest)
        request = self._request(exchange_pb2.QueryRequest, category=_category(category), **filters)
        return self._stream(self._exchange.Subscribe, request)

    def signing_keys(self, state: str = "") -> Dict[str, SigningKey]:
        """Registered report-signing keys (of one state, ISO alpha-3 in upper case, or
        all), by key id, with the state each signs for and when it may sign. A state in
        another spelling is refused by the server, naming the field."""
        answer = self._call(
            self._exchange.SigningKeys, self._request(exchange_pb2.SigningKeysRequest, state=state)
        )
        return {
            k.key_id: SigningKey(
                key_id=k.key_id,
                state=k.state,
                public_key=dsse.load_public_key(k.public_key_pem),
                valid_from=k.valid_from_unix,
                valid_until=k.valid_until_unix,
                revoked_at=k.revoked_at_unix,
            )
            for k in answer.keys
        }

    def verify(
        self,
        envelope: envelope_pb2.Envelope,
        keys: Optional[Mapping[str, SigningKey]] = None,
        accepted_at: Optional[int] = None,
        log_proof: Optional[str] = None,
        log_key: Optional[str] = None,
    ) -> Union[report_pb2.Report, report_pb2.Retraction]:
        """The report or retraction an envelope carries, once a key of the state it names
        is found to have signed it, active at `accepted_at` (Unix seconds, e.g.
        ``result.meta.accepted_at_unix``; default now) — the rule the server applies.
        `keys` defaults to every registered key. ValueError otherwise.

        With `log_proof` (``result.log_proof`` of a query made with
        ``include_log_proofs=True``) and the log's `log_key` (pinned: see
        :mod:`tidemark_client.tlog`), the proof is checked, its entry must record this
        exact payload, and the acceptance time is taken from the entry — so a key
        revoked later is judged by a time the server cannot change. An `accepted_at`
        that differs from the entry's is refused. A `log_key` without a `log_proof`
        is refused (ValueError), as it would check nothing against the log."""
        if log_key is not None and log_proof is None:
            raise ValueError(
                "log_key was given without log_proof, so nothing would be checked against the "
                "log: pass result.log_proof too (query with include_log_proofs=True), or no "
                "log_key"
            )
        if log_proof is not None:
            accepted_at = self._proven_acceptance(envelope, log_proof, log_key, accepted_at)
        kinds: Dict[str, Union[Type[report_pb2.Report], Type[report_pb2.Retraction]]] = {
            dsse.REPORT_PAYLOAD_TYPE: report_pb2.Report,
            dsse.RETRACTION_PAYLOAD_TYPE: report_pb2.Retraction,
        }
        kind = kinds.get(envelope.payload_type)
        if kind is None:
            raise ValueError(f"not a report or retraction: payload type {envelope.payload_type!r}")
        if len(envelope.signatures) > dsse.MAX_SIGNATURES:
            raise ValueError(
                f"the envelope carries {len(envelope.signatures)} signatures; the server takes "
                f"at most {dsse.MAX_SIGNATURES}"
            )
        at = int(time.time()) if accepted_at is None else accepted_at
        keys = self.signing_keys() if keys is None else keys
        active = [k for k in keys.values() if k.active_at(at)]
        # The signature first, as the server does: nothing unsigned is decoded.
        signers = dsse.signed_by(envelope, [k.public_key for k in active])
        if not signers:
            # A key of those given that is not active then: not trusted, and said why —
            # not taken for tampering.
            inactive = [k for k in keys.values() if not k.active_at(at)]
            made = dsse.signed_by(envelope, [k.public_key for k in inactive])
            for k in inactive:
                if any(k.public_key is m for m in made):
                    raise ValueError(f"untrusted: {_inactive(k, at)}")
            raise ValueError(
                "no key given signed this envelope: it was altered, or signed by a key not "
                "given"
            )
        states = sorted({k.state for k in active if any(k.public_key is s for s in signers)})
        try:
            message = kind.FromString(envelope.payload)
        except DecodeError as e:
            raise ValueError(f"the signed payload is not a readable {kind.__name__}: {e}") from e
        # One encoding only, as the server and `tidemark verify` hold it (Envelope.payload):
        # a field given twice, an unknown field or a padded number would let one signed
        # payload be read two ways.
        canonical: Message = kind()
        canonical.CopyFrom(message)
        canonical.DiscardUnknownFields()
        _zero_negative_zeros(canonical)
        if canonical.SerializeToString(deterministic=True) != envelope.payload:
            raise ValueError(
                f"the signed payload is not a {kind.__name__} in its one encoding (a field "
                "given twice or out of order, an unknown field, or a number written long): "
                "the server refuses such payloads, and this one was not accepted as it is"
            )
        # Any signature by a key of the state the report names will do, as on the server.
        if message.reporting_state not in states:
            raise ValueError(
                f"signed by a key of {', '.join(states)}, not of the state the envelope names "
                f"({message.reporting_state!r})"
            )
        return message

    @staticmethod
    def _proven_acceptance(
        envelope: envelope_pb2.Envelope,
        log_proof: str,
        log_key: Optional[str],
        said: Optional[int],
    ) -> int:
        """When the log proves `envelope` was accepted; ValueError if it does not."""
        if not log_key:
            raise ValueError(
                "a log proof is checked with the log's note verifier key: pass log_key= "
                "(`tidemark log verifier-key` prints it)"
            )
        proven = tlog.verify_log_proof(log_proof, log_key)
        digest = "sha256:" + hashlib.sha256(envelope.payload).hexdigest()
        try:
            entry = tlog.decode_envelope_entry(proven.entry)
        except tlog.LogProofError as e:
            raise ValueError(
                f"the log proof is of entry {proven.index}, which is not an envelope's entry "
                f"in its one encoding: {e}"
            ) from None
        if entry.payload != digest:
            raise ValueError(
                f"the log proof is of entry {proven.index}, which records something else "
                "than this envelope's acceptance"
            )
        wrong = _entry_disagrees(entry, envelope)
        if wrong:
            raise ValueError(
                f"log entry {proven.index} records {wrong}: the proof is not of this "
                "envelope's acceptance"
            )
        if said is not None and said != entry.accepted:
            raise ValueError(
                f"accepted_at {said} is not the time log entry {proven.index} records "
                f"({entry.accepted}): the meta was altered"
            )
        return entry.accepted

    def log_verifier_key(self) -> str:
        """The log's note verifier key as the server gives it. Fetch it once and keep it
        (or take it from the operator out of band): a key fetched at each check trusts
        the server it is meant to check."""
        answer = self._call(
            self._transparency.GetVerifierKey, transparency_pb2.GetVerifierKeyRequest()
        )
        return answer.verifier_key

    def checkpoint(self) -> str:
        """The log's newest signed checkpoint (C2SP tlog-checkpoint note), verbatim: open
        it with :func:`tidemark_client.tlog.open_checkpoint` and your pinned log key."""
        answer = self._call(self._transparency.GetCheckpoint, transparency_pb2.GetCheckpointRequest())
        return answer.note

    def consistency_proof(self, old_size: int, new_size: int = 0) -> List[bytes]:
        """The RFC 9162 consistency proof between the log of `old_size` leaves and that of
        `new_size` (0: the newest checkpoint's), for
        :func:`tidemark_client.tlog.verify_consistency`."""
        answer = self._call(
            self._transparency.GetConsistencyProof,
            self._request(
                transparency_pb2.GetConsistencyProofRequest, old_size=old_size, new_size=new_size
            ),
        )
        return list(answer.hashes)

    def server_key(self) -> Ed25519PublicKey:
        """The server's receipt public key, to check signed receipts offline."""
        answer = self._call(self._exchange.ServerKeys, exchange_pb2.ServerKeysRequest())
        return dsse.load_public_key(answer.receipt_public_key_pem)

    @staticmethod
    def verify_receipt(
        signed_receipt: envelope_pb2.Envelope, server_key: Ed25519PublicKey
    ) -> envelope_pb2.Receipt:
        """The facts a signed receipt states, once the server's key is found to have signed
        it; ValueError otherwise. (The log proof, `Submitted.log_proof`, is checked with
        :func:`tidemark_client.tlog.verify_log_proof`.)"""
        if signed_receipt.payload_type != dsse.RECEIPT_PAYLOAD_TYPE:
            raise ValueError(f"not a receipt: payload type {signed_receipt.payload_type!r}")
        if dsse.verified_by(signed_receipt, [server_key]) is None:
            raise ValueError("the receipt was altered or comes from another server")
        return envelope_pb2.Receipt.FromString(signed_receipt.payload)

    def enrol_state(self, state: str) -> admin_pb2.StateInfo:
        """Operator: enrols (or reinstates) a state, ISO 3166-1 alpha-3."""
        return self._call(self._admin.EnrolState, self._request(admin_pb2.StateRequest, state=state))

    def suspend_state(self, state: str) -> admin_pb2.StateInfo:
        """Operator: suspends a state; its certificates stop working at once."""
        return self._call(
            self._admin.SuspendState, self._request(admin_pb2.StateRequest, state=state)
        )

    def audit_log(self, after: int = 0, limit: int = 100) -> List[admin_pb2.AuditEntry]:
        """Operator: audit records after number `after`, oldest first. A page can hold
        fewer than `limit` when it reaches the size a message may have: page on (with the
        last record's ``number`` as `after`) until a page comes back empty."""
        answer = self._call(
            self._admin.AuditLog, self._request(admin_pb2.AuditLogRequest, after=after, limit=limit)
        )
        return list(answer.entries)

    def access_to_my_data(self, limit: int = 100, before: int = 0) -> List[exchange_pb2.DataAccess]:
        """Who read your state's reports, newest first: reader, action, time, count, log
        entry. To page back, pass the ``number`` of the last access received as
        `before`. A page can hold fewer than `limit` when it reaches the size a message
        may have (each access lists up to 1,000 report ids): page on until a page comes
        back empty."""
        answer = self._call(
            self._exchange.AccessToMyData,
            self._request(exchange_pb2.AccessToMyDataRequest, limit=limit, before=before),
        )
        return list(answer.accesses)

    def aggregate(
        self,
        group_by: Iterable[str],
        metrics: Iterable[str] = ("reports",),
        **filter_fields: Any,
    ) -> analytics_pb2.AggregateResponse:
        """A statistics table (analyst certificates): ``group_by`` dimension names
        ("month", "state", "route", …) and ``metrics`` ("reports", "persons", …), with
        AggregateFilter fields (``category="smuggling"`` as the other methods take it,
        ``from_date="2024-01-01"``, …)."""
        for name, given in (("group_by", group_by), ("metrics", metrics)):
            if isinstance(given, (str, bytes)):
                raise ValueError(f"{name} takes a list, not a string: {name}=[{given!r}]")
        _no_bare_strings(filter_fields, analytics_pb2.AggregateFilter)
        for name in ("category", "categories"):
            category = filter_fields.get(name)
            if isinstance(category, str):
                filter_fields[name] = _category(category)
            elif isinstance(category, (list, tuple)):
                filter_fields[name] = [_category(c) if isinstance(c, str) else c for c in category]
        # The names' numbers are the enums' own (`_cli_names`).
        dims = cast(
            List[analytics_pb2.Dimension],
            [_named(DIMENSIONS, d, "dimension") for d in group_by],
        )
        mets = cast(List[analytics_pb2.Metric], [_named(METRICS, m, "metric") for m in metrics])
        request = analytics_pb2.AggregateRequest(
            group_by=dims,
            metrics=mets,
            filter=self._request(analytics_pb2.AggregateFilter, **filter_fields),
        )
        return self._call(self._analytics.Aggregate, request)
