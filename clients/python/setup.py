"""Builds tidemark-client: generates the tidemark.v1 protobuf and gRPC stubs (with type
stubs) from the repository's proto/ directory with grpcio-tools, then packages them with
the client. An sdist carries the generated stubs, so building from it needs no proto/.

The generated code requires protobuf and grpcio at least as new as the generator; the
package's dependencies say so."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto"


def generate_stubs() -> None:
    import grpc_tools
    from grpc_tools import protoc

    files = sorted(str(p) for p in (PROTO / "tidemark" / "v1").glob("*.proto"))
    if not files:
        if (HERE / "tidemark" / "v1" / "exchange_pb2.py").exists():
            return  # an sdist: the stubs were generated when it was made
        raise SystemExit(f"no .proto files under {PROTO}: build from the Tidemark repository")
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


def dependencies() -> list:
    """At least the grpcio and protobuf the stubs were generated with."""
    from importlib.metadata import version

    return [
        f"grpcio>={version('grpcio-tools')}",
        f"grpcio-status>={version('grpcio-tools')}",
        f"protobuf>={version('protobuf')}",
        "cryptography>=42",
    ]


generate_stubs()
setup(install_requires=dependencies())
