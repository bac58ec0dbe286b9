"""`treadle policies apply FILE.py`: the real executable against a real `treadle up`
(api_support's platform, SQLite, project `alpha` seeded with the pipeline `seed_flow`,
the model `sec-model` and the deployment `sec-svc`).

A Python file with several policies applies each and prints each; the platform stores
the same document as for the YAML twin; `--replace` changes them; a file that does not
import, defines no policy or has a bad field is refused before anything is stored.
"""

from __future__ import annotations

import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import EDITOR, REPO, TREADLE, Platform, env, started_platform

import treadle
from treadle.errors import NotFoundError
from treadle.loop.policy import load_text

pytestmark = pytest.mark.slow

PROJECT = "alpha"
PIPELINE, MODEL, DEPLOYMENT = "seed_flow", "sec-model", "sec-svc"

POLICIES_PY = f"""\
import os

from treadle.loop import canary, define_policy, from_event, on_alert, promote, register, retrain

STEM = os.environ["POLICY_STEM"]
GATES = {{"strict": 0.1, "loose": 0.3}}

policies = [
    define_policy(
        f"{{STEM}}-{{kind}}",
        on=on_alert(monitor=f"{{STEM}}-watch", alert="drift"),
        run=retrain("{PIPELINE}", params={{"n": 3, "since": from_event("window.start")}}),
        register=register("{MODEL}", require=[f"loss <= {{limit}}"]),
        canary=canary("{DEPLOYMENT}", percent=20, requests=50),
        promote=promote(metric="accuracy"),
    )
    for kind, limit in GATES.items()
]
"""
TWIN_YAML = f"""\
name: {{stem}}-strict
on:
  event: monitor.alert
  where: {{{{monitor: {{stem}}-watch, alert: drift}}}}
run:
  pipeline: {PIPELINE}
  params: {{{{n: 3, since: $event.window.start}}}}
register:
  model: {MODEL}
  alias: challenger
  require: ["loss <= 0.1"]
canary:
  deployment: {DEPLOYMENT}
  percent: 20
  requests: 50
  timeout: 600
promote:
  alias: champion
  metric: accuracy
  margin: 0.0
"""


@pytest.fixture(scope="module", params=[pytest.param("sqlite", id="sqlite")])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with started_platform(request, tmp_path_factory, "policy-py") as p:
        yield p


@pytest.fixture
def editor(platform: Platform) -> Iterator[treadle.Client]:
    with treadle.Client(
        platform.url, platform.tokens[EDITOR], project=PROJECT, trust_env=False
    ) as c:
        yield c


def apply(
    platform: Platform, *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        **env(platform.home, None),
        "TREADLE_URL": platform.url,
        "TREADLE_TOKEN": platform.tokens[EDITOR],
        "TREADLE_PROJECT": PROJECT,
        **(extra or {}),
    }
    return subprocess.run(
        [str(TREADLE), "policies", "apply", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_a_python_file_applies_each_of_its_policies(
    platform: Platform, editor: treadle.Client, tmp_path: Path
) -> None:
    stem = f"py-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "loop.py"
    path.write_text(POLICIES_PY)
    done = apply(platform, str(path), extra={"POLICY_STEM": stem})
    assert done.returncode == 0, done.stdout + done.stderr
    printed = done.stdout.splitlines()
    assert [line.split(":")[0] for line in printed] == [
        f"policy {stem}-strict",
        f"policy {stem}-loose",
    ]
    assert f"'monitor': '{stem}-watch'" in printed[0]
    stored = {p.name: p for p in editor.list_policies() if p.name.startswith(stem)}
    assert set(stored) == {f"{stem}-strict", f"{stem}-loose"}
    assert stored[f"{stem}-loose"].spec["register"]["require"] == ["loss <= 0.3"]

    # the platform stores what the YAML twin (with every field spelled out) would give
    twin = load_text(TWIN_YAML.format(stem=stem))
    assert stored[f"{stem}-strict"].spec == twin
    assert stored[f"{stem}-strict"].enabled

    # applied again: refused as the YAML would be, changed with --replace
    again = apply(platform, str(path), extra={"POLICY_STEM": stem})
    assert again.returncode == 1 and f"a policy named '{stem}-strict' exists" in again.stderr
    path.write_text(POLICIES_PY.replace("requests=50", "requests=75"))
    replaced = apply(platform, str(path), "--replace", extra={"POLICY_STEM": stem})
    assert replaced.returncode == 0, replaced.stderr
    assert len(replaced.stdout.splitlines()) == 2
    assert editor.get_policy(f"{stem}-loose").spec["canary"]["requests"] == 75
    for name in stored:
        editor.delete_policy(name)


def test_the_regression_example_in_python_reaches_the_platforms_checks(
    platform: Platform,
) -> None:
    """The example's pipeline is not on this platform: the file is read, checked and sent,
    and the platform answers for the pipeline it names, as for the YAML."""
    for name in ("policy.py", "policy.yaml"):
        done = apply(platform, f"examples/loop/regression/{name}")
        assert done.returncode == 1
        assert "error: no pipeline named 'training'" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "THRESHOLD = float('high')\npolicy = {}\n",
            "failed to import: ValueError: could not convert string to float",
        ),
        ("threshold = 0.9\n", "defines neither `policy` nor `policies`"),
        ("policies = {'name': 'x'}\n", "`policies` must be a list of policies, not a dict"),
        (
            f"""\
            from treadle.loop import canary, define_policy, register, retrain

            policy = define_policy(
                "refused-{{stem}}",
                run=retrain("{PIPELINE}"),
                register=register("{MODEL}"),
                canary=canary("{DEPLOYMENT}", percent=150),
            )
            """,
            "policy: canary.percent must be a number from 0.1 to 99.9",
        ),
    ],
)
def test_a_bad_python_file_is_refused_and_nothing_is_stored(
    platform: Platform, editor: treadle.Client, tmp_path: Path, text: str, said: str
) -> None:
    stem = uuid.uuid4().hex[:6]
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent(text).replace("{stem}", stem))
    done = apply(platform, str(path))
    assert done.returncode == 1, done.stdout
    assert said in done.stderr and done.stdout == ""
    assert str(path) in done.stderr  # named, as the file or the line that refused
    with pytest.raises(NotFoundError):
        editor.get_policy(f"refused-{stem}")
