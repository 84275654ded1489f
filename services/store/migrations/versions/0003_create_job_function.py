"""PostgreSQL: trainforge_create_job(), a job's creation in one statement.

The team's advisory lock, the job row, its first event, the optional idempotency record and the
active-job limit check run server-side, so that a submission is one round trip (in autocommit,
the statement is its own transaction and its commit). services/store/submission.py explains the
shared/exclusive lock scheme; services/store/jobs.py calls the function.

Why a function and not one statement (a CTE): a statement sees the database as of its start,
before it waits for the lock, so its count would miss the jobs that the holders it waited for
committed. In a VOLATILE function under READ COMMITTED, every statement takes a fresh snapshot:
the count below runs after the lock is granted and sees them.

SQLite needs nothing (every transaction there is a serialised writer).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SIGNATURE = (
    "trainforge_create_job(text, boolean, integer, text[], text, text, text, text, text, "
    "integer, integer, timestamptz, text, text, text, text, integer, json)"
)

# SQLSTATE TF001: the shared lock cannot prove the limit holds, retry with the exclusive one
# (nothing was written: the statement failed). TF002: the team is at its limit; DETAIL is the
# number of unfinished jobs it had.
_CREATE = """
CREATE OR REPLACE FUNCTION trainforge_create_job(
    p_team text,
    p_exclusive boolean,
    p_max_active integer,
    p_unfinished text[],
    p_id text,
    p_kind text,
    p_name text,
    p_spec_uri text,
    p_spec_sha256 text,
    p_gpus integer,
    p_max_attempts integer,
    p_now timestamptz,
    p_schedule_id text,
    p_reason text,
    p_idempotency_key text,
    p_request_sha256 text,
    p_status_code integer,
    p_response json
) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    bound integer := current_setting('max_connections')::integer;
    -- Below max_connections the shared path can never prove the limit: go exclusive at once
    -- instead of failing a shared attempt first.
    exclusive boolean := p_exclusive OR p_max_active < bound;
    active integer;
BEGIN
    IF exclusive THEN
        PERFORM pg_advisory_xact_lock(hashtext(p_team));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(hashtext(p_team));
    END IF;
    INSERT INTO jobs (id, team, kind, name, state, spec_uri, spec_sha256, gpus, attempts,
                      max_attempts, created_at, updated_at, metrics, schedule_id)
    VALUES (p_id, p_team, p_kind, p_name, 'QUEUED', p_spec_uri, p_spec_sha256, p_gpus, 0,
            p_max_attempts, p_now, p_now, '{}'::json, p_schedule_id);
    INSERT INTO job_events (job_id, time, type, to_state, reason)
    VALUES (p_id, p_now, 'state', 'QUEUED', p_reason);
    IF p_idempotency_key IS NOT NULL THEN
        -- Before the count, as before this function existed: a retried request whose key is
        -- taken fails here (unique violation) and is replayed, even when the team is at its
        -- limit.
        INSERT INTO idempotency_keys (team, key, request_sha256, job_id, status_code, response,
                                      created_at)
        VALUES (p_team, p_idempotency_key, p_request_sha256, p_id, p_status_code, p_response,
                p_now);
    END IF;
    -- A fresh snapshot (VOLATILE, READ COMMITTED): taken after the lock was granted.
    SELECT count(*) INTO active FROM jobs WHERE team = p_team AND state = ANY (p_unfinished);
    IF NOT exclusive AND active - 1 + bound > p_max_active THEN
        RAISE EXCEPTION 'near the active-job limit of team %', p_team
            USING ERRCODE = 'TF001';
    END IF;
    IF active > p_max_active THEN
        RAISE EXCEPTION 'team % is at its active-job limit', p_team
            USING ERRCODE = 'TF002', DETAIL = (active - 1)::text;
    END IF;
    RETURN active;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {_SIGNATURE}")
