"""Builds tidemark-client: generates the tidemark.v1 protobuf and gRPC stubs (with type
stubs) from the repository's proto/ directory (or $TIDEMARK_PROTO_DIR) with grpcio-tools, then packages them with
the client. An sdist carries the generated stubs, so building from it needs no proto/.

The generated code requires protobuf and grpcio at least as new as the generator; the
package's dependencies say so."""

import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
# The repository's proto/ (the client's directory is clients/python), or where
# TIDEMARK_PROTO_DIR says, for a copy of the client made outside the repository.
PROTO = Path(os.environ.get("TIDEMARK_PROTO_DIR") or HERE.parent.parent / "proto")


def generate_stubs() -> None:
    import grpc_tools
    from grpc_tools import protoc

    files = sorted(str(p) for p in (PROTO / "tidemark" / "v1").glob("*.proto"))
    if not files:
        if (HERE / "tidemark" / "v1" / "exchange_pb2.py").exists():
            return  # an sdist: the stubs were generated when it was made
        raise SystemExit(
            f"no .proto files under {PROTO / 'tidemark' / 'v1'}: build from the Tidemark "
            "repository, or set TIDEMARK_PROTO_DIR to its proto/ directory"
        )
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={HERE}",
        f"--grpc_python_out={HERE}",
        f"--pyi_out={HERE}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc could not compile the tidemark.v1 protos")
    for package in (HERE / "tidemark", HERE / "tidemark" / "v1"):
        (package / "__init__.py").touch()
        # PEP 561: the generated .pyi stubs are the package's types.
        (package / "py.typed").touch()


def dependencies() -> list:
    """At least the grpcio and protobuf the stubs were generated with.

    grpcio-status is not part of the generated code, and its releases can reach an index
    later than grpcio-tools': the generator's minor release is asked for, not its patch
    (grpcio-tools 1.85.4 was published before grpcio-status 1.85.4, and the install failed).
    """
    from importlib.metadata import version

    tools = version("grpcio-tools")
    minor = ".".join(tools.split(".")[:2])
    return [
        f"grpcio>={tools}",
        f"grpcio-status>={minor}",
        f"protobuf>={version('protobuf')}",
        "cryptography>=42",
    ]


generate_stubs()
setup(install_requires=dependencies())
