"""Fitting settings: the regression's tree count chosen on its training rows, per-target options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.inputs import FeatureSpec, feature_frame
from models.estimators import (
    DEFAULT_CLASS_WEIGHT,
    REGRESSION_PARAMS,
    ROUND_CANDIDATES,
    build_estimator,
    fit_target,
    select_rounds,
    target_fit_options,
)

SPEC = FeatureSpec(text_fields=("description",), categorical=("department",))


def hours_tickets(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Tickets whose database faults take about 10 hours and the rest about 1 hour."""
    rng = np.random.default_rng(seed)
    database = rng.random(rows) < 0.5
    texts = np.where(database, "数据库 宕机 无法 连接", "网页 打开 缓慢")
    tickets = pd.DataFrame(
        {
            "description": texts,
            "department": rng.choice(["北京", "上海"], rows),
            "created_at": pd.Timestamp("2017-01-02 10:00") + pd.to_timedelta(np.arange(rows), "h"),
        }
    )
    hours = np.where(database, 10.0, 1.0) * rng.uniform(0.8, 1.2, rows)
    return feature_frame(tickets, SPEC), hours


def test_select_rounds_strong_signal_more_trees():
    frame, hours = hours_tickets(90)
    rounds = select_rounds(
        frame, np.log1p(hours), SPEC, 0, 1, dict(REGRESSION_PARAMS), None, (2, 300)
    )
    assert rounds == 300


def test_select_rounds_small_data_takes_fewest():
    frame, hours = hours_tickets(20)
    rounds = select_rounds(
        frame, np.log1p(hours), SPEC, 0, 1, dict(REGRESSION_PARAMS), None, (40, 300)
    )
    assert rounds == 40


def test_select_rounds_same_on_repeat():
    frame, hours = hours_tickets(60, seed=1)
    first = select_rounds(frame, np.log1p(hours), SPEC, 3, 1, dict(REGRESSION_PARAMS), None)
    second = select_rounds(frame, np.log1p(hours), SPEC, 3, 1, dict(REGRESSION_PARAMS), None)
    assert first == second
    assert first in ROUND_CANDIDATES


def test_regression_fit_uses_selected_rounds():
    frame, hours = hours_tickets(60)
    model = fit_target("hours", "regression", frame, hours, SPEC, n_jobs=1)
    estimator = model.pipeline[-1]
    assert estimator.n_estimators in ROUND_CANDIDATES
    assert estimator.learning_rate == REGRESSION_PARAMS["learning_rate"]
    predicted = model.predict_raw(frame)
    database = frame["tokens"].str.contains("数据库").to_numpy()
    assert np.median(predicted[database]) > 5
    assert np.median(predicted[~database]) < 2


def test_regression_fit_keeps_fixed_rounds():
    frame, hours = hours_tickets(60)
    model = fit_target(
        "hours", "regression", frame, hours, SPEC, n_jobs=1, params={"n_estimators": 7}
    )
    assert model.pipeline[-1].n_estimators == 7


def test_regression_objective_can_be_replaced():
    estimator = build_estimator("regression", 0, 0, 1, {"objective": "huber"})
    assert estimator.objective == "huber"
    assert build_estimator("regression", 0, 0, 1, None).objective == "regression_l1"


def test_target_settings_override_shared_ones():
    options = target_fit_options(
        {"class_weight": 0.0, "params": {"num_leaves": 8}, "features": {"min_df": 2}},
        params={"num_leaves": 31, "n_estimators": 50},
        feature_options={"min_df": 3, "ngram_max": 2},
        class_weight=1.0,
    )
    assert options["class_weight"] == 0.0
    assert options["params"] == {"num_leaves": 8, "n_estimators": 50}
    assert options["feature_options"] == {"min_df": 2, "ngram_max": 2}


def test_target_without_settings_keeps_shared_ones():
    options = target_fit_options({}, params=None, class_weight=DEFAULT_CLASS_WEIGHT)
    assert options == {
        "params": None,
        "feature_options": None,
        "class_weight": DEFAULT_CLASS_WEIGHT,
    }


@pytest.mark.parametrize("weight", [0.0, None])
def test_unweighted_classifier_no_class_weight(weight):
    frame, hours = hours_tickets(40)
    labels = np.where(hours > 5, "db", "web")
    model = fit_target(
        "group", "multiclass", frame, labels, SPEC, n_jobs=1, class_weight=weight,
        params={"n_estimators": 5},
    )
    assert model.pipeline[-1].class_weight is None
