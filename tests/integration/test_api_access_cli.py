"""`treadle users/tokens/projects/members` against a real `treadle up`, and a token made
on the local home for a user who lost theirs."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serving_support import REPO, env, free_port, wait_for

import treadle

pytestmark = [pytest.mark.slow, pytest.mark.every_backend]


def cli(
    home: Path, *args: str, url: str | None = None, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = env(home)
    if url is not None:
        environment["TREADLE_URL"], environment["TREADLE_TOKEN"] = url, token or ""
    return subprocess.run(
        [sys.executable, "-m", "treadle", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def up(
    tmp_path_factory: pytest.TempPathFactory, make_home: Callable[..., Path], backend: str
) -> Iterator[tuple[Path, str, str]]:
    home = make_home(tmp_path_factory.mktemp("access") / "home", backend)
    port = free_port()
    log = home.parent / "up.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "treadle", "up", "--port", str(port)],
        cwd=REPO,
        env=env(home),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(lambda: "is up on" in log.read_text(), 30), log.read_text()
        token = re.search(r"trd_[A-Za-z0-9_-]+", log.read_text())
        assert token is not None
        yield home, f"http://127.0.0.1:{port}", token.group(0)
    finally:
        process.terminate()
        process.wait(30)


def test_an_admin_adds_a_user_who_then_works_in_the_project(up: tuple[Path, str, str]) -> None:
    home, url, admin = up
    assert cli(home, "users", "create", "carol", url=url, token=admin).returncode == 0
    issued = cli(home, "tokens", "create", "--user", "carol", "--name", "ci", url=url, token=admin)
    assert issued.returncode == 0, issued.stderr
    carol = issued.stdout.strip()
    assert carol.startswith("trd_") and "shown this once" in issued.stderr

    # not a member yet: the project does not exist for her
    with treadle.Client(url, carol, project="default") as client:
        assert client.me().projects == {}
    added = cli(home, "members", "set", "carol", "editor", url=url, token=admin)
    assert added.returncode == 0 and "carol is editor" in added.stdout
    listed = cli(home, "members", "list", url=url, token=admin)
    assert "carol" in listed.stdout and "editor" in listed.stdout
    with treadle.Client(url, carol, project="default") as client:
        assert client.me().projects == {"default": "editor"}

    mine = cli(home, "tokens", "list", url=url, token=carol)
    assert mine.returncode == 0 and "ci" in mine.stdout and carol not in mine.stdout
    token_id = treadle.Client(url, carol).list_tokens()[0].id
    assert cli(home, "tokens", "revoke", token_id, url=url, token=carol).returncode == 0
    refused = cli(home, "members", "list", url=url, token=carol)
    assert refused.returncode == 1 and "revoked" in refused.stderr


def test_a_lost_admin_token_is_replaced_on_the_local_home(up: tuple[Path, str, str]) -> None:
    home, url, _ = up
    fresh = cli(home, "tokens", "create", "--user", "admin", "--name", "replacement")
    assert fresh.returncode == 0, fresh.stderr
    with treadle.Client(url, fresh.stdout.strip()) as client:
        assert client.me().user.is_admin


def test_server_only_commands_say_so_on_a_local_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = cli(home, "members", "list")
    assert result.returncode == 1
    assert "needs a treadle server" in result.stderr and "Traceback" not in result.stderr
