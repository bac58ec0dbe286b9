"""Params and metrics of runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from treadle.errors import ConflictError
from treadle.store.db import Database
from treadle.store.records import MetricRecord
from treadle.store.sql.common import KEY_LIMIT, check_length

_INSERT_METRIC = (
    "INSERT INTO metrics (run_id, step_run_id, key, value, step, timestamp) "
    "VALUES (:run_id, :step_run_id, :key, :value, :step, :timestamp)"
)


class SqlTrackingStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def log_params(
        self, run_id: str, params: Mapping[str, str], step_run_id: str | None = None
    ) -> None:
        """Record params; logging a key again with the same value is fine, another is not."""
        if not params:
            return
        for key in params:
            check_length(key, KEY_LIMIT, "param key")
        with self._db.write() as conn:
            existing = {
                r["key"]: r["value"]
                for r in conn.execute(
                    "SELECT key, value FROM params WHERE run_id = :run", {"run": run_id}
                )
            }
            for key, value in params.items():
                if key in existing and existing[key] != value:
                    raise ConflictError(
                        f"param {key!r} of run {run_id[:8]} is already {existing[key]!r}; "
                        f"cannot change it to {value!r}",
                        "params are fixed once logged: log a metric, or start a new run",
                    )
            conn.executemany(
                "INSERT INTO params (run_id, key, value, step_run_id) "
                "VALUES (:run_id, :key, :value, :step_run_id)",
                [
                    {"run_id": run_id, "key": k, "value": v, "step_run_id": step_run_id}
                    for k, v in params.items()
                    if k not in existing
                ],
            )

    def log_metrics(self, metrics: Sequence[MetricRecord]) -> None:
        if not metrics:
            return
        for m in metrics:
            check_length(m.key, KEY_LIMIT, "metric key")
        rows = [
            {
                "run_id": m.run_id,
                "step_run_id": m.step_run_id,
                "key": m.key,
                "value": None if math.isnan(m.value) else m.value,
                "step": m.step,
                "timestamp": m.timestamp,
            }
            for m in metrics
        ]
        with self._db.write() as conn:
            conn.executemany(_INSERT_METRIC, rows)

    def copy_step_tracking(self, source_step_run_id: str, run_id: str, step_run_id: str) -> None:
        """Give a cache hit the params and metrics its original step run logged, so a
        cached run reads like the run that computed it."""
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO params (run_id, key, value, step_run_id) "
                "SELECT :run, key, value, :sr FROM params WHERE step_run_id = :source "
                "ON CONFLICT DO NOTHING",
                {"run": run_id, "sr": step_run_id, "source": source_step_run_id},
            )
            conn.execute(
                "INSERT INTO metrics (run_id, step_run_id, key, value, step, timestamp) "
                "SELECT :run, :sr, key, value, step, timestamp FROM metrics "
                "WHERE step_run_id = :source",
                {"run": run_id, "sr": step_run_id, "source": source_step_run_id},
            )

    def get_params(self, run_id: str) -> dict[str, str]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT key, value FROM params WHERE run_id = :run ORDER BY key", {"run": run_id}
            )
        return {r["key"]: r["value"] for r in rows}

    def metric_history(self, run_id: str, key: str | None = None) -> list[MetricRecord]:
        query = "SELECT * FROM metrics WHERE run_id = :run"
        args = {"run": run_id}
        if key is not None:
            query += " AND key = :key"
            args["key"] = key
        with self._db.read() as conn:
            rows = conn.execute(query + " ORDER BY key, step, timestamp, id", args)
        return [
            MetricRecord(
                run_id=r["run_id"],
                key=r["key"],
                value=math.nan if r["value"] is None else float(r["value"]),
                step=int(r["step"]),
                timestamp=float(r["timestamp"]),
                step_run_id=r["step_run_id"],
            )
            for r in rows
        ]

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """Each key's value at its highest step (the last logged, on ties)."""
        latest: dict[str, float] = {}
        for m in self.metric_history(run_id):
            latest[m.key] = m.value
        return latest
