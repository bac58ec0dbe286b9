"""The public surface of `treadle` is a decision: changing it should be deliberate."""

from __future__ import annotations

import subprocess
import sys

import treadle

EXPECTED = {
    "Client",
    "Dataset",
    "Metrics",
    "Model",
    "Report",
    "Resources",
    "Run",
    "RunOptions",
    "RunState",
    "StepOptions",
    "StepState",
    "TreadleError",
    "active_run_id",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "load_model",
    "pipeline",
    "promote",
    "register_model",
    "resume_run",
    "run_pipeline",
    "set_alias",
    "start_run",
    "step",
    "unmapped",
}


def test_all_is_pinned() -> None:
    assert set(treadle.__all__) == EXPECTED
    for name in treadle.__all__:
        assert getattr(treadle, name) is not None


def test_import_stays_light() -> None:
    """`import treadle` must not pull in the heavy libraries a run may never need."""
    code = (
        "import sys, treadle\n"
        "heavy = [m for m in ('sqlalchemy', 'alembic', 'pandas', 'sklearn', 'pyarrow', "
        "'fsspec', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
