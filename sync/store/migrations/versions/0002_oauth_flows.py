"""oauth flows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 05:22:06.116560

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('oauth_flows',
    sa.Column('state', sa.String(length=512), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('flow', sa.LargeBinary(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('state', name=op.f('pk_oauth_flows'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('oauth_flows')
