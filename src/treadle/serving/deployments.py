"""Deployments: a named service of a registered model, with a traffic policy, that
follows aliases and keeps every change as a numbered revision.

The spec says what to serve: `primary` (an alias or a version number), a policy —
`single`, `canary` (a `candidate` takes `canary_weight` of the requests) or `shadow`
(the `candidate` sees copies and never answers) — and `pinned`, set by a rollback so
the deployment stays where it was put until told to follow again. Syncing resolves the
spec against the registry and records a new revision when the versions changed.
"""

from __future__ import annotations

from typing import Any

from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.registry.refs import ModelRef, resolve
from treadle.serving.traffic import TargetSpec, check_split
from treadle.store import Store
from treadle.store.records import DeploymentRecord, DeploymentRevisionRecord

POLICIES = ("single", "canary", "shadow")


def make_spec(
    ref: ModelRef,
    *,
    policy: str = "single",
    candidate: str | None = None,
    canary_weight: float = 0.1,
    port: int | None = None,
) -> dict[str, Any]:
    """`port`: where `treadle up` runs the deployment's server (None: it does not)."""
    if port is not None and not 0 < port < 65536:
        raise InvalidInputError(f"port {port} is not a TCP port", "use 1024-65535")
    if policy not in POLICIES:
        raise InvalidInputError(f"unknown policy {policy!r}", f"use one of {', '.join(POLICIES)}")
    if policy != "single" and not candidate:
        raise InvalidInputError(f"a {policy} deployment needs a candidate alias or version")
    if policy == "canary" and not 0 < canary_weight < 1:
        raise InvalidInputError(
            f"canary share must be between 0% and 100%, got {canary_weight * 100:g}%"
        )
    primary: str | int | None = ref.alias or ref.version
    return {
        "model": ref.name,
        "primary": primary if primary is not None else "latest",
        "policy": policy,
        "candidate": candidate,
        "canary_weight": canary_weight if policy == "canary" else 0.0,
        "pinned": False,
        "port": port,
    }


def _selector(model: str, selector: Any) -> ModelRef:
    text = str(selector)
    if text == "latest":
        return ModelRef(model)
    return ModelRef(model, version=int(text)) if text.isdigit() else ModelRef(model, alias=text)


def resolve_targets(store: Store, project_id: str, spec: dict[str, Any]) -> list[TargetSpec]:
    """The versions the spec names right now."""
    _, primary = resolve(store, project_id, _selector(spec["model"], spec["primary"]))
    policy = spec.get("policy", "single")
    if policy == "single":
        return [TargetSpec(primary.id, primary.version, "primary", 1.0)]
    _, candidate = resolve(store, project_id, _selector(spec["model"], spec["candidate"]))
    if policy == "canary":
        share = float(spec["canary_weight"])
        if candidate.id == primary.id:
            return [TargetSpec(primary.id, primary.version, "primary", 1.0)]
        return [
            TargetSpec(primary.id, primary.version, "primary", round(1 - share, 6)),
            TargetSpec(candidate.id, candidate.version, "canary", share),
        ]
    targets = [TargetSpec(primary.id, primary.version, "primary", 1.0)]
    if candidate.id != primary.id:
        targets.append(TargetSpec(candidate.id, candidate.version, "shadow", 0.0))
    return targets


def targets_of(revision: DeploymentRevisionRecord | None) -> list[TargetSpec]:
    return [TargetSpec.from_dict(t) for t in revision.targets] if revision else []


def _describe(targets: list[TargetSpec]) -> str:
    return ", ".join(
        f"v{t.version} {t.role}" + (f" {t.weight * 100:g}%" if t.role == "canary" else "")
        for t in targets
    )


def sync(
    store: Store, project_id: str, deployment: DeploymentRecord, reason: str | None = None
) -> DeploymentRevisionRecord:
    """Record a new revision if what the spec resolves to differs from the current one."""
    current = store.deployments.current_revision(deployment.id)
    if deployment.spec.get("pinned") and current is not None:
        return current
    targets = resolve_targets(store, project_id, deployment.spec)
    check_split(targets)
    if current is not None and targets_of(current) == targets:
        return current
    why = reason or (
        f"{deployment.spec['model']}@{deployment.spec['primary']} now resolves to "
        f"{_describe(targets)}"
    )
    return store.deployments.add_revision(
        deployment.id, [t.to_dict() for t in targets], reason=why, user=store.settings.user
    )


