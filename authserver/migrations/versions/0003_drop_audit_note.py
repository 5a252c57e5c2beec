"""audit_log.note: dropped, nothing ever wrote or read it

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite before 3.35 has no DROP COLUMN; alembic copies the table there
    with op.batch_alter_table("audit_log") as t:
        t.drop_column("note")


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as t:
        t.add_column(sa.Column("note", sa.Text, nullable=True))
