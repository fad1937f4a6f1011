"""The database schema as SQLAlchemy Core tables: the one declaration migrations must match.

A test compares a database migrated to head with this metadata (Alembic autogenerate shows no
diff), so a change here needs a new revision under ``migrations/versions``. States and enums are
plain strings (no database enums), so adding a state needs no migration. Times are stored in UTC
(``UTCDateTime``); SQLite keeps them naive, PostgreSQL as ``timestamptz``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every dialect."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


ID = sa.String(32)
STATE = sa.String(16)
NAME = sa.String(128)
# A 64-bit counter on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

pipelines = sa.Table(
    "pipelines",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("path", sa.Text, nullable=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("spec_hash", sa.String(128), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("pipeline", NAME, nullable=False),
    sa.Column("state", STATE, nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("triggered_by_kind", sa.String(32), nullable=False),
    sa.Column("triggered_by_detail", sa.Text, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("max_instances", sa.Integer, nullable=True),
    sa.Column("pipeline_path", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("parent_run_id", ID, nullable=True),
    sa.Column("schedule_id", NAME, nullable=True),
    sa.Column("route", sa.Text, nullable=True),
    # Run ownership (revision 0002): the process driving a running run holds a lease it renews;
    # another process adopts the run only once the lease has expired.
    sa.Column("owner", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    # The spec's executor from creation (NULL: the server's default, filled in by the claim).
    sa.Column("executor", sa.String(32), nullable=True),
    # Fencing (revision 0003): bumped whenever the run gets a new owner; writes made on behalf of
    # a leased run carry the generation they were given and fail once it moved on.
    sa.Column("lease_generation", sa.Integer, nullable=False, server_default="0"),
    sa.Index(None, "pipeline", "id"),
    sa.Index(None, "state", "id"),
    # The fair claim ranks queued runs per pipeline from this index alone (covering: no row reads).
    sa.Index(None, "state", "pipeline", "id", "max_instances", "executor"),
    # The queue alone (revision 0010): the claim's probes read no drained run, whatever the planner's
    # statistics say (right after a bulk submission they say every run is queued).
    sa.Index("ix_runs_queued", "pipeline", "id", postgresql_where=sa.text("state = 'queued'"),
             sqlite_where=sa.text("state = 'queued'")),
    # Covers the dashboard's counts over a window of created_at (revision 0008): no row is read.
    sa.Index(None, "created_at", "state", "pipeline", "started_at", "finished_at"),
)

# A run row as the store reads it: the spec as the text it is stored as, not decoded. The runs of a
# pipeline version share that text, and ``rows.spec_from_json`` validates each text once per
# process: decoding a ~2 KB spec per run read (a claim, a run's end) was most of reading the row.
RUN_ROW = (*(c for c in runs.c if c.name != "spec"), sa.cast(runs.c.spec, sa.Text).label("spec"))

stage_runs = sa.Table(
    "stage_runs",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("stage_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("state", STATE, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("retry_at", UTCDateTime, nullable=True),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("stage_id", sa.String(64), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("executor", sa.String(32), nullable=False),
    sa.Column("state", STATE, nullable=False),
    sa.Column("handle", sa.JSON, nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("failure", sa.String(32), nullable=True),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.ForeignKeyConstraint(
        ["run_id", "stage_id"],
        ["stage_runs.run_id", "stage_runs.stage_id"],
        name="fk_attempts_stage_runs",
        ondelete="CASCADE",
    ),
    sa.UniqueConstraint("run_id", "stage_id", "number"),
    sa.Index(None, "state"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", EVENT_ID, primary_key=True, autoincrement=True),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("entity", sa.String(16), nullable=False),
    sa.Column("entity_id", sa.String(64), nullable=False),
    sa.Column("from_state", STATE, nullable=True),
    sa.Column("to_state", STATE, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index(None, "run_id", "id"),
)

secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# One row per cron/interval fire: the primary key makes each fire happen once across replicas.
schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("schedule_key", sa.String(255), primary_key=True),
    sa.Column("fire_time", UTCDateTime, primary_key=True),
    sa.Column("run_id", ID, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "fire_time"),  # the newest fire of any schedule (the System page's scheduler lag)
)

# Schedule state kept across restarts and replicas: the enable/disable override of the API
# (NULL follows the spec) and when the scheduler first saw the schedule (no fires before it).
schedule_states = sa.Table(
    "schedule_states",
    metadata,
    sa.Column("schedule_key", sa.String(255), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=True),
    sa.Column("since", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Accepted webhook deliveries, kept for the replay window: replay protection and the
# per-trigger rate limit hold across replicas because they live here.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("hook_key", sa.String(255), primary_key=True),
    sa.Column("delivery_id", sa.String(255), primary_key=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Index(None, "hook_key", "received_at"),
)

# Git sync: the commit every replica serves for a repository (agreed here, not per replica).
git_syncs = sa.Table(
    "git_syncs",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("url", sa.Text, nullable=False),  # credentials removed before it is stored
    sa.Column("branch", sa.String(255), nullable=False),
    sa.Column("good_commit", sa.String(64), nullable=True),  # the commit whose pipelines are served
    sa.Column("seen_commit", sa.String(64), nullable=True),  # the branch head at the last sync
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("problems", sa.JSON, nullable=False),
    sa.Column("synced_at", UTCDateTime, nullable=True),  # when good_commit was last changed
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Notifications: an outbox of deliveries. The unique key makes producing them idempotent across
# replicas (each event of a run to each target once); delivery is claimed row by row.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("key", sa.String(255), nullable=False, unique=True),  # run/event/target
    sa.Column("run_id", ID, nullable=False, index=True),
    sa.Column("pipeline", NAME, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("target", sa.Text, nullable=False),  # never a secret value
    sa.Column("spec", sa.JSON, nullable=False),  # the NotificationSpec (secrets by name only)
    sa.Column("message", sa.JSON, nullable=False),
    sa.Column("state", STATE, nullable=False),  # pending | sending | sent | failed | suppressed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Index("ix_notifications_state_next_at", "state", "next_at"),
    sa.Index("ix_notifications_pipeline_target_created_at", "pipeline", "target", "created_at"),
)

# The index of attempt logs kept in an object store (``logs.objects``): one row per uploaded
# chunk, with its byte and line offsets in the attempt's log, so a reader on any replica lists
# and fetches exactly the chunks after its cursor.
log_chunks = sa.Table(
    "log_chunks",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("stage_id", NAME, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("object_key", sa.String(1024), nullable=False),
    sa.Column("byte_start", sa.BigInteger, nullable=False),
    sa.Column("byte_count", sa.BigInteger, nullable=False),
    sa.Column("line_start", sa.BigInteger, nullable=False),
    sa.Column("line_count", sa.Integer, nullable=False),
    sa.Column("first_at", UTCDateTime, nullable=False),
    sa.Column("last_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# One row per attempt log being written to an object store: whether its lines wait on the
# writing replica's disk because the store does not answer (readers on any replica say so).
log_streams = sa.Table(
    "log_streams",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("stage_id", NAME, primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("writer", sa.String(255), nullable=False),
    sa.Column("delayed_since", UTCDateTime, nullable=True),
    sa.Column("delay_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Access control (revision 0007) ---------------------------------------------------------------
# Secrets that prove identity (API tokens, session ids, invitation links, OAuth states) are
# stored only as SHA-256 digests; passwords as argon2id hashes.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("username", NAME, nullable=False, unique=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("role", STATE, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("must_change_password", sa.Boolean, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("provider", sa.String(64), nullable=True),
    sa.Column("subject", sa.String(255), nullable=True),
    sa.Column("failed_logins", sa.Integer, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_login_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("provider", "subject"),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("target", sa.String(160), primary_key=True),
    sa.Column("role", STATE, nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False),
    sa.Column("kind", STATE, nullable=False),
    sa.Column("role", STATE, nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("scope", sa.JSON, nullable=True),
    sa.Column("created_by", NAME, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Index(None, "user_id"),
)

invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", STATE, nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("created_by", NAME, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime, nullable=True),
    sa.Column("used_by", NAME, nullable=True),
)

join_requests = sa.Table(
    "join_requests",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("username", NAME, nullable=False),
    sa.Column("state", STATE, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("decided_at", UTCDateTime, nullable=True),
    sa.Column("decided_by", NAME, nullable=True),
    sa.UniqueConstraint("provider", "subject"),
)

oauth_states = sa.Table(
    "oauth_states",
    metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("code_verifier", sa.String(128), nullable=False),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("invitation", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", EVENT_ID, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("outcome", sa.Integer, nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Index(None, "at"),
    sa.Index(None, "actor", "id"),
    sa.Index(None, "action", "id"),
)
