"""keyed timeline chains: key id and head seal per incident

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Existing incidents keep NULL in both: they were chained with plain SHA-256 and verify as
"legacy, unkeyed".
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timeline_key_id", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("timeline_seal", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+): a batch copy of `incidents` would trip the foreign
    # keys of its timeline events on a database that has incidents.
    op.drop_column("incidents", "timeline_seal")
    op.drop_column("incidents", "timeline_key_id")
