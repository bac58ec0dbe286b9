"""Per-step capture of stdout and stderr, also for steps running side by side in threads.

While a run is active, sys.stdout and sys.stderr are replaced by streams that write to
the buffer of the step running on the current thread, or through to the original stream
when no step is running there.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_local = threading.local()
_install_lock = threading.Lock()
_installs = 0
_originals: tuple[TextIO, TextIO] | None = None


class _RoutingStream(io.TextIOBase):
    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback

    def _target(self) -> Any:
        buf = getattr(_local, "buffer", None)
        return self._fallback if buf is None else buf

    def write(self, s: str) -> int:
        target = self._target()
        if target is self._fallback:
            return target.write(s)
        target.write(s)
        return len(s)

    def flush(self) -> None:
        target = self._target()
        if target is self._fallback:
            target.flush()

    def isatty(self) -> bool:
        return self._target() is self._fallback and self._fallback.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._fallback, "encoding", "utf-8")

    def fileno(self) -> int:
        return self._fallback.fileno()


@contextmanager
def routing() -> Iterator[None]:
    """Install the routing streams for the duration of a run (re-entrant)."""
    global _installs, _originals
    with _install_lock:
        if _installs == 0:
            _originals = (sys.stdout, sys.stderr)
            sys.stdout = _RoutingStream(sys.stdout)
            sys.stderr = _RoutingStream(sys.stderr)
        _installs += 1
    try:
        yield
    finally:
        with _install_lock:
            _installs -= 1
            if _installs == 0 and _originals is not None:
                sys.stdout, sys.stderr = _originals
                _originals = None


@contextmanager
def capture() -> Iterator[io.StringIO]:
    """Send this thread's stdout and stderr to a buffer while the block runs."""
    buf = io.StringIO()
    previous = getattr(_local, "buffer", None)
    _local.buffer = buf
    try:
        yield buf
    finally:
        _local.buffer = previous
