"""Settings: environment over config file over defaults. The one reader of os.environ.

| setting        | environment            | default                           |
|----------------|------------------------|-----------------------------------|
| home           | TREADLE_HOME           | ~/.treadle                        |
| db_url         | TREADLE_DB_URL         | sqlite:///<home>/treadle.db       |
| artifact_url   | TREADLE_ARTIFACT_URL   | <home>/artifacts                  |
| project        | TREADLE_PROJECT        | default                           |
| experiment     | TREADLE_EXPERIMENT     | default                           |
| executor       | TREADLE_EXECUTOR       | local                             |
| user           | TREADLE_USER           | the login name                    |
| url            | TREADLE_URL            | none: work on the home directly   |
| token          | TREADLE_TOKEN          | none                              |

The config file is `<home>/config.toml` with the same names as keys. With `url` set, the
CLI works against that treadle server (as the user `token` belongs to) instead of the home.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
from pathlib import Path
from typing import Any

from treadle.errors import ConfigError

_KEYS = ("db_url", "artifact_url", "project", "experiment", "executor", "user", "url", "token")


@dataclasses.dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    artifact_url: str
    project: str = "default"
    experiment: str = "default"
    executor: str = "local"
    user: str = "local"
    url: str | None = None
    """A treadle server's address; when set, the CLI talks to it instead of the home."""
    token: str | None = dataclasses.field(default=None, repr=False)
    """The API token for `url` (kept out of reprs and tracebacks)."""

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import tomllib

    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    unknown = set(data) - set(_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {path}: {', '.join(sorted(unknown))}",
            f"known keys are {', '.join(_KEYS)}",
        )
    return data


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Resolve settings from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("TREADLE_HOME") or Path.home() / ".treadle").expanduser()
    file_values = _read_config_file(home / "config.toml")

    def pick(key: str, default: str) -> str:
        value = env.get(f"TREADLE_{key.upper()}") or file_values.get(key) or default
        return str(value)

    return Settings(
        home=home,
        db_url=pick("db_url", f"sqlite:///{home / 'treadle.db'}"),
        artifact_url=pick("artifact_url", str(home / "artifacts")),
        project=pick("project", "default"),
        experiment=pick("experiment", "default"),
        executor=pick("executor", "local"),
        user=pick("user", _login()),
        url=str(env.get("TREADLE_URL") or file_values.get("url") or "").strip() or None,
        token=str(env.get("TREADLE_TOKEN") or file_values.get("token") or "").strip() or None,
    )
