"""The feedback store: operators' accepted and corrected labels, and the scored-ticket log.

Both tables live in one SQL database reached through SQLAlchemy: a SQLite file by
default, PostgreSQL by URL. The schema is versioned with Alembic (revisions under
``serving/migrations``); opening a store upgrades an older database to the newest
revision, so a newer release reads the rows an older one wrote.

Every write commits before its method returns. On SQLite the store runs in WAL mode
with ``synchronous=FULL``, so a committed row survives a killed process and a power
cut alike.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
LABEL_NAMES = ("category", "root_cause", "escalation")

# Key of the PostgreSQL advisory lock that serialises schema upgrades, so that
# replicas starting together do not run the same migration twice.
MIGRATION_LOCK_KEY = 7_361_402_115


class Base(DeclarativeBase):
    pass


class FeedbackRow(Base):
    """One operator decision on one suggestion."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("request_id", name="uq_feedback_request_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200))
    ticket_id: Mapped[str] = mapped_column(String(200), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(50))
    score_request_id: Mapped[str | None] = mapped_column(String(200))
    operator_id: Mapped[str] = mapped_column(String(200))
    suggested_category: Mapped[str | None] = mapped_column(String(100))
    suggested_root_cause: Mapped[str | None] = mapped_column(String(200))
    suggested_escalation: Mapped[bool | None] = mapped_column(Boolean)
    chosen_category: Mapped[str | None] = mapped_column(String(100))
    chosen_root_cause: Mapped[str | None] = mapped_column(String(200))
    chosen_escalation: Mapped[bool | None] = mapped_column(Boolean)
    accepted: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class ScoredTicketRow(Base):
    """One answer of ``POST /v1/score``: what the model suggested and how fast."""

    __tablename__ = "scored_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(200), index=True)
    ticket_id: Mapped[str | None] = mapped_column(String(200), index=True)
    scored_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    model_name: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(50))
    category: Mapped[str | None] = mapped_column(String(100))
    category_probability: Mapped[float | None] = mapped_column(Float)
    root_cause: Mapped[str | None] = mapped_column(String(200))
    escalation_probability: Mapped[float | None] = mapped_column(Float)
    needs_review: Mapped[bool | None] = mapped_column(Boolean)
    latency_ms: Mapped[float] = mapped_column(Float)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    title: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)


class FeedbackConflict(ValueError):
    """A request id was used before for a different feedback entry."""


@dataclass(frozen=True)
class FeedbackEntry:
    """A feedback entry as the API receives it; labels are keyed by target name."""

    request_id: str
    ticket_id: str
    model_name: str
    model_version: str | None
    operator_id: str
    suggested: Mapping[str, Any]
    chosen: Mapping[str, Any]
    score_request_id: str | None = None

    @property
    def accepted(self) -> bool:
        """True when every chosen label equals the suggested one."""
        chosen = {k: v for k, v in self.chosen.items() if v is not None}
        return bool(chosen) and all(
            self.suggested.get(k) == v for k, v in chosen.items()
        )

    def columns(self) -> dict[str, Any]:
        values = {
            "request_id": self.request_id,
            "ticket_id": self.ticket_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "score_request_id": self.score_request_id,
            "operator_id": self.operator_id,
            "accepted": self.accepted,
        }
        for name in LABEL_NAMES:
            values[f"suggested_{name}"] = self.suggested.get(name)
            values[f"chosen_{name}"] = self.chosen.get(name)
        return values


@dataclass(frozen=True)
class RecordedFeedback:
    feedback_id: int
    accepted: bool
    recorded_at: datetime
    duplicate: bool


def utc_now() -> datetime:
    """The current UTC time without tzinfo, as every timestamp column stores it."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_utc(moment: datetime) -> datetime:
    """Convert an aware time to naive UTC; a naive time is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for bare ``postgresql://`` URLs.

    SQLAlchemy's default PostgreSQL driver is psycopg2, which this project does not
    install.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# Values orjson would write in its own way are handed to _json_default instead,
