"""JWKS shards and pre-publication: tenants.shard_count, api_keys.shard, api_keys.published_at

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as t:
        t.add_column(sa.Column("shard_count", sa.Integer, nullable=False, server_default="1"))
    with op.batch_alter_table("api_keys") as k:
        k.add_column(sa.Column("shard", sa.Integer, nullable=True))
        k.add_column(sa.Column("published_at", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as k:
        k.drop_column("published_at")
        k.drop_column("shard")
    with op.batch_alter_table("tenants") as t:
        t.drop_column("shard_count")
