"""tenants.max_live_keys and tenants.live_keys_bound: a per-tenant cap on live API keys

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot alter a table in place; alembic copies it there
    with op.batch_alter_table("tenants") as t:
        t.add_column(sa.Column("max_live_keys", sa.BigInteger, nullable=True))
        t.add_column(sa.Column("live_keys_bound", sa.BigInteger, nullable=False, server_default="0"))
    # an upper bound to start from: every API key not revoked (expired ones
    # included; the first check at the cap recounts exactly)
    op.execute("UPDATE tenants SET live_keys_bound = (SELECT count(*) FROM api_keys "
               "WHERE api_keys.tenant_id = tenants.id AND api_keys.kind = 'api' AND api_keys.revoked_at IS NULL)")


def downgrade() -> None:
    with op.batch_alter_table("tenants") as t:
        t.drop_column("live_keys_bound")
        t.drop_column("max_live_keys")
