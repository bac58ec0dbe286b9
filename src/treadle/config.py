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
| ray_address    | RAY_ADDRESS            | none: the ray executor starts one |

The config file is `<home>/config.toml` with the same names as keys. With `url` set, the
CLI works against that treadle server (as the user `token` belongs to) instead of the home.

Environments that `treadle pipeline deploy --to NAME` deploys to are tables there:

    [environments.staging]
    url = "http://staging.example:8080"
    token_env = "STAGING_TOKEN"        # or token = "trd_..."; project = "default"

    [environments.prod]
    url = "http://prod.example:8080"
    token_env = "PROD_TOKEN"
    requires = "staging"               # a package must have run green there first

TREADLE_ENV_<NAME>_URL, _TOKEN and _PROJECT set or override them (what a CI job has).
A `prod` or `production` environment requires `staging` when one is named and it does
not say otherwise (`requires = ""`).
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from treadle.errors import ConfigError

_KEYS = (
    "db_url",
    "artifact_url",
    "project",
    "experiment",
    "executor",
    "user",
    "url",
    "token",
    "ray_address",
    "environments",
)
_ENV_KEYS = ("url", "token", "token_env", "project", "requires")
_ENV_VAR = re.compile(r"TREADLE_ENV_([A-Z0-9_]+?)_(URL|TOKEN|PROJECT)")


@dataclasses.dataclass(frozen=True)
class Environment:
    """A treadle server pipelines are deployed to: `dev`, `staging`, `prod`…"""

    name: str
    url: str
    token: str | None = dataclasses.field(default=None, repr=False)
    project: str = "default"
    requires: str | None = None
    """An environment where a package must have a successful run before it comes here."""


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
    environments: dict[str, Environment] = dataclasses.field(default_factory=dict)
    ray_address: str | None = None
    """The Ray cluster the ray executor uses (`auto`, `HOST:PORT` or `ray://HOST:PORT`)."""

    def environment(self, name: str) -> Environment:
        found = self.environments.get(name)
        if found is None:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(
                f"no environment named {name!r} (configured: {known})",
                f"add [environments.{name}] with url and token_env to "
                f"{self.home / 'config.toml'}, or set TREADLE_ENV_{name.upper()}_URL "
                f"and TREADLE_ENV_{name.upper()}_TOKEN",
            )
        return found

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
        environments=_environments(file_values.get("environments", {}), env, home),
        ray_address=str(env.get("RAY_ADDRESS") or file_values.get("ray_address") or "").strip()
        or None,
    )


def _environments(tables: Any, env: Mapping[str, str], home: Path) -> dict[str, Environment]:
    where = home / "config.toml"
    if not isinstance(tables, dict):
        raise ConfigError(f"`environments` in {where} must be tables: [environments.NAME]")
    raw: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[environments.{name}] in {where} must be a table")
        unknown = set(table) - set(_ENV_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key(s) in [environments.{name}] of {where}: {', '.join(sorted(unknown))}",
                f"known keys are {', '.join(_ENV_KEYS)}",
            )
        entry = dict(table)
        if entry.get("token_env"):
            entry.setdefault("token", env.get(str(entry["token_env"])))
        raw[str(name)] = entry
    for key, value in env.items():
        found = _ENV_VAR.fullmatch(key)
        if found and value.strip():
            name = found.group(1).lower()
            raw.setdefault(name, {})[found.group(2).lower()] = value.strip()
    out: dict[str, Environment] = {}
    for name, entry in raw.items():
        url = str(entry.get("url") or "").strip()
        if not url:
            raise ConfigError(
                f"environment {name!r} has no url",
                f"set url in [environments.{name}] or TREADLE_ENV_{name.upper()}_URL",
            )
        requires = entry.get("requires")
        if requires is None and name in ("prod", "production") and "staging" in raw:
            requires = "staging"
        out[name] = Environment(
            name=name,
            url=url,
            token=str(entry["token"]) if entry.get("token") else None,
            project=str(entry.get("project") or "default"),
            requires=str(requires) if requires else None,
        )
    return out


def deployment_log(home: Path, log: str, project: str, deployment: str) -> Path:
    """Where a deployment's model servers keep a log (`predictions` or `feedback`), under
    the home of whoever runs them, by project: the one layout the servers that write and
    the monitors that read share."""

    def safe(label: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)

    return home / log / safe(project) / safe(deployment)
