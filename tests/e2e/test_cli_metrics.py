"""`treadle runs metrics` and the metric lines of `runs show`, on a real script run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli_support import cli_env, treadle

SCRIPT = """
import treadle
with treadle.start_run(experiment="curves") as run:
    for i in range(50):
        treadle.log_metric("loss", 1.0 / (i + 1))
print(run.id)
"""


def _script_run(home: Path) -> str:
    env = cli_env(home)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_metrics_history_is_drawn_and_listed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_id = _script_run(home)
    summary = treadle(home, "runs", "metrics", run_id[:8])
    assert summary.returncode == 0, str(summary)
    assert "loss" in summary.stdout and "50" in summary.stdout
    assert "█" in summary.stdout and "▁" in summary.stdout

    one = treadle(home, "runs", "metrics", run_id[:8], "loss")
    assert one.returncode == 0, str(one)
    assert "0.02" in one.stdout  # the 50th value, 1/50

    show = treadle(home, "runs", "show", run_id[:8])
    assert "loss=0.02" in show.stdout and "50 values" in show.stdout

    missing = treadle(home, "runs", "metrics", run_id[:8], "nosuch")
    assert missing.returncode == 1 and "no metric 'nosuch'" in missing.stderr
