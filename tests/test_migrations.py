"""Alembic migrations build exactly the models' schema, on SQLite and on PostgreSQL.

``compare_metadata`` (what ``alembic revision --autogenerate`` would write) must
find no difference between the upgraded database and ``Base.metadata``; a
deliberate drift must be found (so the check itself can fail); and the chain
must go down to base and up again cleanly.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from dawms.catalog.db import Database
from dawms.catalog.migrate import downgrade, upgrade
from dawms.catalog.models import Base, Site, StorageEndpoint


def diffs(engine: Engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "compare_server_default": True})
        return compare_metadata(ctx, Base.metadata)


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_builds_exactly_the_models(db: Database) -> None:
    assert diffs(db.engine) == []
    tables = set(inspect(db.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert revision(db.engine) is not None


def test_a_schema_drift_is_detected(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_job_state"))
        conn.execute(text("ALTER TABLE site ADD COLUMN stray INTEGER"))
    found = diffs(db.engine)
    kinds = {(d[0], getattr(d[1], "name", None)) for d in found if isinstance(d, tuple)}
    assert ("add_index", "ix_job_state") in kinds
    assert any(isinstance(d, tuple) and d[0] == "remove_column" and d[3].name == "stray"
               for d in found)


def test_downgrade_to_base_then_upgrade_again(db: Database) -> None:
    head = revision(db.engine)
    downgrade(db.engine, "base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    assert revision(db.engine) is None
    upgrade(db.engine)
    assert revision(db.engine) == head
    assert diffs(db.engine) == []
    upgrade(db.engine)  # at head already: a no-op, not an error
    assert diffs(db.engine) == []


def test_upgraded_schema_is_usable(db: Database) -> None:
    """A round trip after down/up: the tables take rows (foreign keys and defaults work)."""
    downgrade(db.engine, "base")
    upgrade(db.engine)
    with db.session() as s:
        site = Site(name="X")
        s.add(site)
        s.flush()
        s.add(StorageEndpoint(name="X_DISK", site_id=site.id, url_prefix="file:///x"))
    with db.session() as s:
        ep = s.query(StorageEndpoint).one()
        assert (ep.kind, ep.site.name) == ("disk", "X")
