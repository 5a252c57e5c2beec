"""api_keys credits: remaining, refill amount and interval, last refill

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = (("credits_remaining", sa.BigInteger), ("credits_refill_amount", sa.BigInteger),
           ("credits_refill_interval", sa.String(8)), ("credits_refilled_at", sa.BigInteger))


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as t:
        for name, type_ in COLUMNS:
            t.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as t:
        for name, _ in COLUMNS:
            t.drop_column(name)
