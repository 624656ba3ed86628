"""Alembic environment of the feedback store.

``serving.feedback.upgrade_schema`` runs the migrations on a connection that is
already inside a transaction (and, on PostgreSQL, holds an advisory lock), passed
in ``config.attributes["connection"]``. Without one, the database URL comes from
the ``sqlalchemy.url`` option or the ``TRIAGE_FEEDBACK_DB_URL`` environment variable,
so ``alembic revision`` and ``alembic upgrade`` also work from the command line.
"""

from __future__ import annotations

import os

from alembic import context

from serving.feedback import Base, create_store_engine

config = context.config
target_metadata = Base.metadata


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get(
        "TRIAGE_FEEDBACK_DB_URL", "sqlite:///triage-feedback.db"
    )
    engine = create_store_engine(url)
    with engine.begin() as connection:
        run_migrations(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit(
        "the feedback store has no offline (--sql) migrations; run them online"
    )
run_online()
