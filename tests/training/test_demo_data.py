"""Synthetic demo tickets: schema, determinism, label coverage and correlations."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.schema import CANONICAL_FIELDS
from features.taxonomy import load_taxonomy, parse_taxonomy
from training.demo_data import (
    CAUSE_PROFILES,
    DEMO_FIELDS,
    HANDLING_GROUPS,
    PRIORITIES,
    generate_tickets,
    write_demo_data,
)

TEXT_COLUMNS = (
    "ticket_id",
    "title",
    "description",
    "department",
    "channel",
    "system",
    "category",
    "root_cause",
    "closure_notes",
    "handling_group",
    "priority",
)


@pytest.fixture(scope="module")
def tickets() -> pd.DataFrame:
    return generate_tickets(5_000, seed=3)


@pytest.fixture(scope="module")
def many_tickets() -> pd.DataFrame:
    return generate_tickets(20_000, seed=11)


def test_columns_follow_canonical_schema(tickets):
    assert list(tickets.columns) == list(DEMO_FIELDS)
    assert list(tickets.columns[: len(CANONICAL_FIELDS)]) == list(CANONICAL_FIELDS)
    assert list(tickets.columns[len(CANONICAL_FIELDS) :]) == [
        "handling_group",
        "priority",
    ]


@pytest.mark.parametrize("rows", [0, 300])
def test_column_dtypes(rows):
    frame = generate_tickets(rows, seed=1)
    assert len(frame) == rows
    for column in TEXT_COLUMNS:
        assert pd.api.types.is_string_dtype(frame[column]), column
    for column in ("created_at", "closed_at"):
        assert pd.api.types.is_datetime64_dtype(frame[column]), column
        assert getattr(frame[column].dtype, "tz", None) is None, column
    assert frame["escalated"].dtype == bool
    assert frame["handling_hours"].dtype == np.float64


def test_no_missing_values(tickets):
    assert not tickets.isna().any().any()
    for column in ("title", "description", "closure_notes"):
        assert (tickets[column].str.len() > 0).all(), column


def test_ticket_ids_unique_and_ordered(tickets):
    assert tickets["ticket_id"].is_unique
    assert tickets["ticket_id"].str.fullmatch(r"WO-2025-\d{7}").all()
    assert tickets["ticket_id"].iloc[0] == "WO-2025-0000001"
    assert tickets["created_at"].is_monotonic_increasing


def test_created_at_in_2025_business_hours(tickets):
    created = tickets["created_at"]
    assert created.min() >= pd.Timestamp("2025-01-01")
    assert created.max() < pd.Timestamp("2026-01-01")
    assert created.dt.month.nunique() == 12
    office_hours = created.dt.hour.between(8, 18)
    assert office_hours.mean() > 0.75
    weekend = created.dt.dayofweek >= 5
    # Weekends are 2 of 7 days but get far fewer tickets.
    assert weekend.mean() < 0.2


def test_same_seed_same_csv_bytes(tmp_path):
    first = write_demo_data(2_000, tmp_path / "first.csv", seed=5)
    second = write_demo_data(2_000, tmp_path / "second.csv", seed=5)
    assert first.read_bytes() == second.read_bytes()


def test_different_seed_different_csv(tmp_path):
    first = write_demo_data(2_000, tmp_path / "first.csv", seed=5)
    other = write_demo_data(2_000, tmp_path / "other.csv", seed=6)
    assert first.read_bytes() != other.read_bytes()


def test_csv_is_utf8_with_header(tmp_path):
    path = write_demo_data(50, tmp_path / "tickets.csv", seed=2)
    text = path.read_text(encoding="utf-8")
    assert not text.startswith("\ufeff")
    assert text.splitlines()[0] == ",".join(DEMO_FIELDS)


def test_same_seed_same_parquet_bytes(tmp_path):
    first = write_demo_data(1_000, tmp_path / "first.parquet", seed=5)
    second = write_demo_data(1_000, tmp_path / "second.parquet", seed=5)
    assert first.read_bytes() == second.read_bytes()


def test_parquet_round_trip(tmp_path):
    path = write_demo_data(500, tmp_path / "nested" / "tickets.parquet", seed=4)
    read = pd.read_parquet(path)
    expected = generate_tickets(500, seed=4)
    pd.testing.assert_frame_equal(read, expected, check_dtype=False)
    assert read["created_at"].dtype == expected["created_at"].dtype


@pytest.mark.parametrize("name", ["tickets.json", "tickets.xlsx", "tickets"])
def test_unknown_suffix_raises(tmp_path, name):
    out = tmp_path / name
    suffix = out.suffix
    with pytest.raises(ValueError, match=re.escape(repr(suffix))):
        write_demo_data(10, out)
    assert not out.exists()


@pytest.mark.parametrize("rows", [-1, 2.5, True, "10"])
def test_invalid_rows_raise(rows):
    with pytest.raises(ValueError, match="rows must be"):
        generate_tickets(rows)


def test_every_code_present_and_valid(tickets):
    taxonomy = load_taxonomy()
    cause_codes = {cause.code for cause in taxonomy.causes()}
    assert set(tickets["category"]) == set(taxonomy.category_codes)
    assert set(tickets["root_cause"]) == cause_codes


def test_root_cause_within_its_category(tickets):
    taxonomy = load_taxonomy()
    expected = tickets["root_cause"].map(lambda code: taxonomy.cause(code).category)
    assert (tickets["category"] == expected).all()


def test_label_shares_imbalanced(many_tickets):
    category_share = many_tickets["category"].value_counts(normalize=True)
    cause_share = many_tickets["root_cause"].value_counts(normalize=True)
    assert cause_share.min() >= 0.02
    assert category_share["human"] > category_share["third_party"]
    assert category_share["system"] > category_share["other"]
    assert cause_share.max() / cause_share.min() > 3


def test_handling_hours_match_timestamps(tickets):
    elapsed = (tickets["closed_at"] - tickets["created_at"]).dt.total_seconds() / 3600
    np.testing.assert_allclose(tickets["handling_hours"], elapsed, rtol=0, atol=1e-9)
    assert (tickets["closed_at"] > tickets["created_at"]).all()


def test_handling_hours_depend_on_cause(many_tickets):
    median = many_tickets.groupby("root_cause")["handling_hours"].median()
    assert median["supplier"] > 3 * median["misoperation"]
    log_hours = np.log(many_tickets["handling_hours"])
    # Log-normal: the log is roughly symmetric, the hours are right-skewed.
    assert abs(log_hours.skew()) < 0.5
    assert many_tickets["handling_hours"].skew() > 2


def test_handling_group_depends_on_cause(many_tickets):
    assert set(many_tickets["handling_group"]) <= set(HANDLING_GROUPS)
    counts = pd.crosstab(many_tickets["root_cause"], many_tickets["handling_group"])
    mode = counts.idxmax(axis=1)
    assert mode["malicious_attack"] == "安全组"
    assert mode["training"] == "服务台"
    assert mode["data_error"] == "数据库组"

    # Pearson's chi-square statistic against independence, far above its
    # degrees of freedom (50 for 11 causes and 6 groups).
    expected = (
        np.outer(counts.sum(axis=1), counts.sum(axis=0)) / counts.to_numpy().sum()
    )
    chi_square = ((counts.to_numpy() - expected) ** 2 / expected).sum()
    degrees = (counts.shape[0] - 1) * (counts.shape[1] - 1)
    assert chi_square > 20 * degrees


def test_handling_group_depends_on_system(many_tickets):
    network_share = (
        (many_tickets["handling_group"] == "网络组")
        .groupby(many_tickets["system"])
        .mean()
    )
    assert network_share["VPN"] > 2 * network_share["财务系统"]


def test_metadata_shifts_with_cause(many_tickets):
    alert = (
        (many_tickets["channel"] == "监控告警")
        .groupby(many_tickets["root_cause"])
        .mean()
    )
    assert alert["crash"] > 3 * alert["training"]
    finance = (
        (many_tickets["department"] == "财务部")
        .groupby(many_tickets["root_cause"])
        .mean()
    )
    assert finance["data_error"] > 1.5 * finance["malicious_attack"]


def test_escalated_rate_in_range(many_tickets):
    rate = many_tickets["escalated"].mean()
    assert 0.05 <= rate <= 0.40


def test_escalation_follows_cause_and_urgent_words(many_tickets):
    by_cause = many_tickets.groupby("root_cause")["escalated"].mean()
    assert by_cause["crash"] > 2 * by_cause["training"]
    text = many_tickets["title"] + many_tickets["description"]
    urgent = text.str.contains("紧急|加急|全部|大面积")
    escalated = many_tickets["escalated"]
    assert escalated[urgent].mean() > 2 * escalated[~urgent].mean()


def test_priority_follows_escalation(many_tickets):
    assert set(many_tickets["priority"]) == set(PRIORITIES)
    high = many_tickets["priority"] == "高"
    escalated = many_tickets["escalated"]
    assert high[escalated].mean() > 2 * high[~escalated].mean()
    high_by_category = high.groupby(many_tickets["category"]).mean()
    assert high_by_category["system"] > high_by_category["human"]


def test_closure_notes_name_cause(tickets):
    taxonomy = load_taxonomy()
    names = tickets["root_cause"].map(lambda code: taxonomy.cause(code).name)
    named = [name in notes for name, notes in zip(names, tickets["closure_notes"])]
    assert all(named)


def test_intake_text_omits_label_codes(tickets):
    taxonomy = load_taxonomy()
    codes = [cause.code for cause in taxonomy.causes()] + taxonomy.category_codes
    intake_text = (tickets["title"] + " " + tickets["description"]).str.lower()
    for code in codes:
        assert not intake_text.str.contains(code, regex=False).any(), code


def test_descriptions_vary(tickets):
    descriptions = tickets["description"]
    assert descriptions.nunique() > 0.9 * len(descriptions)
    per_cause = tickets.groupby("root_cause")["description"].nunique()
    assert per_cause.min() > 50


def test_descriptions_carry_variable_values(tickets):
    descriptions = tickets["description"]
    patterns = {
        "date and time": r"\d{1,2}月\d{1,2}[日号]|\d{4}-\d{2}-\d{2} \d{2}:\d{2}",
        "clock time": r"\d{1,2}[:：]\d{2}",
        "incident number": r"INC2025\d{7}",
        "ticket number": r"WO-2025-\d{7}",
        "IP address": r"\b\d{1,3}(?:\.\d{1,3}){3}\b",
        "Latin term": r"ERP|CRM|VPN|Oracle|Nginx|down|500 error",
    }
    for name, pattern in patterns.items():
        assert descriptions.str.contains(pattern).mean() > 0.01, name


def test_shared_words_across_causes(tickets):
    for word in ("超时", "无法登录", "报错"):
        causes = tickets.loc[tickets["description"].str.contains(word), "root_cause"]
        assert causes.nunique() >= 5, word


def test_typos_appear(tickets):
    assert tickets["description"].str.contains("登陆|帐号|以经|报措").any()


def test_profiles_have_enough_templates():
    for code, profile in CAUSE_PROFILES.items():
        assert len(profile.descriptions) >= 4, code
        assert len(profile.titles) >= 3, code
        assert len(profile.details) >= 4, code
        assert len(profile.findings) >= 3, code


def test_text_not_trivially_separable(many_tickets):
    """Guards against every description naming only its labelled cause's details."""
    detail_owner = {}
    for code, profile in CAUSE_PROFILES.items():
        for detail in profile.details:
            detail_owner.setdefault(detail, set()).add(code)
    pattern = "|".join(
        re.escape(detail) for detail in sorted(detail_owner, key=len, reverse=True)
    )
    found = many_tickets["description"].str.extract(f"({pattern})", expand=False)
    has_detail = found.notna()
    owners = found[has_detail].map(detail_owner)
    mismatch = [
        cause not in owner
        for cause, owner in zip(many_tickets.loc[has_detail, "root_cause"], owners)
    ]
    mismatch_share = float(np.mean(mismatch))
    assert 0.05 < mismatch_share < 0.40


