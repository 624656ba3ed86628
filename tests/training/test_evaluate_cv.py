"""``triage evaluate``: folds, baselines, figures, the MLflow run and the printed report."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from training.cli import main
from training.demo_data import write_demo_data
from training.evaluate_cv import (
    MAJORITY,
    MODEL,
    TFIDF_LR,
    TIME_SPLIT_ROWS,
    Section,
    Variant,
    choose_strategy,
    evaluate,
    format_report,
    make_folds,
    register_section,
    unregister_section,
)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    return write_demo_data(
        360, tmp_path_factory.mktemp("evaluate") / "tickets.csv", seed=3
    )


@pytest.fixture(scope="module")
def evaluation(small_csv, tracking_dir):
    return evaluate(
        small_csv,
        None,
        folds=3,
        repeats=2,
        targets=["category", "escalation", "handling_hours"],
        progress=False,
    )


def test_stratified_folds_cover_each_row_once_per_repeat():
    positions = np.arange(100, 160)
    strata = np.array(["a", "b", "c"] * 20)
    folds = make_folds(positions, strata, np.zeros(60), "stratified", 5, 2, seed=0)
    assert len(folds) == 10
    for repeat in (0, 1):
        tested = np.concatenate([f.test for f in folds if f.repeat == repeat])
        assert sorted(tested) == list(positions)
    for fold in folds:
        assert not set(fold.train) & set(fold.test)


def test_stratified_folds_are_seeded():
    positions = np.arange(60)
    strata = np.array(["a", "b"] * 30)
    first = make_folds(positions, strata, np.zeros(60), "stratified", 3, 1, seed=4)
    second = make_folds(positions, strata, np.zeros(60), "stratified", 3, 1, seed=4)
    other = make_folds(positions, strata, np.zeros(60), "stratified", 3, 1, seed=5)
    assert all((a.test == b.test).all() for a, b in zip(first, second))
    assert any((a.test != b.test).any() for a, b in zip(first, other))


def test_time_folds_train_on_the_past():
    positions = np.arange(50)
    created = pd.date_range("2025-01-01", periods=50, freq="D").to_numpy()[::-1]
    folds = make_folds(positions, np.zeros(50), created, "time", 4, 3, seed=0)
    assert len(folds) == 4
    for fold in folds:
        assert created[fold.train].max() < created[fold.test].min()


def test_strategy_switches_to_time_at_limit():
    assert choose_strategy(TIME_SPLIT_ROWS - 1) == "stratified"
    assert choose_strategy(TIME_SPLIT_ROWS) == "time"
    assert choose_strategy(100, "time") == "time"
    with pytest.raises(ValueError, match="auto, stratified or time, got 'random'"):
        choose_strategy(100, "random")


def test_stratified_folds_need_enough_rows():
    with pytest.raises(ValueError, match="at least 5 rows; the largest has 2"):
        make_folds(
            np.arange(4),
            np.array(["a", "a", "b", "b"]),
            np.zeros(4),
            "stratified",
            5,
            1,
            0,
        )


def test_three_systems_on_same_rows(evaluation):
    category = evaluation.targets["category"]
    rows = {system: sorted(scores.rows) for system, scores in category.pooled.items()}
    assert set(rows) == {MODEL, TFIDF_LR, MAJORITY}
    assert rows[MODEL] == rows[TFIDF_LR] == rows[MAJORITY]
    assert len(rows[MODEL]) == 360


def test_majority_baseline_predicts_most_frequent_class(evaluation):
    category = evaluation.targets["category"]
    majority = category.pooled[MAJORITY]
    most_frequent = pd.Series(majority.truth).value_counts().idxmax()
    assert (majority.predicted == most_frequent).mean() > 0.9
    share = (majority.truth == most_frequent).mean()
    assert category.figure(MAJORITY, "accuracy") == pytest.approx(share, abs=0.05)


def test_model_beats_baselines_on_demo_data(evaluation):
    category = evaluation.targets["category"]
    assert (
        category.figure(MODEL, "macro_f1") > category.figure(MAJORITY, "macro_f1") + 0.3
    )
    assert category.figure(MODEL, "log_loss") < category.figure(MAJORITY, "log_loss")


def test_classifier_figures_are_complete(evaluation):
    category = evaluation.targets["category"].figures[MODEL]
    for key in (
        "macro_f1",
        "accuracy",
        "top2_accuracy",
        "log_loss",
        "ece",
        "ece_uncalibrated",
    ):
        assert 0 <= category[key] < 10, key
    for precision in ("0.80", "0.90", "0.95"):
        assert 0 <= category[f"coverage_at_{precision}"] <= 1
    assert category["coverage_at_0.80"] >= category["coverage_at_0.95"]
    escalation = evaluation.targets["escalation"].figures
    for system in (MODEL, TFIDF_LR, MAJORITY):
        for key in ("roc_auc", "pr_auc", "brier"):
            assert 0 <= escalation[system][key] <= 1, (system, key)


def test_per_class_figures_have_support(evaluation):
    per_class = evaluation.targets["category"].per_class[MODEL]
    assert sum(v["support"] for v in per_class.values()) == 360
    for values in per_class.values():
        assert 0 <= values["f1"] <= 1


def test_regression_target_against_median(evaluation):
    hours = evaluation.targets["handling_hours"].figures
    assert set(hours) == {MODEL, TFIDF_LR, MAJORITY}
    assert hours[MODEL]["mae"] > 0
    assert hours[MAJORITY]["median_ae"] > 0


def test_one_mlflow_run_with_tables_and_plots(evaluation):
    client = MlflowClient()
    run = client.get_run(evaluation.run_id)
    metrics = run.data.metrics
    for system in (MODEL, TFIDF_LR, MAJORITY):
        assert f"category.{system}.macro_f1" in metrics
        assert f"escalation.{system}.roc_auc" in metrics
    assert "category.model.f1.human" in metrics
    assert metrics["category.model.macro_f1"] == pytest.approx(
        evaluation.targets["category"].figure(MODEL, "macro_f1")
    )
    assert run.data.params["folds"] == "3"
    artifacts = {a.path for a in client.list_artifacts(evaluation.run_id, "evaluation")}
    assert "evaluation/figures.csv" in artifacts
    assert "evaluation/predictions.csv" in artifacts
    plots = {
        a.path for a in client.list_artifacts(evaluation.run_id, "evaluation/plots")
    }
    for name in ("reliability", "f1_by_class", "confusion"):
        assert f"evaluation/plots/{name}_category.png" in plots


def test_figures_table_matches_result(evaluation):
    table = pd.read_csv(evaluation.artifacts_dir / "figures.csv")
    row = table[
        (table.target == "category")
        & (table.system == MODEL)
        & (table.metric == "macro_f1")
    ]
    assert len(row) == 1
    assert row["mean"].iloc[0] == pytest.approx(
        evaluation.targets["category"].figure(MODEL, "macro_f1")
    )
    assert row["std"].iloc[0] >= 0


def test_report_prints_every_system(evaluation):
    text = format_report(evaluation)
    assert "3-fold stratified x 2" in text
    for system in (MODEL, TFIDF_LR, MAJORITY):
        assert f"  {system}" in text
    assert "model vs tfidf_lr macro-F1" in text
    assert "model vs majority top-3: " in text
    assert "model vs majority MAE: " in text
    assert "a perfectly calibrated model would show" in text
    assert "answered without review" in text
    assert "ROC-AUC" in text


def test_extra_section_printed_and_logged(small_csv, tracking_dir):
    """A section added by another feature shows after the tables and logs its metrics."""
    seen = {}

    def recall_section(context):
        seen["folds"] = len(context.folds["category"])
        return Section(
            "similar tickets", ["recall@5: 0.500"], {"similar.recall_at_5": 0.5}
        )

    register_section(recall_section)
    try:
        result = evaluate(
            small_csv, None, folds=2, repeats=1, targets=["category"], progress=False
        )
    finally:
        unregister_section(recall_section)
    assert seen["folds"] == 2
    text = format_report(result)
    assert "similar tickets\n  recall@5: 0.500" in text
    assert text.index("similar tickets") > text.index("category (multiclass")
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    assert metrics["similar.recall_at_5"] == 0.5


def test_unknown_target_rejected(small_csv):
    with pytest.raises(ValueError, match="not declared by mapping canonical"):
        evaluate(
            small_csv, None, targets=["colour"], log_to_mlflow=False, progress=False
        )


def test_variant_file_rejects_unknown_keys(tmp_path):
    path = tmp_path / "variant.json"
    path.write_text('{"params": {}, "trees": 3}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown keys \['trees'\]"):
        Variant.from_file(path)


def test_target_model_settings_reach_the_fit(small_csv, monkeypatch):
    """A target's ``model`` table in the mapping wins over the evaluated variant."""
    from dataclasses import replace

    from features.loading import load_tickets
    from training import evaluate_cv

    load = load_tickets(small_csv, None)
    category = replace(
        load.mapping.targets["category"],
        model={"class_weight": 0.0, "params": {"num_leaves": 4}},
    )
    load.mapping.targets["category"] = category
    seen = []
    real_fit = evaluate_cv.fit_calibrated

    def recording_fit(*args, **kwargs):
        seen.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(evaluate_cv, "fit_calibrated", recording_fit)
    evaluate(
        small_csv,
        None,
        folds=2,
        repeats=1,
        targets=["category"],
        variant=Variant(params={"n_estimators": 10, "num_leaves": 16}, class_weight=1.0),
        load=load,
        log_to_mlflow=False,
        progress=False,
    )
    assert len(seen) == 2
    for options in seen:
        assert options["class_weight"] == 0.0
        assert options["params"] == {"n_estimators": 10, "num_leaves": 4}


