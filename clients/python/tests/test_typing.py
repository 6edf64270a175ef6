"""The package is typed (`py.typed`): mypy finds no error in it as installed, and code
that uses it type-checks under `--strict`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_installed_package_type_checks():
    result = mypy("-p", "tidemark_client")
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_code_type_checks_strictly(tmp_path: Path):
    user = tmp_path / "user.py"
    user.write_text(
        textwrap.dedent(
            """
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            from tidemark_client import Client, SigningKey, TidemarkError, tlog

            def reports_by_month(client: Client) -> dict[str, int]:
                table = client.aggregate(["month"], ["reports"], category="smuggling")
                return {cell.keys[0]: cell.values[0] for cell in table.cells}

            def public(key: SigningKey) -> Ed25519PublicKey:
                return key.public_key

            def witnessed(note: str, log_key: str, witnesses: tuple[str, ...]) -> list[str]:
                return tlog.cosigned_by(note, log_key, witnesses)

            def my_state(client: Client) -> str:
                try:
                    return client.whoami().state
                except TidemarkError as e:
                    return e.message
            """
        )
    )
    result = mypy("--strict", str(user))
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: a wrong type in user code is found.
    user.write_text(
        "from tidemark_client import Client\n\n"
        "def f(c: Client) -> int:\n"
        "    return c.whoami().state\n"
    )
    result = mypy("--strict", str(user))
    assert result.returncode == 1 and "Incompatible return value" in result.stdout
