"""copy identity (person × channel × address), per-attempt outbox, placement generations

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 02:20:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('placements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('address', sa.String(length=320), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('generation', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('in_doubt', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('attempt_revision', sa.Integer(), nullable=False, server_default='0'))
        batch_op.drop_constraint('uq_placements_session_id', type_='unique')
    # An emailed copy is identified by the address it went to.
    op.execute("UPDATE placements SET address = lower(recipient_email) WHERE channel = 'email'")
    op.execute("UPDATE placements SET attempt_revision = revision")
    with op.batch_alter_table('placements', schema=None) as batch_op:
        batch_op.alter_column('address', server_default=None)
        batch_op.alter_column('generation', server_default=None)
        batch_op.alter_column('in_doubt', server_default=None)
        batch_op.alter_column('attempt_revision', server_default=None)
        batch_op.create_unique_constraint('uq_placements_session_id', ['session_id', 'user_id', 'channel', 'address'])
        batch_op.create_index(batch_op.f('ix_placements_next_attempt_at'), ['next_attempt_at'], unique=False)

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revision', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('dtstamp', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint('uq_outbox_placement_id', type_='unique')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('revision', server_default=None)
        batch_op.create_unique_constraint('uq_outbox_placement_id', ['placement_id', 'revision', 'sequence', 'method'])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint('uq_outbox_placement_id', type_='unique')
        batch_op.create_unique_constraint('uq_outbox_placement_id', ['placement_id', 'sequence', 'method',
                                                                     'content_hash'])
        batch_op.drop_column('dtstamp')
        batch_op.drop_column('revision')
    with op.batch_alter_table('placements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_placements_next_attempt_at'))
        batch_op.drop_constraint('uq_placements_session_id', type_='unique')
        batch_op.create_unique_constraint('uq_placements_session_id', ['session_id', 'user_id', 'channel'])
        batch_op.drop_column('attempt_revision')
        batch_op.drop_column('in_doubt')
        batch_op.drop_column('generation')
        batch_op.drop_column('address')
