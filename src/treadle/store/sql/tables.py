"""The metadata schema, declared once with SQLAlchemy for Alembic and for readers.

Times are seconds since the epoch (float); ids are 32-character hex strings.
Queries elsewhere are plain portable SQL over these tables (see treadle.store.db).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String(32)
TIME = sa.Float(precision=53)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("project_id", "name"),
)

pipelines = sa.Table(
    "pipelines",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    # the version submitted runs execute; none set means the newest
    sa.Column("current_version_id", ID, nullable=True),
    sa.UniqueConstraint("project_id", "name"),
)

pipeline_versions = sa.Table(
    "pipeline_versions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("pipeline_id", ID, sa.ForeignKey("pipelines.id"), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("pipeline_id", "hash"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("experiment_id", ID, sa.ForeignKey("experiments.id"), nullable=False),
    sa.Column("pipeline_version_id", ID, sa.ForeignKey("pipeline_versions.id"), nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("executor", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("started_at", TIME, nullable=True),
    sa.Column("ended_at", TIME, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("heartbeat_at", TIME, nullable=True),
    # why the run happened: {"kind": "manual" | "schedule" | "webhook" | ..., ...}
    sa.Column("cause", sa.Text, nullable=True),
    # newest first is a backward walk of this index, ties broken by id, with no sort
    sa.Index(None, "project_id", "created_at", "id"),
    sa.Index(None, "experiment_id"),
    # the trigger dispatcher asks for runs that ended since its last look
    sa.Index(None, "ended_at"),
)

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("node", sa.String(300), nullable=False),
    sa.Column("step_name", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("cache_key", sa.String(64), nullable=True),
    sa.Column("cached_from", ID, nullable=True),
    sa.Column("started_at", TIME, nullable=False),
    sa.Column("ended_at", TIME, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("log_uri", sa.Text, nullable=True),
    sa.Index(None, "run_id"),
    sa.Index(None, "project_id", "cache_key"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("run_id", ID, nullable=True),
    sa.Column("producer_step_run_id", ID, nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("materializer", sa.String(32), nullable=False),
    sa.Column("python_type", sa.String(300), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Index(None, "sha256"),
    sa.Index(None, "run_id"),
    sa.Index(None, "project_id", "created_at"),
)

lineage = sa.Table(
    "lineage",
    metadata,
    sa.Column("artifact_id", ID, sa.ForeignKey("artifacts.id"), primary_key=True),
    sa.Column("step_run_id", ID, sa.ForeignKey("step_runs.id"), primary_key=True),
    sa.Column("direction", sa.String(8), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Index(None, "step_run_id"),
)

params = sa.Table(
    "params",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(250), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("step_run_id", ID, nullable=True),
)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("step_run_id", ID, nullable=True),
    sa.Column("key", sa.String(250), nullable=False),
    sa.Column("value", sa.Float(precision=53), nullable=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", TIME, nullable=False),
    sa.Index(None, "run_id", "key", "step"),
)

# Model registry: models, their numbered versions, movable aliases and the aliases' history.

registered_models = sa.Table(
    "registered_models",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("project_id", "name"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("model_id", ID, sa.ForeignKey("registered_models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("flavor", sa.String(64), nullable=False),
    sa.Column("manifest_sha", sa.String(64), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id"), nullable=True),
    # Not a foreign key, like metrics.step_run_id, so registering from inside a step does
    # not depend on when its worker writes the step run's row.
    sa.Column("step_run_id", ID, nullable=True),
    sa.Column("trusted", sa.Boolean, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("model_id", "version"),
    sa.Index(None, "run_id"),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("model_id", ID, sa.ForeignKey("registered_models.id"), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("version_id", ID, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("updated_at", TIME, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.PrimaryKeyConstraint("model_id", "alias"),
    sa.Index(None, "version_id"),
)

alias_events = sa.Table(
    "alias_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("model_id", ID, sa.ForeignKey("registered_models.id"), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=True),
    # The record calls these `at` and `by`; BY is an SQL keyword, so the columns do not.
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index(None, "model_id", "alias"),
)

# Deployments: a named serving of one model, and its numbered revisions (what it serves).

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("model_id", ID, sa.ForeignKey("registered_models.id"), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("project_id", "name"),
    sa.Index(None, "model_id"),
)

deployment_revisions = sa.Table(
    "deployment_revisions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("deployment_id", ID, sa.ForeignKey("deployments.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("targets", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.UniqueConstraint("deployment_id", "number"),
)


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("expires_at", TIME, nullable=True),
    sa.Column("revoked_at", TIME, nullable=True),
    sa.Index(None, "user_id"),
)

members = sa.Table(
    "members",
    metadata,
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Index(None, "user_id"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("project_id", ID, nullable=True),
    sa.Column("user_name", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target_type", sa.String(64), nullable=False),
    sa.Column("target_id", sa.String(300), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Index(None, "project_id", "created_at"),
)

# -- automation: schedules, triggers and the events they act on ------------------------

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("pipeline", sa.String(200), nullable=False),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("catchup", sa.String(16), nullable=False),
    sa.Column("max_catchup", sa.Integer, nullable=False),
    sa.Column("concurrency", sa.String(16), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    # due times up to here have been handled (fired or let go by the catch-up policy)
    sa.Column("handled_until", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("project_id", "name"),
)

# one row per (schedule, due time), whoever fires it: the claim two schedulers race for
schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("schedule_id", ID, sa.ForeignKey("schedules.id"), nullable=False),
    sa.Column("due_at", TIME, nullable=False),
    sa.Column("fired_at", TIME, nullable=False),
    sa.Column("run_id", ID, nullable=True),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.UniqueConstraint("schedule_id", "due_at"),
)

triggers = sa.Table(
    "triggers",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("pipeline", sa.String(200), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("filter", sa.Text, nullable=False),
    sa.Column("secret", sa.String(200), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("project_id", "name"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    # what makes the event itself unique (a run id, a delivery id), so that two
    # observers of the same change record it once
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("project_id", "kind", "key"),
    sa.Index(None, "project_id", "kind", "created_at"),
)

trigger_fires = sa.Table(
    "trigger_fires",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("trigger_id", ID, sa.ForeignKey("triggers.id"), nullable=False),
    sa.Column("event_id", ID, sa.ForeignKey("events.id"), nullable=False),
    sa.Column("fired_at", TIME, nullable=False),
    sa.Column("run_id", ID, nullable=True),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.UniqueConstraint("trigger_id", "event_id"),
)

# -- monitoring: monitors of deployments, their windows and alerts -----------------------

monitors = sa.Table(
    "monitors",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("deployment", sa.String(200), nullable=False),
    # "rows" (a window every N predictions) or "seconds" (a window every N seconds)
    sa.Column("window_kind", sa.String(16), nullable=False),
    sa.Column("window_size", sa.Integer, nullable=False),
    sa.Column("thresholds", sa.Text, nullable=False),
    sa.Column("rules", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    # predictions logged up to here are in a window
    sa.Column("cursor", TIME, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("project_id", "name"),
)

monitor_windows = sa.Table(
    "monitor_windows",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("monitor_id", ID, sa.ForeignKey("monitors.id"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("start_ts", TIME, nullable=False),
    sa.Column("end_ts", TIME, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # the window's statistics: drift, performance, service health, by model version
    sa.Column("stats", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("monitor_id", "seq"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("monitor_id", ID, sa.ForeignKey("monitors.id"), nullable=False),
    sa.Column("project_id", ID, nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("rule", sa.String(300), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("value", sa.Float(precision=53), nullable=True),
    sa.Column("fired_seq", sa.Integer, nullable=False),
    sa.Column("fired_at", TIME, nullable=False),
    sa.Column("resolved_at", TIME, nullable=True),
    sa.Column("event_id", ID, nullable=True),
    sa.Index(None, "monitor_id", "state"),
)

# -- the closed loop: policies and each time one acted ------------------------------------

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("project_id", ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("project_id", "name"),
)

policy_runs = sa.Table(
    "policy_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("policy_id", ID, sa.ForeignKey("policies.id"), nullable=False),
    sa.Column("project_id", ID, nullable=False),
    # the event it acts on, once: the claim two control planes race for
    sa.Column("event_id", ID, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("step", sa.String(32), nullable=False),
    # what it did so far: [{"step", "status", "detail", "at", ...}]
    sa.Column("steps", sa.Text, nullable=False),
    # what the current step waits on (run id, canary start, model version...)
    sa.Column("context", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("updated_at", TIME, nullable=False),
    sa.UniqueConstraint("policy_id", "event_id"),
    sa.Index(None, "state"),
)
