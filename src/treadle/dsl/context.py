"""Which pipeline body, if any, is being traced right now."""

from __future__ import annotations

import contextvars
from typing import Any, Protocol


class CallRecorder(Protocol):
    def add_call(
        self, step: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, mapped: bool
    ) -> Any: ...


_current: contextvars.ContextVar[CallRecorder | None] = contextvars.ContextVar(
    "treadle_graph_builder", default=None
)


def current() -> CallRecorder | None:
    return _current.get()


def activate(recorder: CallRecorder) -> contextvars.Token[CallRecorder | None]:
    return _current.set(recorder)


def deactivate(token: contextvars.Token[CallRecorder | None]) -> None:
    _current.reset(token)
