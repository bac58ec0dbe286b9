"""`treadle serve` refusing to start: a reference that names nothing is a one-line
error before any server exists, and a model whose stored file no longer matches its
recorded sha256 is refused at load, so no server ever answers with it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from serving_support import (
    MODEL,
    Completed,
    corrupt_version,
    free_port,
    module_home,
    treadle,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return module_home(tmp_path_factory, "cli")


def assert_one_line_error(result: Completed, *fragments: str) -> None:
    """Refused: exit 1, `error: ...` on one line (a hint may follow), no traceback."""
    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.stdout + result.stderr, str(result)
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, str(result)
    assert lines[0].startswith("error: "), str(result)
    for fragment in fragments:
        assert fragment in lines[0], str(result)
    assert "listening on" not in result.stdout + result.stderr, str(result)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("serve", "nosuch@champion"), ("no registered model", "'nosuch'")),
        (("serve", f"{MODEL}@99"), (f"'{MODEL}'", "no version 99")),
        (("serve", f"{MODEL}@nosuchalias"), ("no alias", "'nosuchalias'")),
        (("serve", "@champion"), ("names no model",)),
        (("deployments", "serve", "nosuch"), ("no deployment", "'nosuch'")),
    ],
    ids=["unknown-model", "unknown-version", "unknown-alias", "no-name", "unknown-deployment"],
)
def test_a_reference_to_nothing_is_refused(
    home: Path, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    result = treadle(home, *args, "--port", str(free_port()), timeout=60)
    assert_one_line_error(result, *fragments)


@pytest.fixture(scope="module")
def corrupted(home: Path) -> tuple[Path, Completed]:
    """`treadle serve clf@3` after one byte of v3's model file was flipped in the store."""
    damaged = corrupt_version(home, 3)
    return damaged, treadle(home, "serve", f"{MODEL}@3", "--port", str(free_port()), timeout=90)


def test_a_corrupted_model_is_refused_at_load(corrupted: tuple[Path, Completed]) -> None:
    damaged, result = corrupted
    output = result.stdout + result.stderr
    assert result.returncode != 0, str(result)
    assert "Traceback" not in output, str(result)
    assert "corrupt" in result.stderr, str(result)
    # the message names the damaged object, so it can be found and replaced
    assert damaged.name[:12] in result.stderr, str(result)
    assert "serving clf@3" not in output, str(result)


def test_a_corrupted_model_gets_treadles_error_line(corrupted: tuple[Path, Completed]) -> None:
    _, result = corrupted
    assert result.returncode == 1, str(result)
    assert f"error: the model server for {MODEL}@3 did not start" in result.stderr, str(result)


def test_a_port_in_use_is_refused(home: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = treadle(home, "serve", f"{MODEL}@1", "--port", str(port), timeout=90)
    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.stdout + result.stderr, str(result)
    assert "address already in use" in result.stderr.lower(), str(result)
