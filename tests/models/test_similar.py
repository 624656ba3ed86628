"""The closed-ticket index: search, recurrence rule, files and table recurrences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.bundle import BundleError, read_manifest, write_manifest
from models.similar import (
    INDEX_FILES,
    RECURRENCE_THRESHOLD,
    SimilarIndex,
    build_index,
    find_recurrences,
    load_index,
    text_terms,
)

TEXT_FIELDS = ("title", "description")
METADATA_FIELDS = ("department", "system")

CLOSED = [
    # ticket_id, created, closed, system, description, root cause, notes
    (
        "A-1",
        "2025-03-01 09:00",
        "2025-03-01 12:00",
        "ERP",
        "2025年3月1日9:30 ERP数据库表空间满，凭证无法保存",
        "数据库表空间满",
        "扩容表空间后恢复",
    ),
    (
        "A-2",
        "2025-03-02 10:00",
        "2025-03-02 11:00",
        "OA",
        "OA系统登录页面打不开，提示连接超时",
        "网络配置不合理",
        "调整负载均衡配置",
    ),
    (
        "A-3",
        "2025-03-05 14:00",
        "2025-03-06 08:00",
        "ERP",
        "ERP报表导出很慢，数据库cpu负载高",
        "sql语句不合理",
        "优化报表sql",
    ),
    (
        "A-4",
        "2025-03-07 08:00",
        "2025-03-07 09:00",
        "邮件",
        "邮件系统无法发送外部邮件，退信",
        "运营商网络问题",
        "运营商修复线路",
    ),
    (
        "A-5",
        "2025-02-01 08:00",
        None,
        "ERP",
        "ERP数据库表空间满，凭证无法保存",
        "数据库表空间满",
        "",
    ),
]


def closed_tickets() -> pd.DataFrame:
    rows = [
        {
            "ticket_id": tid,
            "created_at": pd.Timestamp(created),
            "closed_at": pd.Timestamp(closed) if closed else pd.NaT,
            "title": "",
            "description": text,
            "department": "财务部",
            "channel": "电话",
            "system": system,
            "root_cause": cause,
            "category": "system",
            "handling_hours": 1.5,
            "closure_notes": notes,
        }
        for tid, created, closed, system, text, cause, notes in CLOSED
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def index() -> SimilarIndex:
    return build_index(closed_tickets(), TEXT_FIELDS, METADATA_FIELDS)


def copy_of(original: str, **changes) -> dict:
    tickets = closed_tickets()
    record = tickets[tickets["ticket_id"] == original].iloc[0].to_dict()
    return {**record, **changes}


def test_index_keeps_only_closed_tickets(index):
    assert len(index) == 4
    ids = {index.table.ticket_id[i] for i in range(len(index))}
    assert "A-5" not in ids


def test_copy_with_new_date_and_id_finds_original(index):
    ticket = copy_of(
        "A-1",
        ticket_id="NEW-1",
        created_at=pd.Timestamp("2025-03-20 08:00"),
        description="2025年3月20日8:10 ERP数据库表空间满，凭证无法保存",
    )
    [found] = index.search([ticket], k=3)
    assert found.neighbours[0].ticket_id == "A-1"
    assert found.neighbours[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert found.neighbours[0].root_cause == "数据库表空间满"
    assert found.neighbours[0].notes == "扩容表空间后恢复"
    assert found.neighbours[0].description == CLOSED[0][4]
    assert found.recurrence is not None
    assert found.recurrence.ticket_id == "A-1"
    assert found.recurrence.days_since_closed == pytest.approx(18.833, abs=1e-3)


def test_recurrence_needs_same_system(index):
    ticket = copy_of(
        "A-1", ticket_id="NEW-2", system="CRM", created_at=pd.Timestamp("2025-03-03")
    )
    [found] = index.search([ticket], k=3)
    assert found.neighbours[0].ticket_id == "A-1"
    assert found.recurrence is None


def test_recurrence_ends_after_window(index):
    late = copy_of(
        "A-1", ticket_id="NEW-3", created_at=pd.Timestamp("2025-04-05 12:00")
    )
    [found] = index.search([late], k=3)
    assert found.neighbours[0].ticket_id == "A-1"
    assert found.recurrence is None
    [wider] = index.search([late], k=3, window_days=40)
    assert wider.recurrence is not None
    assert wider.recurrence.ticket_id == "A-1"


def test_recurrence_ignores_later_tickets(index):
    """A ticket cannot repeat one that was registered after it."""
    early = copy_of("A-3", ticket_id="NEW-4", created_at=pd.Timestamp("2025-03-04"))
    [found] = index.search([early], k=3)
    assert found.neighbours[0].ticket_id == "A-3"
    assert found.recurrence is None


def test_recurrence_needs_threshold(index):
    ticket = {
        "ticket_id": "NEW-5",
        "created_at": pd.Timestamp("2025-03-03"),
        "description": "ERP数据库表空间满，另外打印机卡纸，显示器闪烁，键盘失灵",
        "department": "财务部",
        "system": "ERP",
    }
    [found] = index.search([ticket], k=3)
    assert found.neighbours[0].ticket_id == "A-1"
    assert found.neighbours[0].similarity < RECURRENCE_THRESHOLD
    assert found.recurrence is None


def test_missing_created_at_means_now(index):
    ticket = copy_of("A-2", ticket_id="NEW-6", created_at=None)
    [found] = index.search(
        [ticket], k=1, now=pd.Timestamp("2025-03-10").to_pydatetime()
    )
    assert found.recurrence is not None
    assert found.recurrence.ticket_id == "A-2"
    [later] = index.search(
        [ticket], k=1, now=pd.Timestamp("2025-06-10").to_pydatetime()
    )
    assert later.recurrence is None


def test_query_skips_its_own_ticket(index):
    [found] = index.search([copy_of("A-1", ticket_id="A-1")], k=4)
    assert "A-1" not in [t.ticket_id for t in found.neighbours]


def test_unknown_words_lower_similarity(index):
    base = copy_of("A-4", ticket_id="NEW-7")
    noisy = dict(base, description=base["description"] + "，另有闪烁嗡鸣卡顿蓝屏")
    [plain, extended] = index.search([base, noisy], k=1)
    assert plain.neighbours[0].ticket_id == "A-4"
    assert extended.neighbours[0].ticket_id == "A-4"
    assert extended.neighbours[0].similarity < plain.neighbours[0].similarity - 0.05


def test_ticket_without_shared_terms_has_no_neighbours(index):
    [found] = index.search([{"description": "", "system": None}], k=3)
    assert found.neighbours == []
    assert found.recurrence is None


def test_terms_leave_out_placeholders():
    terms = text_terms(["<doc>", "<date>", "<time>", "数据库", "<ip>", "表空间"])
    assert terms == ["数据库", "表空间"]


def test_k_larger_than_candidates(index):
    [found] = index.search([copy_of("A-2", ticket_id="X")], k=50)
    similarities = [t.similarity for t in found.neighbours]
    assert similarities == sorted(similarities, reverse=True)
    assert len(found.neighbours) <= len(index)


def test_ties_prefer_the_latest_closed():
    tickets = pd.concat([closed_tickets().iloc[:1]] * 2, ignore_index=True)
    tickets.loc[1, "ticket_id"] = "A-1-later"
    tickets.loc[1, "closed_at"] = pd.Timestamp("2025-03-10")
    index = build_index(tickets, TEXT_FIELDS, METADATA_FIELDS)
    [found] = index.search([copy_of("A-1", ticket_id="Q")], k=2)
    assert [t.ticket_id for t in found.neighbours] == ["A-1-later", "A-1"]


def test_negative_k_is_rejected(index):
    with pytest.raises(ValueError, match="k must be zero or more"):
        index.search_terms([["数据库"]], -1, [0], [None])


def test_index_keeps_newest_beyond_limit():
    index = build_index(closed_tickets(), TEXT_FIELDS, METADATA_FIELDS, max_tickets=2)
    ids = [index.table.ticket_id[i] for i in range(len(index))]
    assert ids == ["A-3", "A-4"]


def test_saved_index_loads_without_pickle(index, tmp_path):
    entry = index.save(tmp_path)
    assert sorted(entry["files"]) == sorted(INDEX_FILES)
    for name in INDEX_FILES:
        with np.load(tmp_path / name, allow_pickle=False) as arrays:
            assert all(arrays[key].dtype != object for key in arrays.files)
    loaded = load_index(tmp_path, {"similar": entry})
    ticket = copy_of("A-3", ticket_id="NEW-8", created_at=pd.Timestamp("2025-03-08"))
    [before] = index.search([ticket], k=4)
    [after] = loaded.search([ticket], k=4)
    assert after.neighbours == before.neighbours
    assert after.recurrence == before.recurrence


def test_bundle_without_index_loads_none(tmp_path):
    assert load_index(tmp_path, {"targets": []}) is None


def test_unknown_index_format_is_rejected(index, tmp_path):
    entry = index.save(tmp_path)
    with pytest.raises(ValueError, match="format 99.*retrain"):
        SimilarIndex.load(tmp_path, {**entry, "format": 99})


def test_manifest_hashes_cover_index_files(index, tmp_path):
    entry = index.save(tmp_path)
    manifest = write_manifest(tmp_path, {"similar": entry})
    for name in INDEX_FILES:
        assert name in manifest["files"]
    path = tmp_path / INDEX_FILES[2]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="changed after export"):
        read_manifest(tmp_path)


def test_find_recurrences_applies_the_same_rule():
    tickets = closed_tickets().iloc[:4].copy()
    repeat = tickets.iloc[[0]].assign(
        ticket_id="A-6",
        created_at=pd.Timestamp("2025-03-15"),
        closed_at=pd.Timestamp("2025-03-15 10:00"),
        description="3月15日 ERP数据库表空间满，凭证无法保存",
    )
    late = repeat.assign(
        ticket_id="A-7", created_at=pd.Timestamp("2025-06-01"), closed_at=pd.NaT
    )
    other_system = repeat.assign(ticket_id="A-8", system="OA")
    table = pd.concat([tickets, repeat, late, other_system], ignore_index=True)
    pairs = find_recurrences(table)
    assert list(pairs["repeat_id"]) == ["A-6"]
    assert list(pairs["first_id"]) == ["A-1"]
    assert pairs["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)


def test_find_recurrences_counts_simultaneous_copies_once():
    """Two records of one fault created at the same time must not repeat each other."""
    tickets = closed_tickets().iloc[:1]
    twin = tickets.assign(ticket_id="A-1-twin")
    pairs = find_recurrences(pd.concat([tickets, twin], ignore_index=True))
    assert list(pairs["repeat_id"]) == ["A-1-twin"]
    assert list(pairs["first_id"]) == ["A-1"]


def test_find_recurrences_on_empty_table():
    pairs = find_recurrences(closed_tickets().iloc[:0])
    assert pairs.empty
    assert list(pairs.columns) == [
        "first_id",
        "repeat_id",
        "system",
        "days_apart",
        "similarity",
    ]


def test_demo_bundle_ships_index(demo_bundle):
    manifest = json.loads(
        Path(demo_bundle, "manifest.json").read_text(encoding="utf-8")
    )
    entry = manifest["similar"]
    assert entry["tickets"] > 0
    for name in entry["files"]:
        assert name in manifest["files"]
