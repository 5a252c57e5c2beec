"""portal_sign_ins: one-time consumer portal sign-in links (only a hash of each token)

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_sign_ins",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("policy", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("return_url", sa.String(2048), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("used_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_portal_sign_ins_expires", "portal_sign_ins", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_portal_sign_ins_expires", "portal_sign_ins")
    op.drop_table("portal_sign_ins")
