"""``triage tune``: Optuna trials as MLflow child runs of one study run."""

import json

import mlflow
import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from training.cli import main
from training.demo_data import write_demo_data
from training.evaluate_cv import Variant
from training.tuning import ECE_LIMIT, objective_value, suggest_variant, tune


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    return write_demo_data(
        240, tmp_path_factory.mktemp("tune") / "tickets.csv", seed=11
    )


@pytest.fixture(scope="module")
def study(small_csv, tracking_dir):
    return tune(
        small_csv, None, target="category", trials=3, folds=2, seed=0, progress=False
    )


def test_trials_are_child_runs(study):
    client = MlflowClient()
    parent = client.get_run(study.run_id)
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{study.run_id}'",
    )
    assert len(children) == 3
    assert set(children["tags.mlflow.runName"]) == {"trial 0", "trial 1", "trial 2"}
    assert children["metrics.macro_f1"].notna().all()
    assert children["metrics.ece"].notna().all()
    assert "params.num_leaves" in children.columns


def test_best_trial_has_highest_objective(study):
    assert study.trials == 3
    values = [h["objective"] for h in study.history]
    assert study.best_value == max(values)
    assert study.best_figures["trial"] == study.best_trial
    assert isinstance(study.best_variant, Variant)
    assert study.best_variant.params["n_estimators"] >= 50


def test_best_variant_logged_as_artifact(study):
    client = MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(study.run_id)}
    assert "best_variant.json" in artifacts
    assert "trials.json" in artifacts


def test_objective_penalises_ece_above_limit():
    assert objective_value({"macro_f1": 0.6, "ece": ECE_LIMIT}) == pytest.approx(0.6)
    assert objective_value({"macro_f1": 0.6, "ece": ECE_LIMIT + 0.05}) == pytest.approx(
        0.5
    )


def test_search_space_gives_runnable_variants():
    trial = optuna.trial.FixedTrial(
        {
            "n_estimators": 75,
            "learning_rate": 0.1,
            "num_leaves": 7,
            "min_child_samples": 5,
            "colsample_bytree": 0.5,
            "reg_lambda": 1.0,
            "ngram_max": 2,
            "max_features": 2000,
            "min_category_count": 2,
            "char_ngrams": True,
            "class_weight": 0.0,
        }
    )
    variant = suggest_variant(trial)
    assert variant.features["char_ngrams"] == (2, 3)
    assert variant.class_weight is None
    assert variant.params["num_leaves"] == 7


def test_tune_command_writes_variant(small_csv, tracking_dir, tmp_path):
    out = tmp_path / "best.json"
    result = CliRunner().invoke(
        main,
        [
            "tune",
            "--data",
            str(small_csv),
            "--trials",
            "1",
            "--cv",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best of 1 trials" in result.output
    variant = Variant.from_file(out)
    assert set(json.loads(out.read_text(encoding="utf-8"))) == {
        "params",
        "features",
        "class_weight",
    }
    assert variant.params


def test_tune_rejects_regression_target(small_csv, tracking_dir):
    with pytest.raises(ValueError, match="handling_hours is a regression"):
        tune(
            small_csv, None, target="handling_hours", trials=1, folds=2, progress=False
        )
