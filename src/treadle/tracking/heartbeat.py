"""Heartbeats: while a run executes, its process says so every few seconds, so that a
control plane can tell a dead executor (no heartbeat) from a slow one."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from treadle.store import Store

EVERY_SECONDS = 5.0
STALE_SECONDS = 30.0
"""Silence after which a RUNNING run counts as abandoned (six missed heartbeats)."""


class Heartbeat:
    def __init__(self, store: Store, run_id: str, every: float = EVERY_SECONDS) -> None:
        self.store = store
        self.run_id = run_id
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="treadle-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.store.runs.heartbeat(self.run_id, time.time())
            except Exception:  # a busy database must not stop the run; the next beat retries
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
