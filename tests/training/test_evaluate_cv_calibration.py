"""Temperature scaling, its ONNX graph, the ECE and the abstention thresholds."""

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from features.inputs import feature_frame
from models.calibration import (
    add_calibration,
    calibrated_graph,
    calibration_split,
    ece_floor,
    expected_calibration_error,
    fit_calibrated,
    fit_class_temperatures,
    fit_temperature,
    label_index,
    reliability_from_confidence,
)
from models.estimators import apply_class_temperatures
from models.export import check_parity, to_onnx
from models.thresholds import NEVER, answered_mask, class_thresholds, coverage
from training.train import intake_spec


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_fit_temperature_recovers_overconfidence():
    """Labels drawn from softmax(z) and probabilities softmax(2z): the fit is near T = 2."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, size=(4000, 4))
    truth = np.array([rng.choice(4, p=p) for p in _softmax(logits)])
    overconfident = _softmax(2 * logits)
    temperature = fit_temperature(overconfident, truth)
    assert temperature == pytest.approx(2.0, rel=0.1)


def test_fit_temperature_needs_two_known_rows():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert fit_temperature(probabilities, np.array([0, -1])) == 1.0


def test_class_temperatures_fall_back_for_rare_top_class():
    rng = np.random.default_rng(1)
    probabilities = _softmax(rng.normal(0, 1, size=(200, 3)) + np.array([3.0, 0, 0]))
    truth = probabilities.argmax(axis=1)
    temperatures, shared = fit_class_temperatures(probabilities, truth, min_rows=30)
    top_counts = np.bincount(probabilities.argmax(axis=1), minlength=3)
    assert top_counts[0] >= 30
    for column in range(3):
        if top_counts[column] < 30:
            assert temperatures[column] == shared


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (12, 4), elements=st.floats(-6, 6)),
    st.lists(st.floats(0.1, 10), min_size=4, max_size=4),
)
def test_class_temperatures_keep_top_class(logits, temperatures):
    probabilities = _softmax(logits)
    scaled = apply_class_temperatures(probabilities, temperatures)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-9)
    top = probabilities.argmax(axis=1)
    clear = (
        np.sort(probabilities, axis=1)[:, -1] - np.sort(probabilities, axis=1)[:, -2]
        > 1e-9
    )
    np.testing.assert_array_equal(scaled.argmax(axis=1)[clear], top[clear])


def test_calibration_graph_matches_numpy():
    """The appended ONNX nodes compute what apply_class_temperatures computes."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(2)
    probabilities = _softmax(rng.normal(0, 2, size=(50, 3))).astype(np.float32)
    graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["probabilities"])],
            "identity",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
            [
                helper.make_tensor_value_info(
                    "probabilities", TensorProto.FLOAT, [None, 3]
                )
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    temperatures = [0.5, 2.0, 4.0]
    calibrated = add_calibration(graph, temperatures)
    onnx.checker.check_model(calibrated)
    session = ort.InferenceSession(calibrated.SerializeToString())
    actual = session.run(None, {"x": probabilities})[0]
    expected = apply_class_temperatures(probabilities.astype(np.float64), temperatures)
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert np.abs(actual - probabilities).max() > 0.01


def test_add_calibration_requires_probabilities_output():
    from onnx import TensorProto, helper

    graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["variable"])],
            "regressor",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
            [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        )
    )
    with pytest.raises(ValueError, match="no 'probabilities' output"):
        add_calibration(graph, [1.0])


@pytest.fixture(scope="module")
def demo_frame(demo_csv):
    from features.loading import load_tickets

    load = load_tickets(demo_csv)
    tickets = load.tickets.iloc[:500].reset_index(drop=True)
    spec = intake_spec(load.mapping)
    return tickets, spec, feature_frame(tickets, spec)


def test_calibrated_export_passes_parity(demo_frame):
    """The parity check compares the calibrated graph with the calibrated model."""
    tickets, spec, frame = demo_frame
    y = tickets["category"].to_numpy(dtype=str)
    model, calibration = fit_calibrated(
        "category", "multiclass", frame, y, spec, n_jobs=1, params={"n_estimators": 30}
    )
    assert model.temperatures is not None
    assert len(model.temperatures) == len(model.labels)
    assert calibration.rows.size > 0
    raw_graph = to_onnx(model, spec)
    graph = calibrated_graph(model, raw_graph)
    report = check_parity(model, graph, frame)
    assert report.passed, report
    stale = check_parity(model, raw_graph, frame)
    if any(abs(t - 1.0) > 0.05 for t in model.temperatures):
        assert stale.max_abs_diff > 1e-3


