"""Errors from the server as Python exceptions: the gRPC code, the message, the field
violations of a refused report (google.rpc.BadRequest) and the reason of a give-to-get
refusal (google.rpc.ErrorInfo, reason ``INSUFFICIENT_CONTRIBUTION``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class TidemarkError(Exception):
    """A call the server refused or could not answer."""

    code: grpc.StatusCode
    message: str
    #: (field path, what is wrong) for each bad field, e.g. ("persons.total", "…").
    violations: List[Tuple[str, str]] = field(default_factory=list)
    #: ErrorInfo reason, e.g. "INSUFFICIENT_CONTRIBUTION", with its metadata.
    reason: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "TidemarkError":
        """The error a failed call raised, with its details decoded."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        found = cls(code=code, message=message or "")
        status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(bad):
                found.violations += [(v.field, v.description) for v in bad.field_violations]
            elif detail.Unpack(info):
                found.reason = info.reason
                found.metadata = dict(info.metadata)
        return found
