"""The command line: every stage's help, and each stage paying only for its own imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scalselect.cli import COMMANDS

# Every test here runs the command line in a fresh interpreter: `make test-fast` leaves them out.
pytestmark = pytest.mark.integration


def scalselect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "scalselect", *args],
        capture_output=True, text=True,
    )


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command: str) -> None:
    result = scalselect(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"python -m scalselect {command}" in result.stdout


def test_data_stages_do_not_import_the_model_stack() -> None:
    for command in ("validate", "filter", "select"):
        imported = scalselect("-v", command, "--help").stderr
        assert " scalselect.extract.shard" not in imported, command
        assert " torch\n" not in imported and " transformers\n" not in imported, command


def test_unknown_command_is_a_usage_error() -> None:
    result = scalselect("bogus")
    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stderr