def deploy(
    store: Store, project_id: str, name: str, spec: dict[str, Any]
) -> tuple[DeploymentRecord, DeploymentRevisionRecord]:
    """Create the deployment, or change the spec of an existing one, and sync it."""
    model = store.models.get_model(project_id, spec["model"])
    resolve_targets(store, project_id, spec)  # refuse a spec that names nothing
    existing: DeploymentRecord | None
    try:
        existing = store.deployments.get_deployment(project_id, name)
    except NotFoundError:
        existing = None
    if existing is None:
        deployment = store.deployments.create_deployment(
            project_id, name, model.id, spec, store.settings.user
        )
        reason = f"created: {spec['policy']} {spec['model']}@{spec['primary']}"
    else:
        if existing.model_id != model.id:
            raise ConflictError(
                f"deployment {name!r} serves another model",
                "choose another name, or deploy that model under this one",
            )
        if spec.get("port") is None:  # a new policy keeps the deployment where it listens
            spec = {**spec, "port": existing.spec.get("port")}
        deployment = store.deployments.update_spec(existing.id, spec)
        reason = f"policy now {spec['policy']}" + (
            f" with {spec['candidate']}" if spec.get("candidate") else ""
        )
    return deployment, sync(store, project_id, deployment, reason)


def set_traffic(
    store: Store,
    project_id: str,
    name: str,
    policy: str,
    *,
    candidate: str | None = None,
    canary_weight: float = 0.1,
) -> tuple[DeploymentRecord, DeploymentRevisionRecord]:
    """Switch a deployment to `single`, `canary` (the candidate takes `canary_weight` of
    the requests) or `shadow` (the candidate sees copies), keeping what it follows and
    where it listens. It follows its aliases again if a rollback had pinned it."""
    current = store.deployments.get_deployment(project_id, name)
    spec = make_spec(
        _selector(current.spec["model"], current.spec["primary"]),
        policy=policy,
        candidate=candidate if policy != "single" else None,
        canary_weight=canary_weight,
    )
    return deploy(store, project_id, name, spec)


def rollback(store: Store, project_id: str, name: str) -> DeploymentRevisionRecord:
    """Go back to the versions of the revision before the current one, and pin there
    (the deployment stops following aliases until `follow` or a new `deploy`). Rolling
    back again goes further back."""
    deployment = store.deployments.get_deployment(project_id, name)
    revisions = store.deployments.list_revisions(deployment.id)
    if not revisions:
        raise ConflictError(f"deployment {name!r} has no revision yet")
    current = targets_of(revisions[-1])
    anchor = deployment.spec.get("rolled_back_to") if deployment.spec.get("pinned") else None
    earlier = revisions[:-1] if anchor is None else [r for r in revisions if r.number < anchor]
    previous = next((r for r in reversed(earlier) if targets_of(r) != current), None)
    if previous is None:
        raise ConflictError(
            f"deployment {name!r} has no earlier revision to roll back to",
            "see its history with `treadle deployments show NAME`",
        )
    store.deployments.update_spec(
        deployment.id, {**deployment.spec, "pinned": True, "rolled_back_to": previous.number}
    )
    return store.deployments.add_revision(
        deployment.id,
        previous.targets,
        reason=f"rollback to revision {previous.number} ({_describe(targets_of(previous))})",
        user=store.settings.user,
    )


def follow(store: Store, project_id: str, name: str) -> DeploymentRevisionRecord:
    """Unpin a deployment: it follows its aliases again."""
    deployment = store.deployments.get_deployment(project_id, name)
    spec = {k: v for k, v in deployment.spec.items() if k != "rolled_back_to"}
    deployment = store.deployments.update_spec(deployment.id, {**spec, "pinned": False})
    return sync(store, project_id, deployment, "following aliases again")
