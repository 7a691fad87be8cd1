"""Alembic environment: run migrations on the engine ``catalog.migrate`` passes in."""

from __future__ import annotations

from alembic import context

from dawms.catalog.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
