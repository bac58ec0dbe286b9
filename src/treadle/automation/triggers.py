"""Triggers: events become runs, with parameters taken from the event.

Events come from four places: a signed webhook, a manual fire, changes the dispatcher
observes in the store (a run finished, a model version registered, an artifact
created — whoever wrote them), and monitors (`monitor.alert`). Each is recorded once
under a key of its own; each (trigger, event) pair is claimed once, so a trigger acts on
an event once however many control planes look.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from treadle.automation.scheduler import Launch
from treadle.errors import AccessError, InvalidInputError, describe
from treadle.store.records import EventRecord, RunRecord, TriggerRecord, new_id

KINDS = (
    "webhook",
    "manual",
    "run.finished",
    "model.registered",
    "artifact.created",
    "monitor.alert",
)
OBSERVED = ("run.finished", "model.registered", "artifact.created")
"""Kinds the dispatcher finds by looking at the store."""
DIRECT = ("webhook", "manual")
"""Kinds whose events belong to one trigger and are fired as they arrive."""
TOLERANCE_SECONDS = 300
"""How far a webhook's timestamp may be from the server's clock."""
LOOKBACK_SECONDS = 60.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def new_trigger(
    *,
    project_id: str,
    name: str,
    kind: str,
    pipeline: str,
    params: Mapping[str, str] | None = None,
    filter: Mapping[str, str] | None = None,
    user: str,
    now: float | None = None,
) -> tuple[TriggerRecord, str | None]:
    """A checked trigger record and, for a webhook, its new secret (shown once)."""
    if not _NAME.match(name):
        raise InvalidInputError(
            f"name: {name!r} is not a trigger name", "letters, digits, '.', '_' and '-'"
        )
    if kind not in KINDS:
        raise InvalidInputError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    for key, value in (params or {}).items():
        if value.startswith("$") and not value.startswith("$event."):
            raise InvalidInputError(
                f"params.{key}: {value!r} names no event field", "write $event.FIELD.SUBFIELD"
            )
    secret = "whsec_" + secrets.token_urlsafe(32) if kind == "webhook" else None
    at = time.time() if now is None else now
    record = TriggerRecord(
        id=new_id(),
        project_id=project_id,
        name=name,
        kind=kind,
        pipeline=pipeline,
        params=dict(params or {}),
        filter=dict(filter or {}),
        enabled=True,
        created_by=user,
        created_at=at,
        has_secret=secret is not None,
    )
    return record, secret


def lookup(payload: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of the payload, or None."""
    value: Any = payload
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def matches(where: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    """Whether the payload has each value of `where` at its dotted path."""
    return all(str(lookup(payload, k)) == str(v) for k, v in where.items())


def render_params(params: Mapping[str, str], payload: Mapping[str, Any]) -> dict[str, str]:
    """The run's parameters: literals as given, `$event.x.y` from the payload."""
    import json

    out: dict[str, str] = {}
    for key, value in params.items():
        if value.startswith("$event."):
            found = lookup(payload, value.removeprefix("$event."))
            if found is None:
                raise InvalidInputError(
                    f"the event has no field {value.removeprefix('$event.')!r} for "
                    f"parameter {key!r}"
                )
            out[key] = found if isinstance(found, str) else json.dumps(found)
        else:
            out[key] = value
    return out


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a webhook sender puts in X-Treadle-Signature."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def unsigned() -> AccessError:
    """The one answer to a delivery no webhook trigger's secret signed: the same for an
    unknown trigger id and a wrong signature, so ids cannot be probed."""
    return AccessError(
        "the webhook is not signed with the secret of a webhook trigger",
        "sign TIMESTAMP + '.' + the exact body bytes with the trigger's secret: "
        "X-Treadle-Signature: sha256=HMAC-SHA256(secret, TIMESTAMP + '.' + body)",
    )


def verify(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float
) -> None:
    """Refuse a webhook whose signature is wrong or whose timestamp is old or odd."""
    if not timestamp or not signature:
        raise AccessError(
            "the webhook has no X-Treadle-Timestamp or X-Treadle-Signature header",
            "sign it: X-Treadle-Signature: sha256=HMAC-SHA256(secret, TIMESTAMP + '.' + body)",
        )
    try:
        sent = float(timestamp)
    except ValueError:
        raise AccessError(
            "X-Treadle-Timestamp is not a Unix time in seconds", "send int(time.time())"
        ) from None
    if not hmac.compare_digest(sign(secret, timestamp, body), signature.strip()):
        raise unsigned()
    if abs(now - sent) > TOLERANCE_SECONDS:
        raise AccessError(
            f"the webhook's timestamp is {abs(now - sent):.0f} s away from the server's clock",
            f"send it within {TOLERANCE_SECONDS} s of signing it",
        )


class Dispatcher:
    """Records observed changes as events and fires the triggers that match them."""

    def __init__(
        self,
        store: Any,
        launch: Launch,
        clock: Callable[[], float] = time.time,
        announce: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.store = store
        self.launch = launch
        self.clock = clock
        self.announce = announce
        self._since = clock() - LOOKBACK_SECONDS
        self._lock = threading.Lock()

    def observe(self) -> int:
        """Record what changed since the last look, for kinds some trigger watches."""
        now = self.clock()
        watched: dict[str, set[str]] = {}
        for t in self.store.automation.list_triggers():
            if t.enabled and t.kind in OBSERVED:
                watched.setdefault(t.kind, set()).add(t.project_id)
        recorded = 0
        # overlap the last look a little: a writer may commit a row stamped just before
        since = self._since - 5.0
        for kind, projects in watched.items():
            for project_id, key, payload, at in self.store.automation.changes(
                kind, projects, since
            ):
                # stamped when it happened: a trigger acts on what happened after it was made
                _, new = self.store.automation.record_event(project_id, kind, key, payload, at)
                recorded += new
        self._since = now
        return recorded

    def dispatch(self) -> list[tuple[str, str | None, str]]:
        """Fire every enabled trigger on its pending events: (trigger, run id, outcome)."""
        out = []
        for trigger in self.store.automation.list_triggers():
            if not trigger.enabled or trigger.kind in DIRECT:
                continue
            for event in self.store.automation.pending_events(trigger):
                out.append(self.fire(trigger, event))
        return out

    def fire(self, trigger: TriggerRecord, event: EventRecord) -> tuple[str, str | None, str]:
        """Act on one event, once: start the trigger's pipeline or record why not."""
        automation = self.store.automation
        fire_id = automation.claim_trigger_fire(trigger.id, event.id, self.clock())
        if fire_id is None:
            return trigger.name, None, "already handled"
        if not matches(trigger.filter, event.payload):
            automation.finish_trigger_fire(fire_id, None, "ignored: the filter does not match")
            return trigger.name, None, "ignored"
        cause = {
            "kind": event.kind,
            "trigger": trigger.name,
            "trigger_id": trigger.id,
            "event_id": event.id,
            "event_key": event.key,
            "event": _brief(event.payload),
        }
        try:
            params = render_params(trigger.params, event.payload)
            run: RunRecord = self.launch(
                trigger.project_id, trigger.pipeline, params, cause, trigger.created_by
            )
        except Exception as exc:  # the pipeline's code may raise anything on import
            said = describe(exc)
            outcome = f"failed to start: {said}"
            automation.finish_trigger_fire(fire_id, None, outcome)
            self.announce(f"trigger {trigger.name}: {outcome}")
            return trigger.name, None, outcome
        automation.finish_trigger_fire(fire_id, run.id, "started")
        return trigger.name, run.id, "started"

    def run_forever(self, stop: threading.Event, every: float = 0.25) -> None:
        while not stop.wait(every):
            try:
                with self._lock:
                    self.observe()
                    self.dispatch()
            except Exception as exc:  # the loop outlives a bad round; the next one retries
                self.announce(f"triggers: {type(exc).__name__}: {exc}")


def _brief(payload: Mapping[str, Any], limit: int = 2000) -> dict[str, Any]:
    """The event's payload as recorded on the run, cut if it is large."""
    import json

    text = json.dumps(payload, default=str)
    if len(text) <= limit:
        return dict(payload)
    return {"truncated": text[:limit]}
