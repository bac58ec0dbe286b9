"""Carrying out policies: each matching event becomes a policy run that goes step by
step — run the pipeline, register its model through the gate, canary it, then promote
or roll back — recording what it did and why at every step. A policy run is claimed once
per (policy, event), and its progress is stored, so a restarted control plane picks it up
where it was.

A failed retraining run, a model that fails its gate, or a canary that loses or times
out all end with the champion serving as before.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from treadle.automation.scheduler import Launch
from treadle.automation.triggers import matches, render_params
from treadle.errors import NotFoundError, describe
from treadle.loop.policy import LOWER_IS_BETTER, Policy, parse
from treadle.store.records import EventRecord, PolicyRecord, PolicyRunRecord
from treadle.types import RunState


class PolicyRunner:
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

    def tick(self) -> None:
        for record in self.store.policies.list_policies():
            if record.enabled:
                try:
                    self._start_new(record)
                except Exception as exc:  # one broken policy does not stop the others
                    self.announce(f"policy {record.name}: {type(exc).__name__}: {exc}")
        for run in self.store.policies.list_runs(state="running"):
            try:
                self.advance(run)
            except Exception as exc:  # a policy run that breaks ends; the champion serves on
                said = describe(exc)
                self._finish(
                    run, "failed", f"error: {said}; the champion keeps serving", step=run.step
                )

    def run_forever(self, stop: threading.Event, every: float = 0.5) -> None:
        while not stop.wait(every):
            try:
                self.tick()
            except Exception as exc:
                self.announce(f"policies: {type(exc).__name__}: {exc}")

    # -- starting -----------------------------------------------------------------------

    def _pending(self, record: PolicyRecord, policy: Policy) -> list[EventRecord]:
        rows = self.store.policies.pending_events(record, policy.event)
        return [self.store.automation.get_event(r["id"]) for r in rows]

    def _start_new(self, record: PolicyRecord) -> None:
        policy = parse(record.spec)
        for event in self._pending(record, policy):
            now = self.clock()
            if not matches(policy.where, event.payload):
                self.store.policies.claim(record, event.id, [], now, state="ignored")
                continue
            first = [
                _step("event", "seen", f"{event.kind} {_brief(event.payload)}", now, event=event.id)
            ]
            run = self.store.policies.claim(record, event.id, first, now)
            if run is None:
                continue
            cause = {
                "kind": event.kind,
                "policy": record.name,
                "policy_run_id": run.id,
                "event_id": event.id,
                "event": event.payload,
            }
            try:
                params = render_params(policy.params, event.payload)
                started = self.launch(
                    record.project_id, policy.pipeline, params, cause, record.created_by
                )
            except Exception as exc:
                said = describe(exc)
                self._finish(run, "failed", f"the retraining run did not start: {said}", step="run")
                continue
            self.announce(f"policy {record.name}: run {started.id[:8]} started for {event.kind}")
            self._go(
                run,
                "run",
                _step(
                    "run", "started", f"{policy.pipeline} run {started.id}", now, run_id=started.id
                ),
                {"run_id": started.id},
            )

    # -- steps ---------------------------------------------------------------------------

    def advance(self, run: PolicyRunRecord) -> None:
        record = self.store.policies.get_policy_by_id(run.policy_id)
        policy = parse(record.spec)
        acting = self._acting(record)
        if run.step == "run":
            self._after_run(run, policy, acting)
        elif run.step == "canary":
            self._during_canary(run, policy, acting)

    def _after_run(self, run: PolicyRunRecord, policy: Policy, acting: Any) -> None:
        finished = self.store.runs.get_run(run.context["run_id"])
        if not finished.state.finished:
            return
        now = self.clock()
        if finished.state is not RunState.SUCCEEDED:
            error = (finished.error or "").strip().splitlines()[-1:] or [finished.state.value]
            self._finish(
                run,
                "failed",
                f"retraining run {finished.id[:8]} {finished.state.value}: {error[0]}; the "
                "champion keeps serving",
                step="run",
            )
            return
        steps = [*run.steps, _step("run", "succeeded", f"run {finished.id} SUCCEEDED", now)]
        run = self.store.policies.update(
            run.id, state="running", step="register", steps=steps, context=run.context, at=now
        )
        self._register(run, policy, acting, finished.id)

    def _register(self, run: PolicyRunRecord, policy: Policy, acting: Any, run_id: str) -> None:
        from treadle.registry import set_alias
        from treadle.registry.gates import GateFailedError

        project_id = run.project_id
        try:
            model = self.store.models.get_model(project_id, policy.model)
        except NotFoundError:
            self._finish(
                run, "failed", f"the run registered no model {policy.model!r}", step="register"
            )
            return
        produced = [v for v in self.store.models.list_versions(model.id) if v.run_id == run_id]
        if not produced:
            self._finish(
                run,
                "failed",
                f"run {run_id[:8]} registered no version of {policy.model}",
                step="register",
            )
            return
        version = max(produced, key=lambda v: v.version)
        ref = f"{policy.model}@{version.version}"
        now = self.clock()
        try:
            _, gates = set_alias(
                ref,
                policy.alias,
                require_conditions=policy.require,
                reason=f"policy {run.policy_id[:8]}: gates passed",
                store=acting,
            )
        except GateFailedError as refused:
            self._finish(
                run,
                "not_promoted",
                f"{ref} not registered as {policy.alias}: {refused.message}",
                step="register",
            )
            return
        passed = "; ".join(f"{g.condition} ({g.detail})" for g in gates) or "no gate"
        steps = [
            *run.steps,
            _step(
                "register",
                "passed",
                f"{ref} is {policy.alias} ({passed})",
                now,
                version=version.version,
            ),
        ]
        context = {**run.context, "version": version.version}
        if policy.canary is None and policy.promote is None:
            self._finish(
                run,
                "promoted",
                f"{ref} is {policy.alias}",
                steps=steps,
                context=context,
                step="register",
            )
            return
        self._start_canary(run, policy, acting, steps, context)

    def _start_canary(
        self,
        run: PolicyRunRecord,
        policy: Policy,
        acting: Any,
        steps: list[dict[str, Any]],
        context: dict[str, Any],
    ) -> None:
        from treadle.serving import deployments as ops

        assert policy.canary is not None
        canary = policy.canary
        deployment = self.store.deployments.get_deployment(run.project_id, canary.deployment)
        champion = self._served_version(run.project_id, policy.model, deployment)
        ops.set_traffic(
            acting,
            run.project_id,
            canary.deployment,
            "canary",
            candidate=policy.alias,
            canary_weight=canary.percent / 100,
        )
        now = self.clock()
        steps = [
            *steps,
            _step(
                "canary",
                "started",
                f"{canary.deployment}: {canary.percent:g}% to {policy.model}@{context['version']} "
                f"({policy.alias}) until it answers {canary.requests} labelled requests",
                now,
            ),
        ]
        context = {**context, "canary_start": now, "champion": champion}
        self.store.policies.update(
            run.id, state="running", step="canary", steps=steps, context=context, at=now
        )

    def _served_version(self, project_id: str, model: str, deployment: Any) -> int | None:
        revision = self.store.deployments.current_revision(deployment.id)
        for target in revision.targets if revision else []:
            if target.get("role", "primary") == "primary":
                version = target.get("version")
                return int(version) if version is not None else None
        return None

    def _during_canary(self, run: PolicyRunRecord, policy: Policy, acting: Any) -> None:
        from treadle.monitoring.monitor import (
            feedback_dir,
            performance,
            predictions_dir,
            read_feedback,
            read_since,
        )

        assert policy.canary is not None
        canary, context = policy.canary, run.context
        home = self.store.settings.home
        now = self.clock()
        frame = read_since(
            predictions_dir(home, acting.settings.project, canary.deployment),
            float(context["canary_start"]),
            now,
        )
        labels = read_feedback(feedback_dir(home, acting.settings.project, canary.deployment))
        live: dict[int, dict[str, Any]] = {}
        if len(frame) and len(labels):
            joined = frame.merge(labels[["request_id", "row", "label"]], on=["request_id", "row"])
            for version, group in joined.groupby("version"):
                live[int(version)] = performance(list(group["prediction"]), list(group["label"]))
        candidate = live.get(int(context["version"]), {"labelled": 0})
        if candidate.get("labelled", 0) < canary.requests:
            if now - float(context["canary_start"]) > canary.timeout:
                self._roll_back(
                    run,
                    policy,
                    acting,
                    f"the canary answered {candidate.get('labelled', 0)} labelled requests in "
                    f"{canary.timeout:g} s, not {canary.requests}",
                )
            return
        if policy.promote is None:
            self._finish(
                run,
                "promoted",
                f"canary done; {policy.model}@{context['version']} stays {policy.alias}",
                step="canary",
            )
            return
        metric = policy.promote.metric
        champion_version = context.get("champion")
        champion = live.get(int(champion_version), {}) if champion_version is not None else {}
        theirs, ours = champion.get(metric), candidate.get(metric)
        said = (
            f"live {metric}: candidate {_fmt(ours)} vs champion {_fmt(theirs)} "
            f"(margin {policy.promote.margin:g})"
        )
        if ours is None:
            self._roll_back(run, policy, acting, f"no live {metric} for the candidate; {said}")
            return
        if theirs is None:
            wins = True
        elif metric in LOWER_IS_BETTER:
            wins = ours <= theirs + policy.promote.margin
        else:
            wins = ours >= theirs - policy.promote.margin
        if wins:
            self._promote(run, policy, acting, said)
        else:
            self._roll_back(run, policy, acting, said)

    def _promote(self, run: PolicyRunRecord, policy: Policy, acting: Any, said: str) -> None:
        from treadle.registry import set_alias
        from treadle.serving import deployments as ops

        assert policy.promote is not None and policy.canary is not None
        ref = f"{policy.model}@{run.context['version']}"
        set_alias(ref, policy.promote.alias, reason=f"promoted by policy: {said}", store=acting)
        ops.set_traffic(acting, run.project_id, policy.canary.deployment, "single")
        self._finish(run, "promoted", f"{ref} is {policy.promote.alias}: {said}", step="promote")

    def _roll_back(self, run: PolicyRunRecord, policy: Policy, acting: Any, said: str) -> None:
        from treadle.serving import deployments as ops

        assert policy.canary is not None
        ops.set_traffic(acting, run.project_id, policy.canary.deployment, "single")
        self._finish(
            run, "rolled_back", f"rolled back, the champion serves alone: {said}", step="promote"
        )

    # -- bookkeeping ---------------------------------------------------------------------

    def _acting(self, record: PolicyRecord) -> Any:
        projects = {p.id: p.name for p in self.store.projects.list_projects()}
        return dataclasses.replace(
            self.store,
            settings=self.store.settings.replace(
                project=projects[record.project_id], user=record.created_by
            ),
        )

    def _go(
        self, run: PolicyRunRecord, step: str, entry: dict[str, Any], context: dict[str, Any]
    ) -> None:
        self.store.policies.update(
            run.id,
            state="running",
            step=step,
            steps=[*run.steps, entry],
            context={**run.context, **context},
            at=self.clock(),
        )

    def _finish(
        self,
        run: PolicyRunRecord,
        state: str,
        detail: str,
        *,
        step: str,
        steps: list[dict[str, Any]] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        now = self.clock()
        status = {"promoted": "done"}.get(state, state)
        entries = (steps if steps is not None else run.steps) + [_step(step, status, detail, now)]
        self.store.policies.update(
            run.id, state=state, step="done", steps=entries, context=context or run.context, at=now
        )
        self.announce(f"policy run {run.id[:8]}: {state}: {detail}")


def _step(step: str, status: str, detail: str, at: float, **extra: Any) -> dict[str, Any]:
    return {"step": step, "status": status, "detail": detail, "at": at, **extra}


def _brief(payload: dict[str, Any]) -> str:
    import json

    return json.dumps({k: payload[k] for k in list(payload)[:6]}, default=str)[:300]


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
