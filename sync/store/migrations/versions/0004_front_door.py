"""the front door: connect links, webhook events, reconnect-mail throttle

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 07:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'connect_links',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.String(length=200), nullable=False),
        sa.Column('provider', sa.String(length=16), nullable=True),
        sa.Column('return_to', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('state', sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_connect_links')),
    )
    with op.batch_alter_table('connect_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_connect_links_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_connect_links_state'), ['state'], unique=False)
    op.create_table(
        'webhook_events',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_events')),
    )
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_events_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_events_next_attempt_at'), ['next_attempt_at'], unique=False)
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reconnect_mailed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.drop_column('reconnect_mailed_at')
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_events_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_webhook_events_status'))
    op.drop_table('webhook_events')
    with op.batch_alter_table('connect_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_connect_links_state'))
        batch_op.drop_index(batch_op.f('ix_connect_links_user_id'))
    op.drop_table('connect_links')
