"""The error tree: every failure a user can meet says what went wrong and what to do next.

Each class maps to one HTTP status so the server can answer with it unchanged.
"""

from __future__ import annotations


class TreadleError(Exception):
    """Base of every error treadle raises on purpose."""

    http_status = 500
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(TreadleError):
    """A setting is missing or malformed."""

    http_status = 400
    default_hint = "check the TREADLE_* environment variables and TREADLE_HOME/config.toml"


class InvalidInputError(TreadleError):
    """A value given by the user is malformed: a parameter, an id, a file."""

    http_status = 422


class DefinitionError(InvalidInputError):
    """A step or pipeline is wired wrongly: type mismatch, cycle, missing input."""

    default_hint = "fix the pipeline definition"


class NotFoundError(TreadleError):
    """A named thing (run, artifact, pipeline, file) does not exist."""

    http_status = 404


class ConflictError(TreadleError):
    """The change contradicts what is already recorded."""

    http_status = 409


class AccessError(TreadleError):
    """A treadle server refused the caller: no valid token (401), or a role too low (403)."""

    http_status = 401
    default_hint = "check TREADLE_TOKEN: `treadle up` prints the first one at its first start"


class PermissionDeniedError(AccessError):
    http_status = 403
    default_hint = "check TREADLE_TOKEN, or ask an owner of the project for a higher role"


class StoreUnavailableError(TreadleError):
    """The metadata database or artifact store cannot be reached."""

    http_status = 503
    default_hint = "check TREADLE_DB_URL / TREADLE_ARTIFACT_URL and that the server is up"


class CorruptArtifactError(TreadleError):
    """An artifact's bytes no longer match the sha256 recorded when it was written."""

    http_status = 500
    default_hint = "delete the file and re-run the step that produced it with --no-cache"


def describe(exc: BaseException) -> str:
    """An error in one line: treadle's own message, or the exception's type and text."""
    return exc.message if isinstance(exc, TreadleError) else f"{type(exc).__name__}: {exc}"
