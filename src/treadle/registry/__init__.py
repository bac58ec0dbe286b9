"""The model registry: versions, aliases and their history, gates."""

from treadle.registry.api import (
    load_model,
    load_version,
    promote,
    register_model,
    set_alias,
)
from treadle.registry.gates import GateFailedError, GateResult
from treadle.registry.refs import ModelRef, parse_ref, resolve

__all__ = [
    "GateFailedError",
    "GateResult",
    "ModelRef",
    "load_model",
    "load_version",
    "parse_ref",
    "promote",
    "register_model",
    "resolve",
    "set_alias",
]
