"""The feedback store on SQLite and on the local PostgreSQL: writes, idempotency,
acceptance counts, schema upgrades, the scored-ticket log and durability under kill -9."""

from __future__ import annotations

import os
import signal
import sys
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from serving.feedback import (
    MIGRATIONS_DIR,
    FeedbackConflict,
    FeedbackEntry,
    FeedbackStore,
    ScoredTicketLog,
    create_store_engine,
    normalize_url,
    utc_now,
)

REPO = Path(__file__).resolve().parents[2]

POSTGRES_ADMIN_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


def _postgres_admin() -> str | None:
    """The first admin URL that connects and may create databases, else None."""
    import psycopg

    for url in POSTGRES_ADMIN_URLS:
        try:
            with psycopg.connect(url, connect_timeout=3) as connection:
                row = connection.execute(
                    "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
        except psycopg.OperationalError:
            continue
        if row and row[0]:
            return url
    return None


@pytest.fixture(scope="module")
def postgres_admin() -> str:
    url = _postgres_admin()
    if url is None:
        pytest.skip(
            "PostgreSQL at 127.0.0.1:5432 is unreachable or no role there may create "
            "databases; tried " + ", ".join(POSTGRES_ADMIN_URLS)
        )
    return url


@pytest.fixture
def postgres_url(postgres_admin):
    """A fresh database for one test, dropped afterwards."""
    import psycopg

    name = f"triage_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield postgres_admin.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    opened = FeedbackStore(store_url)
    yield opened
    opened.close()


def entry(request_id: str = "req-1", **overrides) -> FeedbackEntry:
    values = {
        "request_id": request_id,
        "ticket_id": "T-1",
        "model_name": "triage",
        "model_version": "3",
        "operator_id": "op-7",
        "suggested": {"category": "system", "root_cause": "crash", "escalation": False},
        "chosen": {"category": "system", "root_cause": "crash", "escalation": False},
        "score_request_id": "score-1",
    }
    values.update(overrides)
    return FeedbackEntry(**values)


# Writes and idempotency ---------------------------------------------------------


def test_store_records_and_reads_entry(store):
    recorded = store.record_feedback(entry())
    rows = store.feedback_rows()

    assert recorded.duplicate is False
    assert recorded.accepted is True
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == recorded.feedback_id
    assert row["ticket_id"] == "T-1"
    assert row["model_version"] == "3"
    assert row["chosen_root_cause"] == "crash"
    assert row["chosen_escalation"] is False
    assert row["score_request_id"] == "score-1"


def test_store_repeat_request_id_recorded_once(store):
    first = store.record_feedback(entry())
    second = store.record_feedback(entry())

    assert second.duplicate is True
    assert second.feedback_id == first.feedback_id
    assert second.recorded_at == first.recorded_at
    assert len(store.feedback_rows()) == 1


def test_store_rejects_reused_request_id(store):
    store.record_feedback(entry())
    changed = entry(chosen={"category": "human"})

    with pytest.raises(FeedbackConflict, match="request id 'req-1' was already used"):
        store.record_feedback(changed)
    assert len(store.feedback_rows()) == 1


def test_store_concurrent_repeats_make_one_row(store):
    results = []
    errors = []

    def post() -> None:
        try:
            results.append(store.record_feedback(entry("req-race")))
        except (FeedbackConflict, SQLAlchemyError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len({r.feedback_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert len(store.feedback_rows()) == 1


def test_entry_accepted_only_when_all_chosen_match():
    assert entry().accepted is True
    assert entry(chosen={"category": "system"}).accepted is True
    assert entry(chosen={"category": "human"}).accepted is False
    assert (
        entry(chosen={"category": "system", "root_cause": "performance"}).accepted
        is False
    )
    assert entry(chosen={"category": "system", "escalation": True}).accepted is False
    assert entry(chosen={}).accepted is False


def test_feedback_rows_filter_by_model(store):
    store.record_feedback(entry("a"))
    store.record_feedback(entry("b", model_name="other-model"))

    assert [r["request_id"] for r in store.feedback_rows("triage")] == ["a"]
    assert len(store.feedback_rows()) == 2


# Acceptance counts --------------------------------------------------------------


def test_stats_count_per_category_and_period(store):
    store.record_feedback(entry("a"))
    store.record_feedback(entry("b", chosen={"category": "human"}))
    store.record_feedback(
        entry("c", suggested={"category": "human"}, chosen={"category": "human"})
    )
    store.record_feedback(entry("d", model_version="4", chosen={"category": "other"}))
    now = utc_now()

    stats = store.feedback_stats(now - timedelta(hours=1), now + timedelta(hours=1))
    assert stats["total"] == 4
    assert stats["accepted"] == 2
    assert stats["acceptance_rate"] == pytest.approx(0.5)
    by_category = {g["category"]: g for g in stats["by_category"]}
    assert by_category["system"]["total"] == 3
    assert by_category["system"]["accepted"] == 1
    assert by_category["system"]["acceptance_rate"] == pytest.approx(1 / 3)
    assert by_category["human"]["acceptance_rate"] == pytest.approx(1.0)

    version_3 = store.feedback_stats(
        now - timedelta(hours=1), now + timedelta(hours=1), model_version="3"
    )
    assert version_3["total"] == 3

    earlier = store.feedback_stats(now - timedelta(days=2), now - timedelta(days=1))
    assert earlier["total"] == 0
    assert earlier["acceptance_rate"] is None
    assert earlier["by_category"] == []


# Schema versions ----------------------------------------------------------------


def _upgrade_to(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    engine = create_store_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def test_store_upgrades_older_schema(store_url):
    """A database written by the first release, before the scored-ticket log existed,
    opens in this release with its rows kept."""
    _upgrade_to(store_url, "0001")
    engine = create_store_engine(store_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO feedback (request_id, ticket_id, model_name, operator_id, "
                "chosen_category, accepted, recorded_at) VALUES "
                "('old-1', 'T-old', 'triage', 'op-1', 'human', false, :at)"
            ),
            {"at": datetime(2024, 5, 1, 8, 0)},
        )
        tables_before = set(inspect(connection).get_table_names())
    engine.dispose()
    assert "scored_tickets" not in tables_before

    store = FeedbackStore(store_url)
    try:
        assert store.revision == "0002"
        rows = store.feedback_rows()
        assert [r["request_id"] for r in rows] == ["old-1"]
        assert rows[0]["chosen_category"] == "human"
        store.record_scored([_scored_row("s-1")])
        assert len(store.scored_rows()) == 1
    finally:
        store.close()


def test_store_reopens_at_same_revision(store_url):
    first = FeedbackStore(store_url)
    first.record_feedback(entry())
    first.close()

    second = FeedbackStore(store_url)
    try:
        assert second.revision == "0002"
        assert len(second.feedback_rows()) == 1
    finally:
        second.close()


def test_store_without_create_rejects_missing_file(tmp_path):
    missing = tmp_path / "nowhere.db"

    with pytest.raises(FileNotFoundError, match="feedback database .* not found"):
        FeedbackStore(f"sqlite:///{missing}", create=False)
    assert not missing.exists()


def test_bare_postgresql_url_uses_psycopg():
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_store_uses_wal_and_full_sync(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        with store.engine.connect() as connection:
            journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
    finally:
        store.close()
    assert journal == "wal"
    assert synchronous == 2  # FULL


# Scored-ticket log --------------------------------------------------------------


def _scored_row(request_id: str) -> dict:
    from serving.feedback import scored_ticket_row

    return scored_ticket_row(
        {"ticket_id": "T-9", "title": "标题", "description": "ERP无法登录"},
        {
            "request_id": request_id,
            "category": {"code": "system", "probability": 0.8},
            "root_causes": [{"code": "crash", "probability": 0.6}],
            "escalation": {"probability": 0.3, "threshold": 0.5, "flag": False},
            "needs_review": False,
            "model": {"name": "triage", "version": "3"},
        },
        latency_ms=4.5,
        store_text=False,
    )


def test_scored_log_writes_queued_rows(store):
    import time

    log = ScoredTicketLog(store, store_text=False, batch_size=7)
    ticket = {"ticket_id": "T-9", "title": "t", "description": "ERP无法登录"}
    answer = {
        "request_id": "r",
        "category": {"code": "human", "probability": 0.7},
        "model": {"name": "triage", "version": "3"},
    }
    for _ in range(25):
        log.record(ticket, answer, time.perf_counter())
    assert log.flush(timeout=30)
    log.close()

    rows = store.scored_rows()
    assert log.written == 25
    assert log.dropped == 0
    assert len(rows) == 25
    assert rows[0]["category"] == "human"
    assert rows[0]["model_version"] == "3"
    assert rows[0]["latency_ms"] >= 0
    assert rows[0]["description"] is None
    assert rows[0]["answer"]["category"]["code"] == "human"


def test_scored_log_keeps_text_when_allowed(store):
    import time

    log = ScoredTicketLog(store, store_text=True)
    log.record(
        {"ticket_id": "T-9", "title": "标题", "description": "ERP无法登录"},
        {"request_id": "r", "model": {}},
        time.perf_counter(),
    )
    assert log.flush(timeout=30)
    log.close()

    row = store.scored_rows()[0]
    assert row["description"] == "ERP无法登录"
    assert row["title"] == "标题"


def test_scored_log_counts_rows_it_cannot_write(tmp_path):
    import time

    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    log = ScoredTicketLog(store)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE scored_tickets")
    log.record(
        {"ticket_id": "T"}, {"request_id": "r", "model": {}}, time.perf_counter()
    )
    assert log.flush(timeout=30)
    log.close()
    store.close()

    assert log.dropped == 1
    assert log.written == 0


def test_scored_log_drops_rows_beyond_limit(store):
    import time

    # The long gather keeps the writer from taking rows before the limit is hit.
    log = ScoredTicketLog(store, max_queued=3, gather_seconds=30)
    for index in range(5):
        log.record({"ticket_id": f"T-{index}"}, {"request_id": "r"}, time.perf_counter())
    assert log.dropped == 2
    log.close()

    assert log.written == 3
    assert sorted(row["ticket_id"] for row in store.scored_rows()) == [
        "T-0",
        "T-1",
        "T-2",
    ]


def test_scored_log_close_writes_without_waiting(store):
    import time

    log = ScoredTicketLog(store, gather_seconds=30)
    for index in range(4):
        log.record({"ticket_id": f"T-{index}"}, {"request_id": "r"}, time.perf_counter())
    started = time.monotonic()
    log.close()

    assert time.monotonic() - started < 10
    assert log.written == 4
    assert len(store.scored_rows()) == 4


def test_scored_log_keeps_rows_from_many_threads(store):
    import time

    log = ScoredTicketLog(store, batch_size=50, gather_seconds=0.01)

    def record_many(thread: int) -> None:
        for index in range(250):
            log.record(
                {"ticket_id": f"T-{thread}-{index}"},
                {"request_id": "r"},
                time.perf_counter(),
            )
            if index % 50 == 0:
                time.sleep(0.02)  # let the writer take rows while others arrive

    threads = [threading.Thread(target=record_many, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.flush(timeout=60)
    log.close()

    assert log.dropped == 0
    assert log.written == 1000
    ids = {row["ticket_id"] for row in store.scored_rows(limit=2000)}
    assert len(ids) == 1000


def test_dump_json_writes_what_json_has_no_type_for():
    import json

    import numpy as np

    from serving.feedback import dump_json

    value = {
        "probability": np.float32(0.25),
        "count": np.int64(3),
        "flag": np.bool_(True),
        "missing": float("nan"),
        "at": datetime(2025, 3, 12, 10, 30),
        "text": "数据库宕机",
        1: "integer key",
    }
    written = dump_json(value)

    assert "数据库宕机" in written
    assert json.loads(written) == {
        "probability": 0.25,
        "count": 3,
        "flag": True,
        "missing": None,
        "at": "2025-03-12 10:30:00",
        "text": "数据库宕机",
        "1": "integer key",
    }


def test_dump_json_falls_back_for_huge_integers():
    import json

    from serving.feedback import dump_json

    assert json.loads(dump_json({"big": 2**70})) == {"big": 2**70}


# Durability ---------------------------------------------------------------------


def feedback_body(index: int) -> dict:
    return {
        "request_id": f"kill-{index}",
        "ticket_id": f"T-{index}",
        "model": {"name": "demo-test", "version": "1"},
        "suggested": {"category": "system", "root_cause": "crash"},
        "chosen": {"category": "human" if index % 2 else "system"},
        "operator_id": "op-1",
    }


def test_killed_server_keeps_acknowledged_feedback(
    store_url, demo_bundle, start_server
):
    """Every feedback entry answered 200 is in the store after kill -9 of the server
    that answered it, on SQLite and on PostgreSQL."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRIAGE_BUNDLE_DIR": str(demo_bundle),
        "TRIAGE_FEEDBACK_DB_URL": store_url,
        "TRIAGE_POLL_SECONDS": "0",
        "TRIAGE_API_KEYS": "",
        "TRIAGE_ADMIN_KEYS": "",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ]
    acknowledged = []
    for index in range(4):
        server = start_server(command, env)
        server.wait_ready()
        response = httpx.post(
            f"{server.base}/v1/feedback", json=feedback_body(index), timeout=30
        )
        if response.status_code == 200:
            os.kill(server.process.pid, signal.SIGKILL)
            acknowledged.append(response.json()["feedback_id"])
        server.process.wait(timeout=30)
        assert response.status_code == 200, response.text
        assert server.process.returncode == -signal.SIGKILL

    store = FeedbackStore(store_url)
    try:
        rows = store.feedback_rows()
    finally:
        store.close()
    assert sorted(r["id"] for r in rows) == sorted(acknowledged)
    assert sorted(r["request_id"] for r in rows) == [f"kill-{i}" for i in range(4)]
