"""seen keys out of cursors: forget the replay check's old rows

The replay check's keys moved to storage/seen_requests.py (a `-seen` file beside a SQLite
database; `seen:`-named cursors on PostgreSQL). The rows the previous versions wrote were
only ever needed for minutes and nothing reads or prunes them now.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_PREFIXES = ("slack-signature:", "slack-event:")


def upgrade() -> None:
    cursors = sa.table("cursors", sa.column("name", sa.String))
    for prefix in _OLD_PREFIXES:
        op.execute(cursors.delete().where(cursors.c.name.startswith(prefix)))


def downgrade() -> None:
    """Nothing to restore: the keys were valid for minutes, and the window has passed."""
