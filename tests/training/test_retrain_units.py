"""Month split, data fingerprint, feedback hold-out and the model card of a retrain."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from features.loading import load_tickets
from training.feedback import merge_feedback_rows
from training.gate import GateDecision, compare_classifier
from training.model_card import CardFacts, build_model_card
from training.retrain import (
    STATUS_PROMOTED,
    STATUS_REJECTED,
    STATUS_SKIPPED,
    RetrainResult,
    data_fingerprint,
    hold_out_feedback,
    split_months,
    summary_lines,
)


@pytest.fixture(scope="module")
def ict_load(ict_path, ict_mapping):
    return load_tickets(ict_path, ict_mapping)


def test_split_takes_newest_month_and_window(ict_load):
    tickets = ict_load.tickets
    split = split_months(tickets, window_months=6)
    months = tickets["created_at"].dt.to_period("M")
    assert str(split.month) == "2017-12"
    assert split.window_label == "2017-06..2017-11"
    assert split.newest.sum() == (months == "2017-12").sum()
    assert split.window.sum() == ((months >= "2017-06") & (months <= "2017-11")).sum()
    assert not (split.window & split.newest).any()


def test_split_at_given_month_leaves_later_out(ict_load):
    tickets = ict_load.tickets
    split = split_months(tickets, window_months=6, month="2016-08")
    months = tickets["created_at"].dt.to_period("M")
    assert str(split.month) == "2016-08"
    assert split.window_label == "2016-02..2016-07"
    assert split.newest.sum() == (months == "2016-08").sum()
    assert not ((split.window | split.newest) & (months > "2016-08").to_numpy()).any()


@pytest.mark.parametrize(
    ("month", "message"),
    [
        ("2016-8", r"invalid month '2016-8'; expected YYYY-MM"),
        ("2019-01", r"no tickets created in the evaluation month 2019-01; the data spans 2016-01"),
    ],
)
def test_split_rejects_bad_month(ict_load, month, message):
    with pytest.raises(ValueError, match=message):
        split_months(ict_load.tickets, window_months=6, month=month)


def test_split_without_window_tickets_raises(ict_load):
    tickets = ict_load.tickets
    months = tickets["created_at"].dt.to_period("M")
    gap = tickets[(months == "2016-01") | (months == "2016-06")].reset_index(drop=True)
    with pytest.raises(ValueError, match=r"no tickets in the training window 2016-04\.\.2016-05"):
        split_months(gap, window_months=2)


def test_split_rejects_empty_window_length(ict_load):
    with pytest.raises(ValueError, match="at least 1 month, got 0"):
        split_months(ict_load.tickets, window_months=0)


def test_fingerprint_ignores_row_order(ict_load):
    tickets = ict_load.tickets
    shuffled = tickets.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert data_fingerprint(shuffled) == data_fingerprint(tickets)


def test_fingerprint_changes_with_a_label(ict_load):
    changed = ict_load.tickets.copy()
    changed.loc[0, "category"] = "third_party" if changed.loc[0, "category"] != "third_party" else "human"
    assert data_fingerprint(changed) != data_fingerprint(ict_load.tickets)


def feedback_row(row_id: int, ticket_id: str, model_name: str, category: str) -> dict:
    return {
        "id": row_id,
        "ticket_id": ticket_id,
        "recorded_at": datetime(2018, 1, 2, tzinfo=timezone.utc),
        "model_name": model_name,
        "model_version": "1",
        "chosen_category": category,
        "chosen_root_cause": None,
        "chosen_escalation": None,
    }


def test_feedback_only_month_labels_are_held_out(ict_load):
    """Regression: month rows labelled only by feedback on this model reached training."""
    tickets = ict_load.tickets.copy()
    split = split_months(tickets, window_months=12)
    month_rows = np.flatnonzero(split.newest)
    window_rows = np.flatnonzero(split.window)
    unlabelled = [month_rows[0], window_rows[0]]
    tickets["category"] = tickets["category"].astype(object)
    tickets.loc[unlabelled, "category"] = None
    load = ict_load.__class__(tickets=tickets, mapping=ict_load.mapping, rows_read=len(tickets))
    ids = tickets["ticket_id"].astype(str)
    rows = [
        feedback_row(1, ids[month_rows[0]], "ict", "system"),
        feedback_row(2, ids[window_rows[0]], "ict", "system"),
        feedback_row(3, ids[month_rows[1]], "ict", "third_party"),
    ]
    merged = merge_feedback_rows(load, rows, "ict")
    held, dropped = hold_out_feedback(load, merged, split.newest)
    category = held.tickets["category"]
    assert dropped == {"category": 1}
    assert category[month_rows[0]] is None
    assert category[window_rows[0]] == "system"
    assert category[month_rows[1]] == "third_party"


def comparison_for_card():
    labels = ["human", "system"]
    truth = np.array(["human"] * 12 + ["system"] * 6, dtype=object)
    old = np.array([[0.9, 0.1]] * 12 + [[0.2, 0.8]] * 6)
    new = np.array([[0.9, 0.1]] * 12 + [[0.2, 0.8]] * 3 + [[0.7, 0.3]] * 3)
    return compare_classifier("category", "multiclass", truth, (old, labels), (new, labels))


def card_manifest() -> dict:
    return {
        "created_at": "2026-01-01T00:00:00Z",
        "data_window": {"rows": 400},
        "feature_spec": {"text_fields": ["description"], "categorical": ["department"]},
        "targets": [
            {"name": "category", "kind": "multiclass", "threshold": None, "temperature": 1.0,
             "class_thresholds": {"system": 0.4}},
            {"name": "escalation", "kind": "binary", "threshold": 0.5, "temperature": 1.0},
        ],
        "mapping": {"targets": {"category": {"kind": "multiclass", "min_count": 1},
                                "root_cause": {"kind": "multiclass", "min_count": 8,
                                               "rare_label": "其他"}}},
    }


def test_model_card_sections():
    comparison = comparison_for_card()
    decision = GateDecision(passed=False, reasons=["category: recall of class system fell"])
    card = build_model_card(
        CardFacts(
            model_name="ict",
            version="4",
            manifest=card_manifest(),
            window="2016-01..2016-06",
            month="2016-07",
            rows_per_class={"category": {"human": 300, "system": 100}},
            metrics={"category": comparison.challenger},
            evaluation_source="served ONNX graphs of champion and challenger",
            comparisons=[comparison],
            champion_version="3",
            champion_data="the window 2015-12..2016-05, evaluated on 2016-06",
            decision=decision,
            drift_warning="drift: PSI above 0.2 between ...: department 0.31",
            skipped_targets=["root_cause"],
        )
    )

    assert card.startswith("# Model card: ict version 4\n")
    assert "- Training window: 2016-01..2016-06" in card
    assert "- Evaluation month: 2016-07, never seen in training" in card
    assert "| human | 300 | 75.0% |" in card
    assert "| system | 1.000 | 0.500 | 0.667 | 6 |" in card
    assert "| category | multiclass | none | system 0.40 | 1.00 |" in card
    assert "| escalation | binary | 0.50 | none | 1.00 |" in card
    assert "## What changed against the previous champion (version 3)" in card
    assert "the window 2015-12..2016-05, evaluated on 2016-06" in card
    assert "    - recall of system: -0.500" in card
    assert "- Promotion gate: rejected, because:" in card
    assert "department 0.31" in card
    assert "the figures come from 18 tickets of one month" in card
    assert "Targets without a model (too few labelled rows): root_cause." in card


def test_model_card_first_version():
    card = build_model_card(
        CardFacts(
            model_name="ict", version="1", manifest=card_manifest(), window="2016-01..2016-04",
            month="2016-05", rows_per_class={}, metrics={},
            evaluation_source="the challenger's ONNX graphs; there was no champion",
        )
    )
    assert "There was no champion to compare with; this is the first version." in card


def retrain_result(status: str, decision: GateDecision | None = None) -> RetrainResult:
    return RetrainResult(
        model_name="ict", month="2016-07", window="2016-01..2016-06", data_sha256="0" * 64,
        status=status, run_id="abc", challenger_version="5", champion_before="4",
        existing_version="3", decision=decision,
    )


def test_summary_of_skipped_month():
    lines = summary_lines(retrain_result(STATUS_SKIPPED))
    assert lines == [
        "ict: month 2016-07 already has version 3; nothing registered (pass --force to retrain)"
    ]


def test_summary_of_rejection_lists_reasons():
    decision = GateDecision(passed=False, reasons=["category: macro-F1 fell from 0.6 to 0.2"])
    lines = summary_lines(retrain_result(STATUS_REJECTED, decision))
    assert lines[-2] == (
        "ict: gate rejected the challenger (version 5 stays challenger); champion stays "
        "version 4, because:"
    )
    assert lines[-1] == "  - category: macro-F1 fell from 0.6 to 0.2"


def test_summary_of_promotion():
    lines = summary_lines(retrain_result(STATUS_PROMOTED, GateDecision(passed=True)))
    assert lines[-1] == "ict: gate passed; version 5 is now the champion, version 4 is previous"
