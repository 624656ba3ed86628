"""The promotion gate's rules, on probabilities with known metrics."""

from __future__ import annotations

import numpy as np
import pytest

from training.gate import (
    GateConfig,
    apply_gate,
    compare_classifier,
    compare_regressor,
    expected_calibration_error,
    plot_comparison,
)

LABELS = ["human", "system", "other"]


def one_hot(labels: list[str], confidence: float = 0.9) -> np.ndarray:
    """Probabilities that put ``confidence`` on each given label."""
    rest = (1 - confidence) / (len(LABELS) - 1)
    probabilities = np.full((len(labels), len(LABELS)), rest)
    for row, label in enumerate(labels):
        probabilities[row, LABELS.index(label)] = confidence
    return probabilities


TRUTH = np.array(["human"] * 20 + ["system"] * 10 + ["other"] * 3, dtype=object)


def test_ece_of_calibrated_predictions_is_zero():
    truth = np.array(["human"] * 8 + ["system"] * 2, dtype=object)
    probabilities = one_hot(["human"] * 10, confidence=0.8)
    assert expected_calibration_error(truth, probabilities, LABELS) == pytest.approx(0.0)


def test_ece_of_overconfident_predictions():
    truth = np.array(["human"] * 5 + ["system"] * 5, dtype=object)
    probabilities = one_hot(["human"] * 10, confidence=0.95)
    assert expected_calibration_error(truth, probabilities, LABELS) == pytest.approx(0.45)


def test_identical_models_pass():
    probabilities = one_hot(list(TRUTH))
    comparison = compare_classifier(
        "category", "multiclass", TRUTH, (probabilities, LABELS), (probabilities, LABELS)
    )
    decision = apply_gate([comparison], {"category": 1e-7})
    assert decision.passed
    assert decision.reasons == []
    assert len(decision.checks) == 4


def test_f1_drop_is_rejected_with_numbers():
    champion = one_hot(list(TRUTH))
    worse = list(TRUTH)
    worse[20:25] = ["human"] * 5
    comparison = compare_classifier(
        "category", "multiclass", TRUTH, (champion, LABELS), (one_hot(worse), LABELS)
    )
    decision = apply_gate([comparison], {"category": 0.0})
    assert not decision.passed
    assert decision.reasons[0].startswith("category: macro-F1 fell from 1.000 to ")
    assert "the gate allows 0.01" in decision.reasons[0]


def test_recall_drop_names_class():
    champion = one_hot(list(TRUTH))
    worse = list(TRUTH)
    worse[20:23] = ["human"] * 3
    comparison = compare_classifier(
        "category", "multiclass", TRUTH, (champion, LABELS), (one_hot(worse), LABELS)
    )
    loose = GateConfig(max_f1_drop=1.0)
    decision = apply_gate([comparison], {}, loose)
    assert decision.reasons == [
        "category: recall of class system fell from 1.000 to 0.700 on 10 tickets; "
        "the gate allows a fall of 0.1"
    ]


def test_small_class_not_judged_by_recall():
    champion = one_hot(list(TRUTH))
    worse = list(TRUTH)
    worse[30:33] = ["human"] * 3
    comparison = compare_classifier(
        "category", "multiclass", TRUTH, (champion, LABELS), (one_hot(worse), LABELS)
    )
    loose = GateConfig(max_f1_drop=1.0, max_calibration_increase=1.0)
    assert apply_gate([comparison], {}, loose).passed
    strict = GateConfig(max_f1_drop=1.0, max_calibration_increase=1.0, min_class_support=3)
    reasons = apply_gate([comparison], {}, strict).reasons
    assert reasons == [
        "category: recall of class other fell from 1.000 to 0.000 on 3 tickets; "
        "the gate allows a fall of 0.1"
    ]


def test_worse_calibration_is_rejected():
    champion = one_hot(list(TRUTH), confidence=0.95)
    challenger = one_hot(list(TRUTH), confidence=0.6)
    comparison = compare_classifier(
        "category", "multiclass", TRUTH, (champion, LABELS), (challenger, LABELS)
    )
    decision = apply_gate([comparison], {})
    assert decision.reasons == [
        "category: calibration is worse, expected calibration error rose from 0.050 "
        "to 0.400; the gate allows a rise of 0.02"
    ]
    relaxed = GateConfig(max_calibration_increase=0.5)
    assert apply_gate([comparison], {}, relaxed).passed


def test_failed_parity_is_rejected():
    probabilities = one_hot(list(TRUTH))
    comparison = compare_classifier(
        "category", "multiclass", TRUTH, (probabilities, LABELS), (probabilities, LABELS)
    )
    decision = apply_gate([comparison], {"category": 1e-7, "root_cause": 3e-3})
    assert decision.reasons == [
        "root_cause: ONNX parity failed, max |dp| 0.003 is above 1e-04"
    ]


def test_rows_with_unknown_labels_are_left_out():
    truth = np.array(["human", "system", "other", "other"], dtype=object)
    champion_labels = ["human", "system"]
    champion = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.5, 0.5]])
    challenger = one_hot(["human", "system", "other", "other"])
    comparison = compare_classifier(
        "category", "multiclass", truth, (champion, champion_labels), (challenger, LABELS)
    )
    assert comparison.rows == 2
    assert comparison.unscored_rows == 2
    assert comparison.champion["accuracy"] == 1.0


def test_target_with_few_rows_not_judged():
    truth = TRUTH[:5]
    good = one_hot(list(truth))
    bad = one_hot(["system"] * 5)
    comparison = compare_classifier(
        "escalation", "multiclass", truth, (good, LABELS), (bad, LABELS)
    )
    decision = apply_gate([comparison], {})
    assert decision.passed
    assert decision.notes == [
        "escalation: 5 evaluation tickets with a label both models know, fewer than 10; "
        "not judged"
    ]


def test_missing_target_is_rejected():
    decision = apply_gate([], {}, GateConfig(targets=("category",)))
    assert decision.reasons == [
        "category: the challenger or the champion has no model for this target"
    ]


def test_regression_is_reported_not_judged():
    truth = np.array([1.0, 2.0, 4.0])
    comparison = compare_regressor("handling_hours", truth, truth, truth + 10)
    assert comparison.challenger["mae"] == pytest.approx(10.0)
    decision = apply_gate([comparison], {}, GateConfig(targets=("handling_hours",)))
    assert decision.passed
    assert decision.notes == ["handling_hours: regression targets are reported, not judged"]


def test_comparison_plot_is_png(tmp_path):
    probabilities = one_hot(list(TRUTH))
    comparison = compare_classifier(
        "category", "multiclass", TRUTH, (probabilities, LABELS), (probabilities, LABELS)
    )
    path = plot_comparison([comparison], tmp_path / "comparison.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dropped_target_is_rejected():
    probabilities = one_hot(list(TRUTH))
    comparison = compare_classifier(
        "category", "multiclass", TRUTH, (probabilities, LABELS), (probabilities, LABELS)
    )
    decision = apply_gate([comparison], {}, champion_only=["escalation"])
    assert decision.reasons == [
        "escalation: the challenger has no model for this target, which the champion serves"
    ]
    named = apply_gate([comparison], {}, GateConfig(targets=("category",)), ["escalation"])
    assert named.passed
