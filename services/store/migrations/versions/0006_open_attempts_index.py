"""An index of the attempts whose run has not been seen to end.

The dispatcher polls those every loop (services/store/dispatch.py ``in_flight``), SUCCEEDED
jobs included: a job reports its own success before its run exits. Without this index that
query reads every SUCCEEDED job the store ever held; with it, only the open attempts (a
handful), whatever the history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: Both databases take a partial index (PostgreSQL and SQLite's WHERE clause alike).
OPEN = sa.text("finished_at IS NULL AND handle IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_job_attempts_open", "job_attempts", ["job_id", "number"],
                    postgresql_where=OPEN, sqlite_where=OPEN)


def downgrade() -> None:
    op.drop_index("ix_job_attempts_open", table_name="job_attempts")
