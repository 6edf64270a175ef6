"""A real Tidemark server for the tests: `tidemark serve` on a free loopback port, in a
temporary directory with its development PKI (the binary cargo built, or $TIDEMARK_BIN)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def tidemark_bin() -> str:
    path = os.environ.get("TIDEMARK_BIN") or str(REPO / "target" / "debug" / "tidemark")
    if not Path(path).exists():
        pytest.exit(f"no tidemark binary at {path}: run `cargo build` or set TIDEMARK_BIN")
    return path


class Server:
    def __init__(self, directory: Path, config: Optional[Path] = None) -> None:
        self.dir = directory
        self.bin = tidemark_bin()
        flags = ["--config", str(config)] if config else ["--listen", "127.0.0.1:0"]
        self.process = subprocess.Popen(
            [self.bin, "serve", *flags],
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


def _server_with(tmp_path: Path, setting: str, value: int) -> Server:
    """A server whose `setting` is `value`: its development PKI made by a first run on
    the defaults, then run with their configuration so changed."""
    Server(tmp_path).stop()
    config = subprocess.run(
        [tidemark_bin(), "serve", "--print-config"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    config, found = re.subn(rf"(?m)^{setting} = \d+$", f"{setting} = {value}", config)
    assert found == 1, setting
    # Both listeners on free ports.
    config = re.sub(r'(?m)^listen = "127\.0\.0\.1:\d+"$', 'listen = "127.0.0.1:0"', config)
    path = tmp_path / f"{setting}.toml"
    path.write_text(config)
    return Server(tmp_path, path)


@pytest.fixture()
def small_import_server(tmp_path: Path):
    """A server that takes at most 3 envelopes in one import."""
    running = _server_with(tmp_path, "max_import_items", 3)
    yield running
    running.stop()


@pytest.fixture()
def small_message_server(tmp_path: Path):
    """A server that takes messages of at most 8 KiB."""
    running = _server_with(tmp_path, "max_message_bytes", 8192)
    yield running
    running.stop()


@pytest.fixture()
def small_read_budget_server(tmp_path: Path):
    """A server that lets each principal start 60 reads a minute: 60 at once, then one
    a second."""
    running = _server_with(tmp_path, "reads_per_minute_per_principal", 60)
    yield running
    running.stop()
