"""subject_limits: rate limits shared by every API key of one subject

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subject_limits",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subject", sa.String(256), primary_key=True),
        sa.Column("rate_limits", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("changed_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_subject_limits_changed_at", "subject_limits", ["changed_at"])


def downgrade() -> None:
    op.drop_index("ix_subject_limits_changed_at", table_name="subject_limits")
    op.drop_table("subject_limits")