def test_calibration_split_keeps_every_label_for_fitting():
    y = np.array(["a"] * 50 + ["b"] * 5 + ["c"])
    fit_rows, held_rows = calibration_split(y, 0.2, seed=0)
    assert set(y[fit_rows]) == {"a", "b", "c"}
    assert len(held_rows) == 11
    assert not set(fit_rows) & set(held_rows)


def test_calibration_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="between 0 and 1, got 1.5"):
        calibration_split(np.array(["a", "b"]), 1.5, seed=0)


def test_ece_of_calibrated_and_miscalibrated_bins():
    confidence = np.full(100, 0.8)
    correct = np.arange(100) < 80
    assert reliability_from_confidence(confidence, correct).ece == pytest.approx(0.0)
    half = np.arange(100) < 50
    assert reliability_from_confidence(np.full(100, 0.9), half).ece == pytest.approx(
        0.4
    )


def test_ece_floor_shrinks_with_rows():
    few = ece_floor(np.full(50, 0.7))
    many = ece_floor(np.full(5000, 0.7))
    assert 0 < many < few
    assert many < 0.02
    assert ece_floor(np.zeros(0)) == 0.0


def test_ece_from_probabilities_uses_top_class():
    probabilities = np.array([[0.7, 0.3], [0.7, 0.3], [0.4, 0.6], [0.4, 0.6]])
    truth = np.array([0, 1, 1, 1])
    # Bin of 0.6: two rows, both right (gap 0.4); bin of 0.7: two rows, one right (gap 0.2).
    assert expected_calibration_error(probabilities, truth) == pytest.approx(0.3)


def test_label_index_marks_unknown_labels():
    np.testing.assert_array_equal(
        label_index(["b", "z", "a", True], ["a", "b", True]), [1, -1, 0, 2]
    )


def _threshold_case():
    # Ten rows predicted as class 0, most confident first; rows 7 and 9 are wrong.
    confidence = np.linspace(0.95, 0.5, 10)
    probabilities = np.column_stack([confidence, 1 - confidence])
    truth = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 1])
    return probabilities, truth


def test_threshold_is_deepest_cut_meeting_precision():
    probabilities, truth = _threshold_case()
    thresholds = class_thresholds(
        probabilities, truth, ["a", "b"], precision=0.8, min_answers=3
    )
    # With one right and one wrong answer added, the first nine rows give
    # 9 / 11 = 0.82 and all ten give 9 / 12 = 0.75.
    assert thresholds["a"] == pytest.approx(probabilities[8, 0])
    assert thresholds["b"] == NEVER


def test_threshold_smoothing_is_conservative():
    """Seven right answers out of seven are not enough evidence for 0.9."""
    probabilities, truth = _threshold_case()
    thresholds = class_thresholds(
        probabilities, truth, ["a", "b"], precision=0.9, min_answers=3
    )
    assert thresholds["a"] == NEVER


def test_threshold_needs_minimum_answers():
    probabilities, truth = _threshold_case()
    thresholds = class_thresholds(
        probabilities, truth, ["a", "b"], precision=0.8, min_answers=20
    )
    assert thresholds["a"] == NEVER


def test_threshold_rejects_bad_precision():
    probabilities, truth = _threshold_case()
    with pytest.raises(ValueError, match=r"in \(0, 1\], got 0"):
        class_thresholds(probabilities, truth, ["a", "b"], precision=0)


def test_coverage_counts_answered_rows():
    probabilities, truth = _threshold_case()
    thresholds = {"a": float(probabilities[4, 0]), "b": NEVER}
    mask = answered_mask(probabilities, ["a", "b"], thresholds)
    assert mask.sum() == 5
    result = coverage(probabilities, truth, ["a", "b"], thresholds, 0.9)
    assert result.coverage == pytest.approx(0.5)
    assert result.precision == pytest.approx(1.0)
    assert result.answered == 5


def test_coverage_with_nothing_answered():
    probabilities, truth = _threshold_case()
    result = coverage(probabilities, truth, ["a", "b"], {"a": NEVER, "b": NEVER}, 0.9)
    assert result.coverage == 0.0
    assert np.isnan(result.precision)


def test_never_threshold_is_above_any_probability():
    probabilities = pd.DataFrame([[1.0, 0.0]]).to_numpy()
    assert not answered_mask(probabilities, ["a", "b"], {"a": NEVER, "b": NEVER}).any()