def test_evaluate_command_prints_table(small_csv, tracking_dir, tmp_path):
    variant = tmp_path / "variant.json"
    variant.write_text(
        '{"params": {"n_estimators": 20}, "class_weight": 0.5}', encoding="utf-8"
    )
    out_dir = tmp_path / "figures"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--data",
            str(small_csv),
            "--cv",
            "2",
            "--repeats",
            "1",
            "--target",
            "category",
            "--mode",
            "closure",
            "--variant",
            str(variant),
            "--out-dir",
            str(out_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "closure mode" in result.output
    assert "macro-F1" in result.output
    assert (out_dir / "plots" / "reliability_category.png").is_file()
    assert (
        (out_dir / "report.txt").read_text(encoding="utf-8").startswith("evaluation of")
    )


def test_evaluate_command_reports_bad_target(small_csv, tracking_dir):
    result = CliRunner().invoke(
        main, ["evaluate", "--data", str(small_csv), "--target", "colour"]
    )
    assert result.exit_code != 0
    assert "not declared by mapping" in result.output


@pytest.mark.slow
def test_ict_category_beats_tfidf_baseline(ict_path, ict_mapping, tracking_dir):
    """On the real records the intake model clears the TF-IDF baseline by a wide margin."""
    result = evaluate(
        ict_path, ict_mapping, folds=5, repeats=1, targets=["category"], progress=False
    )
    category = result.targets["category"]
    model = category.figure(MODEL, "macro_f1")
    assert model >= category.figure(TFIDF_LR, "macro_f1") + 0.15
    assert model >= 0.45
    assert category.figure(MODEL, "ece") <= 0.08
    assert category.rows == 829
