"""Errors from the server as Python exceptions: the gRPC code, the message, the field
violations of a refused report (google.rpc.BadRequest), the reason of a give-to-get
refusal (google.rpc.ErrorInfo, reason ``INSUFFICIENT_CONTRIBUTION``) and what an import
ended part-way did (a tidemark.v1.ImportResponse)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, cast

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no stubs published
from grpc_status import rpc_status
from tidemark.v1 import exchange_pb2


#: How many times a call refused over the caller's budget of reads is made again, each
#: after the wait the server asks for (``TidemarkError.retry_after``).
PUSHBACK_RETRIES = 5


def _unavailable_hint(message: str) -> str:
    """What an UNAVAILABLE most likely means, by gRPC's words for it: a failed TLS
    handshake (gRPC does not pass the TLS alert on: `tidemark whoami` with the same
    profile names it), or a connection the server closed during a call."""
    if "Stream removed" in message or "Socket closed" in message:
        return (
            " (the server closed the connection during the call: it may be restarting, or "
            "this client's certificate was revoked or its state suspended — a reader too slow "
            "to take the reason is cut off without it; `tidemark whoami` with the same "
            "profile says which)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in message:
        return (
            " (the server's certificate is not trusted: it was not issued by the CA in this "
            "profile's ca.pem, or it names another host)"
        )
    if "security handshaker" in message:
        return " (this client's certificate, key or CA file could not be used: check the profile's PEM files)"
    if "TSI_DATA_CORRUPTED" in message:
        return (
            " (the server ended the TLS handshake: it may have refused this client's "
            "certificate — revoked, expired, or of another CA; `tidemark whoami` with the same "
            "profile says which)"
        )
    return ""


class TidemarkError(Exception):
    """A call the server refused or could not answer.

    ``code`` is the gRPC status code, ``message`` what the server said, ``violations``
    (field path, what is wrong) for each bad field of a refused report, ``reason`` and
    ``metadata`` the google.rpc.ErrorInfo of a give-to-get refusal
    (``INSUFFICIENT_CONTRIBUTION``, with state, category, contributed, required).
    ``partial`` is, for an import the server ended part-way (its caller revoked or
    suspended, or past ``limits.max_import_items``), what it did before: counts and the
    first rejections (``rejected`` minus those listed were not listed).
    ``retry_after`` is, for a read refused over the caller's budget of reads
    (``RESOURCE_EXHAUSTED``), the seconds the server asks to wait before the next
    (``grpc-retry-pushback-ms``, gRFC A6); the client waits it out by itself up to
    :data:`PUSHBACK_RETRIES` times. ``audit_record`` is the number of the audit record
    of a refusal (``tidemark-audit``; ``"unrecorded"`` past the refusal budget).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: Optional[List[Tuple[str, str]]] = None,
        reason: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        partial: Optional[exchange_pb2.ImportResponse] = None,
        retry_after: Optional[float] = None,
        audit_record: Optional[str] = None,
    ) -> None:
        super().__init__(
            code, message, violations or [], reason, metadata or {}, partial, retry_after, audit_record
        )
        self.code = code
        self.message = message
        self.violations: List[Tuple[str, str]] = list(violations or [])
        self.reason = reason
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.partial = partial
        self.retry_after = retry_after
        self.audit_record = audit_record

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __reduce__(self):  # picklable, e.g. across a process pool
        return (
            type(self),
            (
                self.code,
                self.message,
                self.violations,
                self.reason,
                self.metadata,
                self.partial,
                self.retry_after,
                self.audit_record,
            ),
        )

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "TidemarkError":
        """The error a failed call raised, with its details decoded."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        violations: List[Tuple[str, str]] = []
        reason: Optional[str] = None
        metadata: Dict[str, str] = {}
        partial: Optional[exchange_pb2.ImportResponse] = None
        status = rpc_status.from_call(cast(grpc.Call, error)) if hasattr(error, "trailing_metadata") else None
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            info = error_details_pb2.ErrorInfo()
            summary = exchange_pb2.ImportResponse()
            if detail.Unpack(bad):
                violations += [(v.field, v.description) for v in bad.field_violations]
            elif detail.Unpack(info):
                reason = info.reason
                metadata = dict(info.metadata)
            elif detail.Unpack(summary):
                partial = summary
        message = message or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            message += _unavailable_hint(message)
        trailing: Dict[str, str] = {}
        if hasattr(error, "trailing_metadata"):
            for key, value in cast(grpc.Call, error).trailing_metadata() or ():
                if isinstance(value, str):
                    trailing[key] = value
        retry_after: Optional[float] = None
        try:
            retry_after = int(trailing["grpc-retry-pushback-ms"]) / 1000
        except (KeyError, ValueError):
            pass
        audit_record = trailing.get("tidemark-audit")
        return cls(code, message, violations, reason, metadata, partial, retry_after, audit_record)
