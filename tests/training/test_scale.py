"""The large-export path of training: one feature fit, one LightGBM fit per target."""

from __future__ import annotations

import numpy as np
import pytest

from features.loading import load_tickets
from features.pipeline import build_feature_pipeline
from models.calibration import fit_calibrated
from models.estimators import FittedFeatures
from models.scorer import Scorer
from training import scale
from training.train import intake_spec, tokenize_texts, train


@pytest.fixture(scope="module")
def demo_frame(demo_csv):
    from features.inputs import feature_frame, ticket_text

    load = load_tickets(demo_csv, None)
    spec = intake_spec(load.mapping)
    texts = [ticket_text(r, spec) for r in load.tickets[list(spec.text_fields)].to_dict("records")]
    frame = feature_frame(load.tickets, spec, tokens=tokenize_texts(texts, progress=False))
    return load, spec, frame


@pytest.fixture(scope="module")
def large_trained(demo_csv, tracking_dir):
    """The demo tickets trained as if they were a large export."""
    patch = pytest.MonkeyPatch()
    patch.setattr(scale, "LARGE_DATA_ROWS", 500)
    patch.setattr(scale, "TREE_ROWS", 400)
    patch.setattr(scale, "PARITY_SAMPLE_ROWS", 50)
    try:
        yield train(demo_csv, None, model_name="demo-large", progress=False)
    finally:
        patch.undo()


@pytest.mark.parametrize("workers", [1, 2])
def test_shared_features_match_one_fit(demo_frame, workers):
    _, spec, frame = demo_frame
    fit_rows = np.arange(len(frame)) % 3 != 0
    # Chunks of 250 rows: with two workers the n-grams are counted and the rows
    # transformed in forked processes.
    shared = scale.shared_features(frame, spec, fit_rows, workers=workers, chunk_rows=250)
    reference = build_feature_pipeline(frame[fit_rows], spec).fit(frame[fit_rows])
    expected = reference.transform(frame)
    assert shared.matrix.shape == expected.shape
    assert shared.matrix.dtype == np.float32
    assert abs(shared.matrix - expected).max() == 0
    names = shared.transformer.get_feature_names_out()
    assert list(names) == list(reference.get_feature_names_out())


def test_shared_features_need_a_training_row(demo_frame):
    _, spec, frame = demo_frame
    with pytest.raises(ValueError, match="no training row"):
        scale.shared_features(frame, spec, np.zeros(len(frame), dtype=bool))


def test_trees_see_a_bounded_share_of_rows():
    assert scale.large_data_params(1_000, None) is None
    assert scale.large_data_params(100_000, None)["subsample"] == 0.5
    assert scale.large_data_params(1_000_000, None)["subsample"] == pytest.approx(0.1)
    assert scale.large_data_params(1_000_000, {"subsample": 0.8})["subsample"] == 0.8


def test_parity_rows_sorted_sample():
    evaluation = np.zeros(1_000, dtype=bool)
    evaluation[::4] = True
    rows = scale.parity_rows(evaluation, seed=0, limit=30)
    assert len(rows) == 30
    assert np.all(np.diff(rows) > 0)
    assert evaluation[rows].all()
    assert list(scale.parity_rows(evaluation, seed=0, limit=500)) == list(np.flatnonzero(evaluation))


def test_one_fit_without_refit(demo_frame):
    load, spec, frame = demo_frame
    y = load.tickets["category"].to_numpy()
    features = scale.shared_features(frame, spec, np.ones(len(frame), dtype=bool))
    model, calibration = fit_calibrated(
        "category", "multiclass", frame, y, spec, n_jobs=1, features=features, refit=False,
    )
    assert model.pipeline[0] is features.transformer
    # The shipped model is the one fitted without the held-out rows: its
    # predictions on them are the calibration's raw probabilities.
    held = calibration.rows
    raw = model.predict_raw(frame.iloc[held], features.matrix[held])
    assert np.allclose(model.predict_raw(frame.iloc[held]), raw)
    assert (raw.argmax(axis=1) == calibration.probabilities.argmax(axis=1)).all()


def test_cross_fitting_refuses_shared_features(demo_frame):
    load, spec, frame = demo_frame
    features = FittedFeatures(None, None)
    with pytest.raises(ValueError, match="cross-fitting fits the feature pipeline per fold"):
        fit_calibrated(
            "category", "multiclass", frame, load.tickets["category"].to_numpy(), spec,
            cross_fit=True, features=features,
        )


def test_large_export_shares_one_feature_fit(large_trained):
    models = large_trained.models
    transformers = {id(m.pipeline[0]) for m in models.values()}
    assert len(transformers) == 1, "intake targets should share one fitted feature pipeline"
    closure = large_trained.closure_models
    assert closure and all(m.pipeline[0] is not models["category"].pipeline[0] for m in closure.values())
    for name, values in large_trained.metrics.items():
        assert values["parity_max_abs_diff"] < 1e-4, name
    assert large_trained.metrics["category"]["macro_f1"] > 0.5


def test_large_export_bundle_scores(large_trained):
    scorer = Scorer(large_trained.bundle_dir)
    [answer] = scorer.score(
        [{"ticket_id": "x", "description": "数据库表空间满，ERP无法写入", "system": "ERP"}]
    )
    assert answer["category"]["code"] in {"system", "human", "third_party", "other"}
    assert 0 <= answer["escalation"]["probability"] <= 1


def test_large_export_settings_for_few_rows():
    # A target with few labelled rows in a large export still gets the fixed
    # round count, so the regression's round selection does not run.
    chosen = scale.large_data_params(800, None, tickets=1_000_000)
    assert chosen["n_estimators"] == scale.LARGE_DATA_PARAMS["n_estimators"]
    assert chosen["subsample"] == 0.5