def test_taxonomy_codes_drive_labels():
    taxonomy = parse_taxonomy(
        {
            "categories": [
                {
                    "code": "system",
                    "name": "系统故障",
                    "causes": [
                        {"code": "crash", "name": "系统崩溃或宕机"},
                        {
                            "code": "printer",
                            "name": "打印机故障",
                            "description": "打印机卡纸无法打印",
                        },
                    ],
                },
                {
                    "code": "facility",
                    "name": "设施",
                    "causes": [{"code": "aircon", "name": "空调故障"}],
                },
            ]
        }
    )
    frame = generate_tickets(2_000, seed=0, taxonomy=taxonomy)
    assert set(frame["root_cause"]) == {"crash", "printer", "aircon"}
    assert set(frame["category"]) == {"system", "facility"}
    printer = frame["root_cause"] == "printer"
    assert frame.loc[printer, "closure_notes"].str.contains("打印机故障").all()
    assert frame["description"].str.contains("打印机卡纸").any()


def test_empty_phrase_bank_raises(monkeypatch):
    crash = CAUSE_PROFILES["crash"]
    monkeypatch.setitem(CAUSE_PROFILES, "crash", replace(crash, details=()))
    with pytest.raises(ValueError, match="'crash' has no details"):
        generate_tickets(10)
