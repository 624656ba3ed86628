"""Drift between a training window and a new month, on the real ICT records."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pandas as pd
import pytest

from features.loading import load_tickets
from training.drift import (
    PSI_WARNING,
    categorical_drift,
    confidence_drift,
    drift_report,
    population_stability_index,
    sampling_psi,
    write_drift_page,
)
from training.train import intake_spec

METADATA = ("department", "channel", "system", "deployment", "user_reported")


@pytest.fixture(scope="module")
def ict_load(ict_path, ict_mapping):
    return load_tickets(ict_path, ict_mapping)


@pytest.fixture(scope="module")
def window(ict_load) -> pd.DataFrame:
    """The first half of 2016, a training window of 341 tickets."""
    tickets = ict_load.tickets
    months = tickets["created_at"].dt.to_period("M")
    rows = (months >= "2016-01") & (months <= "2016-06")
    return tickets[rows].reset_index(drop=True)


@pytest.fixture(scope="module")
def spec(ict_load):
    return intake_spec(ict_load.mapping)


def next_month_copy(tickets: pd.DataFrame) -> pd.DataFrame:
    """The same tickets dated into 2016-07, as if the month repeated the window."""
    copy = tickets.copy()
    copy["created_at"] = pd.Timestamp("2016-07-01") + pd.to_timedelta(
        copy["created_at"].dt.day - 1, unit="D"
    ) + pd.to_timedelta(copy["created_at"].dt.hour, unit="h")
    copy["ticket_id"] = "copy-" + copy["ticket_id"].astype(str)
    return copy


def with_department_share(tickets: pd.DataFrame, department: str, share: float) -> pd.DataFrame:
    """Move tickets of other departments to ``department`` until it has ``share``."""
    changed = tickets.copy()
    others = np.flatnonzero((changed["department"] != department).to_numpy())
    wanted = int(round(share * len(changed))) - int((changed["department"] == department).sum())
    rng = np.random.default_rng(0)
    moved = rng.choice(others, size=wanted, replace=False)
    changed.loc[moved, "department"] = department
    return changed


def test_psi_identical_counts_is_zero():
    assert population_stability_index([10, 20, 30], [10, 20, 30]) == 0.0


def test_psi_matches_hand_computation():
    # Shares after adding 0.5 to every count: reference 0.5 / 0.5, current 0.25 / 0.75.
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert population_stability_index([49.5, 49.5], [24.5, 74.5]) == pytest.approx(expected)


def test_psi_empty_bin_stays_finite():
    value = population_stability_index([100, 0], [50, 50])
    assert math.isfinite(value)
    assert value > PSI_WARNING


def test_sampling_psi_shrinks_with_sample_size():
    assert sampling_psi(11, 400, 40) == pytest.approx(10 * (1 / 400 + 1 / 40))
    assert sampling_psi(11, 4000, 400) < sampling_psi(11, 400, 40)


def test_categorical_drift_bins_from_reference():
    reference = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    current = ["a"] * 10 + ["new"] * 30
    item = categorical_drift("field", reference, current, max_categories=2)
    assert item.bins == ["a", "b", "(other)"]
    assert item.current_share[2] == pytest.approx(30 / 40)
    assert item.details["new_values"] == [{"value": "new", "current_rows": 30}]


def test_confidence_drift_reports_means():
    item = confidence_drift("confidence.category", np.full(100, 0.95), np.full(50, 0.45))
    assert item.details["reference_mean"] == pytest.approx(0.95)
    assert item.details["current_mean"] == pytest.approx(0.45)
    assert item.psi > PSI_WARNING


def test_unchanged_copy_is_not_flagged(window, spec, ict_load):
    report = drift_report(
        window, next_month_copy(window), spec, ict_load.mapping.targets.values()
    )
    assert report.flagged == []
    assert report.warning_line() is None
    for name in METADATA:
        assert report.item(name).psi == pytest.approx(0.0, abs=1e-12)
    assert report.item("tokens").psi == pytest.approx(0.0, abs=1e-12)


def test_changed_department_share_is_flagged(window, spec, caplog):
    before = float((window["department"] == "西藏").mean())
    month = with_department_share(next_month_copy(window), "西藏", 0.30)
    with caplog.at_level(logging.WARNING, logger="training.drift"):
        report = drift_report(
            window, month, spec, reference_label="2016-01..2016-06", current_label="2016-07"
        )
    department = report.item("department")
    assert before < 0.05
    assert department.psi > PSI_WARNING
    assert [item.name for item in report.flagged] == ["department"]
    line = report.warning_line()
    assert line is not None
    assert re.search(r"department \d+\.\d\d", line)
    assert "2016-01..2016-06 and 2016-07" in line
    assert any("department" in r.getMessage() for r in caplog.records)


def test_label_shift_is_measured(window, spec, ict_load):
    month = next_month_copy(window)
    human = month.index[month["category"] == "human"]
    month.loc[human[: len(human) // 2], "category"] = "system"
    report = drift_report(window, month, spec, ict_load.mapping.targets.values())
    assert report.item("label.category").psi > PSI_WARNING
    assert report.item("label.priority").psi == pytest.approx(0.0, abs=1e-12)


def test_token_drift_follows_text(window, spec):
    month = next_month_copy(window)
    month["description"] = "防火墙策略变更后外网门户无法访问，负载均衡告警"
    report = drift_report(window, month, spec)
    tokens = report.item("tokens")
    assert tokens.psi > PSI_WARNING
    changed = {c["token"] for c in tokens.details["largest_changes"]}
    assert changed & {"防火墙", "负载均衡", "外网", "门户"}


def test_drift_page_embeds_plots(window, spec, ict_load, tmp_path):
    month = with_department_share(next_month_copy(window), "西藏", 0.30)
    confidence = {"category": (np.full(len(window), 0.9), np.full(len(month), 0.6))}
    report = drift_report(
        window, month, spec, ict_load.mapping.targets.values(), confidence,
        reference_label="2016-01..2016-06", current_label="2016-07",
        confidence_model="the champion (ict)",
    )
    page, plots = write_drift_page(report, tmp_path / "drift")
    text = page.read_text(encoding="utf-8")
    names = {p.name for p in plots}
    assert names == {
        "drift_psi.png", "drift_metadata.png", "drift_tokens.png",
        "drift_label.png", "drift_confidence.png",
    }
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("data:image/png;base64,") == len(plots)
    assert "PSI above 0.2" in text
    assert "<tr class='above'><td>department</td>" in text
    assert "the champion (ict)" in text
