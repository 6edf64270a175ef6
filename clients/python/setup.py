"""Builds tidemark-client: generates the tidemark.v1 protobuf and gRPC stubs from the
repository's proto/ directory with grpcio-tools, then packages them with the client."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto"


def generate_stubs() -> None:
    import grpc_tools
    from grpc_tools import protoc

    files = sorted(str(p) for p in (PROTO / "tidemark" / "v1").glob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files under {PROTO}: build from the Tidemark repository")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={HERE}",
        f"--grpc_python_out={HERE}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc could not compile the tidemark.v1 protos")
    for package in (HERE / "tidemark", HERE / "tidemark" / "v1"):
        (package / "__init__.py").touch()


generate_stubs()
setup()
