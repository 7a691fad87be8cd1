"""signing keys and token revocations

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 17:25:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dawms.catalog.models

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signing_key',
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('algorithm', sa.String(length=8), nullable=False),
    sa.Column('private_pem', sa.Text(), nullable=False),
    sa.Column('public_pem', sa.Text(), nullable=False),
    sa.Column('created_at', dawms.catalog.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('retired_at', dawms.catalog.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('kid')
    )
    op.create_table('token_revocation',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('revoked_at', dawms.catalog.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('jti')
    )


def downgrade() -> None:
    op.drop_table('token_revocation')
    op.drop_table('signing_key')
