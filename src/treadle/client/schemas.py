"""What some calls answer besides store records: the shapes of the server's own response
models, as plain frozen dataclasses."""

from __future__ import annotations

import dataclasses

from treadle.store.records import AliasRecord, UserRecord


@dataclasses.dataclass(frozen=True)
class Me:
    user: UserRecord
    projects: dict[str, str]
    """Project name -> the caller's role there."""


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str = dataclasses.field(repr=False)
    """The secret: shown this once, stored by the server only as a hash."""


@dataclasses.dataclass(frozen=True)
class GateCheck:
    """One gate condition and how it came out, e.g. `accuracy >= 0.9` (0.95 >= 0.9)."""

    condition: str
    passed: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class AliasMove:
    """Where an alias points after a move, and the gate conditions it passed."""

    alias: AliasRecord
    gates: list[GateCheck]
