"""tenants, api_keys, audit_log

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("audience", sa.String(512), nullable=False),
        sa.Column("admin_audience", sa.String(512), nullable=False),
        sa.Column("key_prefix", sa.String(80), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("sentinel_jwk", JSONType, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("scopes", JSONType, nullable=False),
        sa.Column("prefix", sa.String(80), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_jwk", JSONType, nullable=False),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("rate_limits", JSONType),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
        sa.Column("grace_ends_at", sa.BigInteger),
        sa.Column("rolled_from", sa.String(64)),
        sa.Column("rolled_to", sa.String(64)),
        sa.Column("changed_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_api_keys_changed_at", "api_keys", ["changed_at"])
    op.create_index("ix_api_keys_tenant_created", "api_keys", ["tenant_id", "created_at", "id"])
    op.create_index("ix_api_keys_tenant_subject", "api_keys", ["tenant_id", "subject"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(64)),
        sa.Column("remote_addr", sa.String(64)),
        sa.Column("details", JSONType, nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_audit_log_tenant_id", "audit_log", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_index("ix_api_keys_changed_at", "api_keys")
    op.drop_index("ix_api_keys_tenant_subject", "api_keys")
    op.drop_index("ix_api_keys_tenant_created", "api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