# so that they are written as text, as json.dumps(default=str) writes them.
_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars hold a Python number
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return str(value)


def dump_json(value: Any) -> str:
    """JSON for the store's JSON columns: compact, Chinese text kept as it is.

    Values that JSON has no type for are written as text, and numpy scalars as
    numbers. NaN and infinities are written as null, because PostgreSQL's JSON
    types reject them.
    """
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        # orjson rejects integers beyond 64 bits and nesting deeper than 254
        # levels. NOTE: json.dumps writes NaN in such a value as NaN, not null.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def create_store_engine(url: str) -> Engine:
    """Create an engine; SQLite connections get WAL, full sync and real transactions."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, json_serializer=dump_json)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        json_serializer=dump_json,
    )

    # pysqlite opens transactions lazily and never around DDL; this recipe from the
    # SQLAlchemy SQLite dialect docs hands transaction control to SQLAlchemy.
    # BEGIN IMMEDIATE takes the write lock up front, so a read-then-insert cannot
    # fail with SQLITE_BUSY halfway when another process writes.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def upgrade_schema(engine: Engine) -> str | None:
    """Create or upgrade the schema to the newest revision; return that revision."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return MigrationContext.configure(connection).get_current_revision()


class FeedbackStore:
    """Feedback and scored tickets in one database; safe to share between threads."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        exists = bool(parsed.database) and Path(parsed.database or "").is_file()
        if not create and is_sqlite and not exists:
            raise FileNotFoundError(
                f"feedback database {parsed.database!r} not found; expected the "
                "SQLite file the service writes (setting TRIAGE_FEEDBACK_DB_URL)"
            )
        self.engine = create_store_engine(self.url)
        self.revision = upgrade_schema(self.engine)
        logger.info(
            "feedback store %s at schema revision %s",
            parsed.render_as_string(hide_password=True),
            self.revision,
        )

    def close(self) -> None:
        self.engine.dispose()

    # Feedback ----------------------------------------------------------------

    def record_feedback(self, entry: FeedbackEntry) -> RecordedFeedback:
        """Insert one entry and commit; a repeated request id returns the first row.

        Raises FeedbackConflict when the request id was used for a different entry.
        """
        values = {**entry.columns(), "recorded_at": utc_now()}
        try:
            with self.engine.begin() as connection:
                new_id = connection.execute(
                    insert(FeedbackRow).values(**values).returning(FeedbackRow.id)
                ).scalar_one()
            return RecordedFeedback(
                new_id, entry.accepted, values["recorded_at"], False
            )
        except IntegrityError:
            existing = self._feedback_by_request(entry.request_id)
            if existing is None:
                raise
        if not _same_entry(existing, entry):
            raise FeedbackConflict(
                f"request id {entry.request_id!r} was already used for feedback on "
                f"ticket {existing.ticket_id!r} with other labels; send a new request "
                "id for a new entry"
            )
        return RecordedFeedback(
            existing.id, existing.accepted, existing.recorded_at, True
        )

    def _feedback_by_request(self, request_id: str) -> FeedbackRow | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(FeedbackRow.__table__).where(
                    FeedbackRow.request_id == request_id
                )
            ).first()
        return FeedbackRow(**row._asdict()) if row is not None else None

    def feedback_rows(self, model_name: str | None = None) -> list[dict[str, Any]]:
        """Return every feedback row, oldest first, optionally for one model name."""
        query = select(FeedbackRow.__table__).order_by(
            FeedbackRow.recorded_at, FeedbackRow.id
        )
        if model_name is not None:
            query = query.where(FeedbackRow.model_name == model_name)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def feedback_stats(
        self,
        since: datetime,
        until: datetime,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> dict[str, Any]:
        """Count feedback and accepted suggestions in ``[since, until)``, overall and
        per suggested category."""
        accepted = func.sum(case((FeedbackRow.accepted, 1), else_=0))
        query = (
            select(FeedbackRow.suggested_category, func.count(), accepted)
            .where(FeedbackRow.recorded_at >= as_utc(since))
            .where(FeedbackRow.recorded_at < as_utc(until))
            .group_by(FeedbackRow.suggested_category)
            .order_by(FeedbackRow.suggested_category)
        )
        if model_name is not None:
            query = query.where(FeedbackRow.model_name == model_name)
        if model_version is not None:
            query = query.where(FeedbackRow.model_version == model_version)
        with self.engine.connect() as connection:
            groups = connection.execute(query).all()
        by_category = [
            _rate(category, int(total), int(accepted_count or 0))
            for category, total, accepted_count in groups
        ]
        total = sum(g["total"] for g in by_category)
        accepted_total = sum(g["accepted"] for g in by_category)
        overall = _rate(None, total, accepted_total)
        return {
            "total": total,
            "accepted": accepted_total,
            "acceptance_rate": overall["acceptance_rate"],
            "by_category": by_category,
        }

    # Scored tickets ----------------------------------------------------------

    def record_scored(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert scored-ticket rows in one transaction; return how many."""
        rows = list(rows)
        if rows:
            # A Core insert of the table: the ORM's bulk insert costs about a
            # fifth more per row and adds nothing for rows that are never read back.
            with self.engine.begin() as connection:
                connection.execute(insert(ScoredTicketRow.__table__), rows)
        return len(rows)

    def scored_rows(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Return the newest scored-ticket rows, newest first."""
        query = (
            select(ScoredTicketRow.__table__)
            .order_by(ScoredTicketRow.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]


def _same_entry(row: FeedbackRow, entry: FeedbackEntry) -> bool:
    stored = {name: getattr(row, name) for name in entry.columns()}
    return stored == entry.columns()


def _rate(category: str | None, total: int, accepted: int) -> dict[str, Any]:
    return {
        "category": category,
        "total": total,
        "accepted": accepted,
        "acceptance_rate": accepted / total if total else None,
    }


# Keys of a scoring response that the taxonomy derives from the codes beside
# them. The scored-ticket log leaves them out, so rows stay small and cheap to write.
TAXONOMY_TEXT_KEYS = frozenset({"name", "measures"})


def compact_answer(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a scoring response without the taxonomy's names and measures.

    They are dropped one level down (from ``category``, each alternative and
    each root cause), which is where the scorer puts them. Deeper values are
    kept as they are, and :func:`dump_json` writes values JSON has no type
    for as text.
    """

    def strip(part: Any) -> Any:
        if isinstance(part, Mapping):
            return {k: v for k, v in part.items() if k not in TAXONOMY_TEXT_KEYS}
        return part

    compact: dict[str, Any] = {}
    for key, value in answer.items():
        if isinstance(value, list):
            compact[key] = [strip(item) for item in value]
        else:
            compact[key] = strip(value)
    return compact


def scored_ticket_row(
    ticket: Mapping[str, Any],
    response: Mapping[str, Any],
    latency_ms: float,
    store_text: bool,
    scored_at: datetime | None = None,
) -> dict[str, Any]:
    """Build a scored-ticket row from a request's ticket fields and the answer sent."""
    category = response.get("category") or {}
    causes = response.get("root_causes") or []
    escalation = response.get("escalation") or {}
    model = response.get("model") or {}
    return {
        "request_id": response.get("request_id") or "",
        "ticket_id": ticket.get("ticket_id"),
        "scored_at": scored_at or utc_now(),
        "model_name": model.get("name"),
        "model_version": model.get("version"),
        "category": category.get("code"),
        "category_probability": category.get("probability"),
        "root_cause": causes[0]["code"] if causes else None,
        "escalation_probability": escalation.get("probability"),
        "needs_review": response.get("needs_review"),
        "latency_ms": latency_ms,
        "answer": compact_answer(response),
        "title": ticket.get("title") if store_text else None,
        "description": ticket.get("description") if store_text else None,
    }


class ScoredTicketLog:
    """Writes scored-ticket rows from a background thread, in batches.

    Scoring never waits for the database: ``record`` only appends the row to a
    deque, and wakes the writer only when it is waiting for a first row. When
    ``max_queued`` rows wait (the database is down or too slow) further rows
    are dropped and counted, because a scored-ticket log must not slow down or
    fail the scoring API.
    """

    def __init__(
        self,
        store: FeedbackStore,
        store_text: bool = False,
        max_queued: int = 10_000,
        batch_size: int = 500,
        gather_seconds: float = 0.2,
    ) -> None:
        self.store = store
        self.store_text = store_text
        self.max_queued = max_queued
        self.batch_size = batch_size
        self.gather_seconds = gather_seconds
        self.dropped = 0
        self.written = 0
        # deque.append and popleft are atomic, so record() takes no lock.
        self._rows: deque[tuple] = deque()
        self._has_rows = threading.Event()
        self._stopping = threading.Event()
        self._writing = False
        # record() runs on the event loop and on scoring threads, the writer on its own.
        self._count_lock = threading.Lock()
        self._last_warning = 0.0
        self._thread = threading.Thread(
            target=self._run, name="scored-ticket-log", daemon=True
        )
        self._thread.start()

    def record(
        self, ticket: Mapping[str, Any], response: Mapping[str, Any], started: float
    ) -> None:
        """Queue one scoring response; ``started`` is the ``time.perf_counter()`` at request start.

        The row is built on the writer thread, so the request pays only for the
        append. ``ticket`` and ``response`` must not change afterwards.
        """
        latency_ms = (time.perf_counter() - started) * 1000.0
        if len(self._rows) >= self.max_queued:
            self._count_dropped(1)
            self._warn_throttled(
                "scored-ticket log queue is full; %d rows dropped so far"
            )
            return
        self._rows.append((ticket, response, latency_ms, utc_now()))
        if not self._has_rows.is_set():
            self._has_rows.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is written or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        # The writer sets _writing before it takes rows and clears it after they
        # are written, so no row is between the deque and the database here.
        while self._rows or self._writing:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._stopping.set()
        self._has_rows.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "scored-ticket log stopped with %d rows unwritten", len(self._rows)
            )

    def _run(self) -> None:
        while True:
            self._has_rows.wait()
            # Gather rows for a while, so that a busy service commits a few
            # times a second, not once per request.
            self._stopping.wait(self.gather_seconds)
            self._has_rows.clear()
            # A row appended after the clear sets the event again, so it is
            # written now or in the next round.
            self._write_queued()
            if self._stopping.is_set() and not self._rows:
                return

    def _write_queued(self) -> None:
        """Write the queued rows in transactions of up to ``batch_size`` rows."""
        self._writing = True
        try:
            while self._rows:
                batch = []
                while self._rows and len(batch) < self.batch_size:
                    batch.append(self._rows.popleft())
                self._write(batch)
        finally:
            self._writing = False

    def _write(self, batch: list[tuple]) -> None:
        try:
            rows = [
                scored_ticket_row(ticket, response, latency_ms, self.store_text, scored_at)
                for ticket, response, latency_ms, scored_at in batch
            ]
            self.written += self.store.record_scored(rows)
        except Exception:
            # The log is best effort: a failed batch is counted and logged, and the
            # thread goes on with the next one.
            self._count_dropped(len(batch))
            logger.exception("writing %d scored-ticket rows failed", len(batch))

    def _count_dropped(self, rows: int) -> None:
        with self._count_lock:
            self.dropped += rows

    def _warn_throttled(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            logger.warning(message, self.dropped)


__all__ = [
    "FeedbackConflict",
    "FeedbackEntry",
    "FeedbackRow",
    "FeedbackStore",
    "RecordedFeedback",
    "ScoredTicketLog",
    "ScoredTicketRow",
    "as_utc",
    "normalize_url",
    "scored_ticket_row",
    "upgrade_schema",
    "utc_now",
]
