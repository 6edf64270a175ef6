"""Errors from the server as Python exceptions: the gRPC code, the message, the field
violations of a refused report (google.rpc.BadRequest) and the reason of a give-to-get
refusal (google.rpc.ErrorInfo, reason ``INSUFFICIENT_CONTRIBUTION``)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class TidemarkError(Exception):
    """A call the server refused or could not answer.

    ``code`` is the gRPC status code, ``message`` what the server said, ``violations``
    (field path, what is wrong) for each bad field of a refused report, ``reason`` and
    ``metadata`` the google.rpc.ErrorInfo of a give-to-get refusal
    (``INSUFFICIENT_CONTRIBUTION``, with state, category, contributed, required).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: Optional[List[Tuple[str, str]]] = None,
        reason: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(code, message, violations or [], reason, metadata or {})
        self.code = code
        self.message = message
        self.violations: List[Tuple[str, str]] = list(violations or [])
        self.reason = reason
        self.metadata: Dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __reduce__(self):  # picklable, e.g. across a process pool
        return (type(self), (self.code, self.message, self.violations, self.reason, self.metadata))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "TidemarkError":
        """The error a failed call raised, with its details decoded."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        violations: List[Tuple[str, str]] = []
        reason: Optional[str] = None
        metadata: Dict[str, str] = {}
        status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(bad):
                violations += [(v.field, v.description) for v in bad.field_violations]
            elif detail.Unpack(info):
                reason = info.reason
                metadata = dict(info.metadata)
        return cls(code, message or "", violations, reason, metadata)
