"""key_usage (calls per key, hour and status class, from gateways' access logs) and api_keys.last_used_at

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_usage",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("hour", sa.BigInteger, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        *(sa.Column(c, sa.BigInteger, nullable=False, server_default="0") for c in ("s2xx", "s3xx", "s4xx", "s5xx")),
    )
    op.create_index("ix_key_usage_tenant_hour", "key_usage", ["tenant_id", "hour"])
    with op.batch_alter_table("api_keys") as t:
        t.add_column(sa.Column("last_used_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as t:
        t.drop_column("last_used_at")
    op.drop_index("ix_key_usage_tenant_hour", "key_usage")
    op.drop_table("key_usage")
