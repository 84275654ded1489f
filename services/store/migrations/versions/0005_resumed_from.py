"""A job resumed from a stopped one names it: jobs.resumed_from, unique.

``POST /v1/jobs/{id}/resume`` creates a new job that continues a cancelled or failed job's
last checkpoint (services/store/resumption.py). The unique index makes "a job is resumed at
most once" hold under concurrent requests, and finds the job that resumed a given one (the
dashboard's link back). NULLs do not collide, on either database.

No foreign key: SQLite cannot add one to an existing table without rebuilding it, and jobs are
never deleted.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("resumed_from", sa.String(length=40), nullable=True))
    op.create_index("ix_jobs_resumed_from", "jobs", ["resumed_from"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_resumed_from", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:  # SQLite: DROP COLUMN through a table copy
        batch.drop_column("resumed_from")
