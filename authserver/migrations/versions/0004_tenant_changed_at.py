"""tenants.changed_at: the reconcile loop rereads changed tenants (shard count), not only new ones

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot alter a table in place; alembic copies it there
    with op.batch_alter_table("tenants") as t:
        t.add_column(sa.Column("changed_at", sa.BigInteger, nullable=False, server_default="0"))
    # existing rows: changed when they were created (epoch ms, like api_keys.changed_at)
    op.execute("UPDATE tenants SET changed_at = created_at * 1000")


def downgrade() -> None:
    with op.batch_alter_table("tenants") as t:
        t.drop_column("changed_at")
