"""tenants.leak_policy: what a leaked key reported by a secret scanner does (revoke | notify)

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as t:
        t.add_column(sa.Column("leak_policy", sa.String(8), nullable=False, server_default="revoke"))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as t:
        t.drop_column("leak_policy")
