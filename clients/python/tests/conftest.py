"""A real Tidemark server for the tests: `tidemark serve` on a free loopback port, in a
temporary directory with its development PKI (the binary cargo built, or $TIDEMARK_BIN)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def tidemark_bin() -> str:
    path = os.environ.get("TIDEMARK_BIN") or str(REPO / "target" / "debug" / "tidemark")
    if not Path(path).exists():
        pytest.exit(f"no tidemark binary at {path}: run `cargo build` or set TIDEMARK_BIN")
    return path


class Server:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.bin = tidemark_bin()
        self.process = subprocess.Popen(
            [self.bin, "serve", "--listen", "127.0.0.1:0"],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        found = re.search(r"https://127\.0\.0\.1:(\d+)", line)
        if not found:
            self.process.kill()
            raise RuntimeError(f"the server did not start: {line!r}")
        self.endpoint = f"https://127.0.0.1:{found.group(1)}"
        self.certs = directory / "certs"

    def profile(self, name: str) -> Path:
        return self.certs / name

    def sample_reports(self, state: str, count: int, seed: int) -> list:
        out = subprocess.run(
            [self.bin, "sample-reports", "--count", str(count), "--states", state, "--seed", str(seed)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        import json

        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture()
def server(tmp_path: Path):
    running = Server(tmp_path)
    time.sleep(0.1)
    yield running
    running.stop()
