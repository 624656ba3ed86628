"""``triage tune``: Optuna search over LightGBM and feature settings, one MLflow child run per trial.

Each trial is scored by the cross-validation of ``training.evaluate_cv`` on
one target, restricted to the model (no baselines), with one repetition of
the folds, so that trials are comparable with each other and with the figures
of ``triage evaluate``. The objective is the macro-F1 of the target minus
:data:`ECE_PENALTY` times the ECE above :data:`ECE_LIMIT`, because a setting
that wins on F1 at the price of calibration is not a win: the thresholds that
decide which tickets skip review rest on calibrated probabilities.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.inputs import feature_frame, ticket_text
from features.loading import LoadResult, load_tickets
from features.mapping import Mapping

from .evaluate_cv import (
    Variant,
    classification_figures,
    make_folds,
    model_part,
    pool_parts,
    strata_for,
)
from .train import _labelled, intake_spec, tokenize_texts

logger = logging.getLogger(__name__)

ECE_LIMIT = 0.05
ECE_PENALTY = 2.0


def objective_value(figures: dict[str, float]) -> float:
    """Macro-F1, less :data:`ECE_PENALTY` per unit of ECE above :data:`ECE_LIMIT`."""
    return figures["macro_f1"] - ECE_PENALTY * max(0.0, figures["ece"] - ECE_LIMIT)


@dataclass
class TuningResult:
    run_id: str
    trials: int
    best_trial: int
    best_value: float
    best_variant: Variant
    best_figures: dict[str, float]
    history: list[dict[str, Any]]


def suggest_variant(trial) -> Variant:
    """Draw a variant from the search space: trees, learning rate, regularisation, n-grams, weights."""
    params = {
        "n_estimators": trial.suggest_int("n_estimators", 50, 300, step=25),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 31),
        "min_child_samples": trial.suggest_int("min_child_samples", 2, 15),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.2, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }
    features: dict[str, Any] = {
        "ngram_max": trial.suggest_int("ngram_max", 1, 3),
        "max_features": trial.suggest_categorical(
            "max_features", [1000, 2000, 3000, 5000]
        ),
        "min_category_count": trial.suggest_int("min_category_count", 1, 5),
    }
    if trial.suggest_categorical("char_ngrams", [False, True]):
        features["char_ngrams"] = (2, 3)
    class_weight = trial.suggest_float("class_weight", 0.0, 1.0)
    return Variant(params=params, features=features, class_weight=class_weight or None)


def cross_validated_figures(
    target, tickets, frame, spec, variant: Variant, folds, seed: int, n_jobs: int
) -> dict[str, float]:
    """Cross-validate one variant on prepared folds, the model only, and return its figures."""
    parts = [
        model_part(target, fold, tickets, frame, spec, variant, seed, n_jobs)
        for fold in folds
    ]
    scores = pool_parts(parts)
    labels = sorted(set(scores.truth.tolist()))
    figures, _ = classification_figures(scores, labels)
    return figures


def tune(
    data: str | Path,
    mapping: Mapping | str | Path | None = None,
    *,
    target: str = "category",
    mode: str = "intake",
    trials: int = 20,
    folds: int = 5,
    seed: int = 0,
    timeout: float | None = None,
    n_jobs: int = 1,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    load: LoadResult | None = None,
    progress: bool = True,
) -> TuningResult:
    """Run an Optuna study (TPE sampler, seeded) maximising :func:`objective_value`.

    The study is one MLflow run; every trial is a child run with its settings
    as parameters and its figures as metrics.
    """
    import mlflow
    import optuna

    from . import registry

    load = load or load_tickets(data, mapping)
    tickets = load.tickets
    if target not in load.mapping.targets:
        raise ValueError(
            f"target {target!r} is not declared by mapping {load.mapping.name}; "
            f"declared targets: {', '.join(load.mapping.targets)}"
        )
    spec_target = load.mapping.targets[target]
    if spec_target.kind == "regression":
        raise ValueError(
            f"target {target} is a regression; tuning supports classifiers only"
        )
    spec = intake_spec(load.mapping, mode)
    texts = [
        ticket_text(r, spec) for r in tickets[list(spec.text_fields)].to_dict("records")
    ]
    frame = feature_frame(
        tickets, spec, tokens=tokenize_texts(texts, progress=progress)
    )
    labelled = np.flatnonzero(_labelled(tickets, spec_target))
    strata = strata_for(tickets, spec_target, labelled)
    splits = make_folds(
        labelled,
        strata,
        tickets["created_at"].to_numpy()[labelled],
        "stratified",
        folds,
        1,
        seed,
    )

    registry.setup_tracking(tracking_uri, experiment or registry.DEFAULT_EXPERIMENT)
    history: list[dict[str, Any]] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    with mlflow.start_run(run_name=f"tune {target} {mode}") as parent:
        mlflow.log_params(
            {
                "data": str(data),
                "target": target,
                "mode": mode,
                "folds": folds,
                "seed": seed,
                "trials": trials,
            }
        )

        def objective(trial) -> float:
            variant = suggest_variant(trial)
            started = time.perf_counter()
            with mlflow.start_run(run_name=f"trial {trial.number}", nested=True):
                mlflow.log_params(trial.params)
                figures = cross_validated_figures(
                    spec_target, tickets, frame, spec, variant, splits, seed, n_jobs
                )
                seconds = time.perf_counter() - started
                value = objective_value(figures)
                mlflow.log_metrics({**figures, "objective": value, "seconds": seconds})
            history.append(
                {
                    "trial": trial.number,
                    **trial.params,
                    **figures,
                    "objective": value,
                    "seconds": seconds,
                }
            )
            logger.info(
                "trial %d: objective %.3f, macro-F1 %.3f, ECE %.3f, %.0f s",
                trial.number,
                value,
                figures["macro_f1"],
                figures["ece"],
                seconds,
            )
            return value

        study.optimize(objective, n_trials=trials, timeout=timeout)
        best = study.best_trial
        best_variant = suggest_variant(optuna.trial.FixedTrial(best.params))
        mlflow.log_metric("best_objective", best.value)
        mlflow.log_dict(best_variant.to_dict(), "best_variant.json")
        mlflow.log_dict({"trials": history}, "trials.json")
        run_id = parent.info.run_id
    return TuningResult(
        run_id=run_id,
        trials=len(study.trials),
        best_trial=best.number,
        best_value=float(best.value),
        best_variant=best_variant,
        best_figures=next(h for h in history if h["trial"] == best.number),
        history=history,
    )


__all__ = [
    "ECE_LIMIT",
    "ECE_PENALTY",
    "TuningResult",
    "cross_validated_figures",
    "objective_value",
    "suggest_variant",
    "tune",
]
