"""``triage evaluate``: the model against two baselines on the same cross-validation folds.

The protocol, for every target the mapping declares:

1. Split the labelled tickets. Under :data:`TIME_SPLIT_ROWS` tickets the
   folds are repeated stratified K-fold. From there on they are time-based,
   each fold training on everything before its test block: large exports
   have enough recent tickets to test on, and random folds would let a model
   learn from the future.
2. On each fold fit three systems on the training rows: the model (features,
   LightGBM, then temperature and per-class thresholds on a held-out part of
   the training rows, exactly as ``triage train`` does), the majority class,
   and TF-IDF on the same jieba tokens with logistic regression.
3. Pool the test-fold predictions of each repeat, compute the metrics, and
   report the mean and spread over repeats.

Everything goes into one MLflow run: the figures as metrics, a table artifact,
and per target a reliability diagram, per-class F1 bars and a confusion
matrix. :func:`format_report` prints the same figures, followed by any
sections registered with :func:`register_section`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    mean_absolute_error,
    median_absolute_error,
    precision_recall_fscore_support,
    roc_auc_score,
)
from sklearn.model_selection import RepeatedStratifiedKFold, TimeSeriesSplit
from tqdm.auto import tqdm

from features.inputs import TOKENS, FeatureSpec, feature_frame, ticket_text
from features.loading import LoadResult, load_tickets
from features.mapping import Mapping, TargetSpec
from features.pipeline import TOKEN_PATTERN
from models.calibration import (
    ECE_BINS,
    ece_floor,
    fit_calibrated,
    label_index,
    reliability_from_confidence,
)
from models.estimators import DEFAULT_CLASS_WEIGHT, DEFAULT_PARAMS, target_fit_options
from models.thresholds import REPORTED_PRECISIONS, answered_mask, class_thresholds

from .train import _labelled, intake_spec, target_labels, tokenize_texts

logger = logging.getLogger(__name__)

TIME_SPLIT_ROWS = 5000
DEFAULT_FOLDS = 5
DEFAULT_REPEATS = 2
MODEL = "model"
MAJORITY = "majority"
TFIDF_LR = "tfidf_lr"
SYSTEMS = (MODEL, TFIDF_LR, MAJORITY)
# Settings of the TF-IDF baseline, fixed before any comparison was run:
# scikit-learn's defaults apart from the token pattern, sublinear term
# frequency, word bigrams and enough iterations to converge.
TFIDF_OPTIONS = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}
LOGISTIC_OPTIONS = {"C": 1.0, "max_iter": 2000}


@dataclass
class Variant:
    """The model settings being evaluated: LightGBM parameters, features, class weights.

    They apply to every target, except where a target's ``model`` table in the
    mapping sets a key of its own (see :func:`models.estimators.target_fit_options`).
    """

    params: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    class_weight: float | None = DEFAULT_CLASS_WEIGHT

    @classmethod
    def from_file(cls, path: str | Path) -> Variant:
        """Read a variant from JSON: ``{"params": {...}, "features": {...}, "class_weight": 1.0}``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        unknown = sorted(set(data) - {"params", "features", "class_weight"})
        if unknown:
            raise ValueError(
                f"variant file {path} has unknown keys {unknown}; expected params, "
                "features and class_weight"
            )
        features = dict(data.get("features", {}))
        if features.get("char_ngrams") is not None:
            features["char_ngrams"] = tuple(features["char_ngrams"])
        return cls(
            params=dict(data.get("params", {})),
            features=features,
            class_weight=data.get("class_weight", DEFAULT_CLASS_WEIGHT),
        )

    def fit_options(self, target: TargetSpec) -> dict[str, Any]:
        """Keyword arguments of ``fit_target`` for ``target``: its mapping settings win."""
        return target_fit_options(
            target.model, self.params, self.features, self.class_weight
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "features": self.features,
            "class_weight": self.class_weight,
        }


@dataclass
class Fold:
    """One train/test split, in positions of the loaded tickets."""

    repeat: int
    train: np.ndarray
    test: np.ndarray


@dataclass
class SystemScores:
    """Pooled test-fold predictions of one system for one target and repeat."""

    rows: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray
    second: np.ndarray | None = None
    third: np.ndarray | None = None
    confidence: np.ndarray | None = None
    true_probability: np.ndarray | None = None
    positive_probability: np.ndarray | None = None
    raw_confidence: np.ndarray | None = None
    raw_true_probability: np.ndarray | None = None
    answered: dict[float, np.ndarray] = field(default_factory=dict)
    temperatures: list[float] = field(default_factory=list)


@dataclass
class TargetEvaluation:
    """The figures of one target: per system the mean and standard deviation over repeats."""

    name: str
    kind: str
    rows: int
    labels: list[str]
    figures: dict[str, dict[str, float]]
    spread: dict[str, dict[str, float]]
    per_class: dict[str, dict[str, dict[str, float]]]
    pooled: dict[str, SystemScores]

    def figure(self, system: str, metric: str) -> float:
        return self.figures.get(system, {}).get(metric, float("nan"))


@dataclass
class Section:
    """An extra block of the printed evaluation, such as retrieval recall."""

    title: str
    lines: list[str]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluationContext:
    """Inputs of an extra section: the data, the model inputs and the folds of every target."""

    load: LoadResult
    spec: FeatureSpec
    frame: pd.DataFrame
    folds: dict[str, list[Fold]]
    seed: int
    targets: dict[str, TargetEvaluation]


SectionBuilder = Callable[[EvaluationContext], "Section | None"]
_SECTIONS: list[SectionBuilder] = []


def register_section(builder: SectionBuilder) -> SectionBuilder:
    """Add a section to every evaluation; its metrics are logged to the same MLflow run.

    Usable as a decorator. A builder returns None when it has nothing to
    report about the data at hand. Sections are printed after the target
    tables, in the order they were registered.
    """
    if builder not in _SECTIONS:
        _SECTIONS.append(builder)
    return builder


def unregister_section(builder: SectionBuilder) -> None:
    """Remove a section added with :func:`register_section`; unknown builders are ignored."""
    if builder in _SECTIONS:
        _SECTIONS.remove(builder)


@dataclass
class EvaluationResult:
    run_id: str | None
    data: str
    mode: str
    strategy: str
    folds: int
    repeats: int
    seed: int
    rows: int
    variant: Variant
    targets: dict[str, TargetEvaluation]
    sections: list[Section]
    seconds: float
    artifacts_dir: Path
    ticket_ids: np.ndarray | None = None
    mapping_source: str = ""


# Splits ----------------------------------------------------------------------


def choose_strategy(rows: int, strategy: str = "auto") -> str:
    """Return ``stratified`` under :data:`TIME_SPLIT_ROWS` labelled rows, ``time`` from there."""
    if strategy not in ("auto", "stratified", "time"):
        raise ValueError(
            f"split strategy must be auto, stratified or time, got {strategy!r}"
        )
    if strategy != "auto":
        return strategy
    return "stratified" if rows < TIME_SPLIT_ROWS else "time"


def make_folds(
    positions: np.ndarray,
    strata: np.ndarray,
    created_at: np.ndarray,
    strategy: str,
    folds: int,
    repeats: int,
    seed: int,
) -> list[Fold]:
    """Split the labelled ``positions`` into folds; ``strata`` are their labels."""
    if strategy == "time":
        order = np.argsort(created_at, kind="stable")
        splitter = TimeSeriesSplit(n_splits=folds)
        return [
            Fold(0, positions[order[train]], positions[order[test]])
            for train, test in splitter.split(order)
        ]
    counts = pd.Series(strata).value_counts()
    if counts.max() < folds:
        raise ValueError(
            f"{folds}-fold stratified cross-validation needs a class with at least "
            f"{folds} rows; the largest has {counts.max()}; use fewer folds"
        )
    splitter = RepeatedStratifiedKFold(
        n_splits=folds, n_repeats=repeats, random_state=seed
    )
    out = []
    for index, (train, test) in enumerate(splitter.split(positions, strata)):
        out.append(Fold(index // folds, positions[train], positions[test]))
    return out


# Systems ---------------------------------------------------------------------


def majority_probabilities(y_train: np.ndarray, labels: list, rows: int) -> np.ndarray:
    """Predict the training-fold class frequencies for every test row (argmax: the majority)."""
    counts = pd.Series(y_train).value_counts()
    prior = np.array([counts.get(label, 0) for label in labels], dtype=float)
    return np.tile(prior / prior.sum(), (rows, 1))


def tfidf_logistic(tokens_train, y_train, tokens_test) -> tuple[np.ndarray, list]:
    """Fit TF-IDF of the jieba token strings with logistic regression; test probabilities."""
    vectorizer = TfidfVectorizer(
        token_pattern=TOKEN_PATTERN, lowercase=False, **TFIDF_OPTIONS
    )
    train = vectorizer.fit_transform(tokens_train)
    model = LogisticRegression(**LOGISTIC_OPTIONS).fit(train, y_train)
    return model.predict_proba(vectorizer.transform(tokens_test)), list(model.classes_)


def tfidf_ridge(tokens_train, y_train, tokens_test) -> np.ndarray:
    """Fit TF-IDF with ridge regression on log1p of a regression target; test predictions."""
    vectorizer = TfidfVectorizer(
        token_pattern=TOKEN_PATTERN, lowercase=False, **TFIDF_OPTIONS
    )
    train = vectorizer.fit_transform(tokens_train)
    model = Ridge(alpha=1.0).fit(train, np.log1p(np.clip(y_train, 0, None)))
    return np.expm1(model.predict(vectorizer.transform(tokens_test)))


def as_labels(values: np.ndarray, kind: str) -> np.ndarray:
    return values.astype(bool).astype(str) if kind == "binary" else values.astype(str)


def _pool(
    scores: dict[str, list[dict[str, Any]]], system: str, part: dict[str, Any]
) -> None:
    scores.setdefault(system, []).append(part)


def prediction_part(
    rows: np.ndarray, truth: np.ndarray, probabilities: np.ndarray, labels: list
) -> dict[str, Any]:
    """Collect one system's per-row outputs on a test fold, independent of its label order."""
    labels = [str(label) for label in labels]
    order = np.argsort(-probabilities, axis=1, kind="stable")
    labels_array = np.asarray(labels, dtype=object)
    index = label_index(truth, labels)
    true_probability = np.where(
        index >= 0, probabilities[np.arange(len(rows)), np.maximum(index, 0)], 0.0
    )
    part = {
        "rows": rows,
        "truth": truth,
        "predicted": labels_array[order[:, 0]],
        "second": labels_array[order[:, min(1, probabilities.shape[1] - 1)]],
        "third": labels_array[order[:, min(2, probabilities.shape[1] - 1)]],
        "confidence": probabilities.max(axis=1),
        "true_probability": true_probability,
    }
    if "True" in labels and len(labels) == 2:
        part["positive_probability"] = probabilities[:, labels.index("True")]
    return part


def fold_labels(
    target: TargetSpec, fold: Fold, tickets: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Return the fitting labels of the training rows and the label strings of the test rows.

    Rare labels are merged by their counts in this fold's training rows only.
    """
    train_mask = np.zeros(len(tickets), dtype=bool)
    train_mask[fold.train] = True
    y_all, _ = target_labels(tickets, target, train_mask)
    fit_labels = y_all[fold.train].astype(bool if target.kind == "binary" else str)
    return fit_labels, as_labels(y_all[fold.test], target.kind)


def model_part(
    target: TargetSpec,
    fold: Fold,
    tickets: pd.DataFrame,
    frame: pd.DataFrame,
    spec: FeatureSpec,
    variant: Variant,
    seed: int,
    n_jobs: int,
) -> dict[str, Any]:
    """Fit and calibrate the model on a fold's training rows; its outputs on the test rows."""
    fit_labels, y_test = fold_labels(target, fold, tickets)
    model, calibration = fit_calibrated(
        target.name,
        target.kind,
        frame.iloc[fold.train],
        fit_labels,
        spec,
        seed=seed,
        n_jobs=n_jobs,
        **variant.fit_options(target),
    )
    raw = model.predict_raw(frame.iloc[fold.test])
    calibrated = model.predict_scores(frame.iloc[fold.test])
    part = prediction_part(fold.test, y_test, calibrated, model.labels)
    raw_part = prediction_part(fold.test, y_test, raw, model.labels)
    part["raw_confidence"] = raw_part["confidence"]
    part["raw_true_probability"] = raw_part["true_probability"]
    part["temperature"] = calibration.shared_temperature
    # Thresholds come from the calibration rows, never from the test fold.
    for precision in REPORTED_PRECISIONS:
        thresholds = class_thresholds(
            calibration.probabilities, calibration.truth, model.labels, precision
        )
        part[f"answered@{precision}"] = answered_mask(
            calibrated, model.labels, thresholds
        )
    return part


def _fold_classification(
    target: TargetSpec,
    fold: Fold,
    tickets: pd.DataFrame,
    frame: pd.DataFrame,
    spec: FeatureSpec,
    variant: Variant,
    seed: int,
    n_jobs: int,
) -> dict[str, dict[str, Any]]:
    part = model_part(target, fold, tickets, frame, spec, variant, seed, n_jobs)
    fit_labels, y_test = fold_labels(target, fold, tickets)
    y_train = as_labels(fit_labels, target.kind)
    labels = sorted(set(y_train.tolist()))
    tokens = frame[TOKENS].to_numpy(dtype=object)
    lr_probabilities, lr_labels = tfidf_logistic(
        tokens[fold.train], y_train, tokens[fold.test]
    )
    return {
        MODEL: part,
        TFIDF_LR: prediction_part(fold.test, y_test, lr_probabilities, lr_labels),
        MAJORITY: prediction_part(
            fold.test,
            y_test,
            majority_probabilities(y_train, labels, len(fold.test)),
            labels,
        ),
    }


def _fold_regression(
    target: TargetSpec,
    fold: Fold,
    tickets: pd.DataFrame,
    frame: pd.DataFrame,
    spec: FeatureSpec,
    variant: Variant,
    seed: int,
    n_jobs: int,
) -> dict[str, dict[str, Any]]:
    values, _ = target_labels(tickets, target, np.ones(len(tickets), dtype=bool))
    values = values.astype(float)
    model, _ = fit_calibrated(
        target.name,
        "regression",
        frame.iloc[fold.train],
        values[fold.train],
        spec,
        seed=seed,
        n_jobs=n_jobs,
        **variant.fit_options(target),
    )
    tokens = frame[TOKENS].to_numpy(dtype=object)
    truth = values[fold.test]
    median = float(np.median(values[fold.train]))
    return {
        MODEL: {
            "rows": fold.test,
            "truth": truth,
            "predicted": model.predict_scores(frame.iloc[fold.test]),
        },
        TFIDF_LR: {
            "rows": fold.test,
            "truth": truth,
            "predicted": tfidf_ridge(
                tokens[fold.train], values[fold.train], tokens[fold.test]
            ),
        },
        MAJORITY: {
            "rows": fold.test,
            "truth": truth,
            "predicted": np.full(len(fold.test), median),
        },
    }


# Metrics ---------------------------------------------------------------------


def pool_parts(parts: list[dict[str, Any]]) -> SystemScores:
    joined: dict[str, Any] = {}
    for key in parts[0]:
        if key == "temperature":
            continue
        joined[key] = np.concatenate([p[key] for p in parts])
    answered = {
        float(k.split("@")[1]): v
        for k, v in joined.items()
        if k.startswith("answered@")
    }
    for key in [k for k in joined if k.startswith("answered@")]:
        del joined[key]
    scores = SystemScores(**joined, answered=answered)
    scores.temperatures = [p["temperature"] for p in parts if "temperature" in p]
    return scores


def classification_figures(
    scores: SystemScores, labels: list[str]
) -> tuple[dict, dict]:
    """Compute macro-F1, accuracy, top-2 and top-3, log loss, ECE and more from pooled predictions."""
    truth, predicted = scores.truth, scores.predicted
    present = [label for label in labels if label in set(truth.tolist())]
    correct = predicted == truth
    figures = {
        "macro_f1": float(
            f1_score(truth, predicted, labels=present, average="macro", zero_division=0)
        ),
        "accuracy": float(correct.mean()),
        "top2_accuracy": float((correct | (scores.second == truth)).mean()),
        "top3_accuracy": float(
            (correct | (scores.second == truth) | (scores.third == truth)).mean()
        ),
        "log_loss": float(
            -np.mean(np.log(np.clip(scores.true_probability, 1e-12, 1.0)))
        ),
        "ece": reliability_from_confidence(scores.confidence, correct, ECE_BINS).ece,
        "ece_floor": ece_floor(scores.confidence),
    }
    if scores.raw_confidence is not None:
        figures["ece_uncalibrated"] = reliability_from_confidence(
            scores.raw_confidence, correct, ECE_BINS
        ).ece
        figures["log_loss_uncalibrated"] = float(
            -np.mean(np.log(np.clip(scores.raw_true_probability, 1e-12, 1.0)))
        )
    if scores.temperatures:
        figures["temperature"] = float(np.mean(scores.temperatures))
    for precision, answered in scores.answered.items():
        figures[f"coverage_at_{precision:.2f}"] = float(answered.mean())
        figures[f"precision_at_{precision:.2f}"] = (
            float(correct[answered].mean()) if answered.any() else float("nan")
        )
    if scores.positive_probability is not None and len(set(truth.tolist())) == 2:
        positive = (truth == "True").astype(int)
        figures["roc_auc"] = float(roc_auc_score(positive, scores.positive_probability))
        figures["pr_auc"] = float(
            average_precision_score(positive, scores.positive_probability)
        )
        figures["brier"] = float(np.mean((scores.positive_probability - positive) ** 2))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    per_class = {
        label: {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }
    return figures, per_class


def regression_figures(scores: SystemScores) -> dict[str, float]:
    return {
        "mae": float(mean_absolute_error(scores.truth, scores.predicted)),
        "median_ae": float(median_absolute_error(scores.truth, scores.predicted)),
    }


def _mean(values: list[float]) -> float:
    """Average over repeats, ignoring NaN (the precision of a repeat without answers)."""
    known = [v for v in values if np.isfinite(v)]
    return float(np.mean(known)) if known else float("nan")


def _spread(values: list[float]) -> float:
    known = [v for v in values if np.isfinite(v)]
    return float(np.std(known)) if known else float("nan")


def _summarise(
    target: TargetSpec,
    parts: dict[str, list[dict[str, Any]]],
    repeats: list[int],
    folds: list[Fold],
) -> TargetEvaluation:
    figures: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    per_class: dict[str, dict[str, dict[str, float]]] = {}
    pooled: dict[str, SystemScores] = {}
    labels: list[str] = []
    if target.kind != "regression":
        labels = sorted({str(v) for p in parts[MODEL] for v in p["truth"]})
    for system, system_parts in parts.items():
        by_repeat = []
        for repeat in repeats:
            chosen = [p for p, f in zip(system_parts, folds) if f.repeat == repeat]
            scores = pool_parts(chosen)
            if target.kind == "regression":
                by_repeat.append((regression_figures(scores), {}))
            else:
                by_repeat.append(classification_figures(scores, labels))
            if repeat == repeats[0]:
                pooled[system] = scores
        keys = by_repeat[0][0].keys()
        figures[system] = {k: _mean([r[0][k] for r in by_repeat]) for k in keys}
        spread[system] = {k: _spread([r[0][k] for r in by_repeat]) for k in keys}
        if target.kind != "regression":
            per_class[system] = {
                label: {
                    key: float(np.mean([r[1][label][key] for r in by_repeat]))
                    for key in ("precision", "recall", "f1", "support")
                }
                for label in labels
            }
    rows = len(pooled[MODEL].rows)
    return TargetEvaluation(
        target.name, target.kind, rows, labels, figures, spread, per_class, pooled
    )


# The protocol ----------------------------------------------------------------


def evaluate(
    data: str | Path,
    mapping: Mapping | str | Path | None = None,
    *,
    folds: int = DEFAULT_FOLDS,
    repeats: int = DEFAULT_REPEATS,
    mode: str = "intake",
    targets: list[str] | None = None,
    strategy: str = "auto",
    seed: int = 0,
    n_jobs: int = 1,
    variant: Variant | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: bool = True,
    load: LoadResult | None = None,
    log_to_mlflow: bool = True,
    sections: list[SectionBuilder] | None = None,
) -> EvaluationResult:
    """Cross-validate every declared target (or ``targets``) against the two baselines.

    ``mode`` is ``intake`` (fields known at registration) or ``closure`` (adds
    the closure notes). The figures are the mean over ``repeats`` repetitions
    of ``folds``-fold cross-validation; time-based splits are not repeated.
    ``sections`` are built after the registered ones, for this call only.
    """
    import mlflow

    from . import registry

    if mode not in ("intake", "closure"):
        raise ValueError(f"mode must be intake or closure, got {mode!r}")
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    started = time.perf_counter()
    variant = variant or Variant()
    load = load or load_tickets(data, mapping)
    tickets = load.tickets
    chosen = _chosen_targets(load.mapping, targets)
    spec = intake_spec(load.mapping, mode)
    texts = [
        ticket_text(r, spec) for r in tickets[list(spec.text_fields)].to_dict("records")
    ]
    frame = feature_frame(
        tickets, spec, tokens=tokenize_texts(texts, progress=progress)
    )
    created = tickets["created_at"].to_numpy()

    artifacts = Path(tempfile.mkdtemp(prefix="triage-evaluate-"))
    results: dict[str, TargetEvaluation] = {}
    all_folds: dict[str, list[Fold]] = {}
    run_id = None
    context_manager = (
        _mlflow_run(registry, mlflow, tracking_uri, experiment, data, mode)
        if log_to_mlflow
        else _no_run()
    )
    with context_manager as run:
        run_id = run.info.run_id if run is not None else None
        used_strategy = "stratified"
        for target in chosen:
            labelled = np.flatnonzero(_labelled(tickets, target))
            if len(labelled) < 2 * folds:
                logger.warning(
                    "target %s: %d labelled rows, fewer than 2 per fold; skipped",
                    target.name,
                    len(labelled),
                )
                continue
            used_strategy = choose_strategy(len(labelled), strategy)
            strata = strata_for(tickets, target, labelled)
            target_folds = make_folds(
                labelled,
                strata,
                created[labelled],
                used_strategy,
                folds,
                repeats if used_strategy == "stratified" else 1,
                seed,
            )
            all_folds[target.name] = target_folds
            parts: dict[str, list[dict[str, Any]]] = {}
            step = (
                _fold_regression
                if target.kind == "regression"
                else _fold_classification
            )
            for fold in tqdm(
                target_folds,
                desc=f"evaluate {target.name}",
                unit="fold",
                disable=not progress,
            ):
                for system, part in step(
                    target, fold, tickets, frame, spec, variant, seed, n_jobs
                ).items():
                    _pool(parts, system, part)
            repeats_seen = sorted({f.repeat for f in target_folds})
            results[target.name] = _summarise(target, parts, repeats_seen, target_folds)
            logger.info(
                "target %s: model macro-F1 %.3f, TF-IDF+LR %.3f",
                target.name,
                results[target.name].figure(MODEL, "macro_f1"),
                results[target.name].figure(TFIDF_LR, "macro_f1"),
            )
        context = EvaluationContext(load, spec, frame, all_folds, seed, results)
        builders = [*_SECTIONS, *(sections or [])]
        built = [s for s in (builder(context) for builder in builders) if s is not None]
        result = EvaluationResult(
            run_id=run_id,
            data=str(data),
            mode=mode,
            strategy=used_strategy,
            folds=folds,
            repeats=repeats if used_strategy == "stratified" else 1,
            seed=seed,
            rows=len(tickets),
            variant=variant,
            targets=results,
            sections=built,
            seconds=time.perf_counter() - started,
            artifacts_dir=artifacts,
            ticket_ids=tickets["ticket_id"].to_numpy(dtype=object),
            mapping_source=load.mapping.source,
        )
        write_artifacts(result, artifacts)
        if run is not None:
            log_result(result, artifacts)
    return result


class _no_run:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _mlflow_run(registry, mlflow, tracking_uri, experiment, data, mode):
    registry.setup_tracking(tracking_uri, experiment or registry.DEFAULT_EXPERIMENT)
    nested = mlflow.active_run() is not None
    return mlflow.start_run(
        run_name=f"evaluate {Path(str(data)).name} {mode}", nested=nested
    )


def _chosen_targets(mapping: Mapping, names: list[str] | None) -> list[TargetSpec]:
    if not names:
        return list(mapping.targets.values())
    unknown = [n for n in names if n not in mapping.targets]
    if unknown:
        raise ValueError(
            f"targets {unknown} are not declared by mapping {mapping.name}; "
            f"declared targets: {', '.join(mapping.targets)}"
        )
    return [mapping.targets[n] for n in names]


def strata_for(
    tickets: pd.DataFrame, target: TargetSpec, labelled: np.ndarray
) -> np.ndarray:
    """Return the labels to stratify on; regression targets are stratified by quartile."""
    if target.kind == "regression":
        values = pd.to_numeric(tickets[target.field].iloc[labelled], errors="coerce")
        return pd.qcut(values.rank(method="first"), 4, labels=False).to_numpy()
    mask = np.zeros(len(tickets), dtype=bool)
    mask[labelled] = True
    y, _ = target_labels(tickets, target, mask)
    return as_labels(y[labelled], target.kind)


# Output ----------------------------------------------------------------------

CLASSIFIER_COLUMNS = (
    ("macro_f1", "macro-F1"),
    ("accuracy", "accuracy"),
    ("top2_accuracy", "top-2"),
    ("top3_accuracy", "top-3"),
    ("log_loss", "log loss"),
    ("ece", "ECE"),
)
BINARY_COLUMNS = (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("brier", "Brier"))
REGRESSION_COLUMNS = (("mae", "MAE"), ("median_ae", "median AE"))


def _columns(evaluation: TargetEvaluation):
    if evaluation.kind == "regression":
        return REGRESSION_COLUMNS
    if evaluation.kind == "binary":
        return CLASSIFIER_COLUMNS + BINARY_COLUMNS
    return CLASSIFIER_COLUMNS


def figures_table(result: EvaluationResult) -> pd.DataFrame:
    """Tabulate mean and standard deviation over repeats, per target, system and metric."""
    rows = []
    for evaluation in result.targets.values():
        for system, figures in evaluation.figures.items():
            for metric, value in figures.items():
                rows.append(
                    {
                        "target": evaluation.name,
                        "mode": result.mode,
                        "system": system,
                        "metric": metric,
                        "mean": value,
                        "std": evaluation.spread[system][metric],
                    }
                )
    return pd.DataFrame(
        rows, columns=["target", "mode", "system", "metric", "mean", "std"]
    )


def per_class_table(result: EvaluationResult) -> pd.DataFrame:
    rows = []
    for evaluation in result.targets.values():
        for system, classes in evaluation.per_class.items():
            for label, values in classes.items():
                rows.append(
                    {
                        "target": evaluation.name,
                        "system": system,
                        "label": label,
                        **values,
                    }
                )
    return pd.DataFrame(
        rows,
        columns=["target", "system", "label", "precision", "recall", "f1", "support"],
    )


def predictions_table(result: EvaluationResult) -> pd.DataFrame:
    """Tabulate the test-fold predictions of the first repeat, per target, system and ticket.

    Tickets are named by id and position in the loaded export, without their
    text, so the table can be shared where the tickets cannot.
    """
    frames = []
    for evaluation in result.targets.values():
        if evaluation.kind == "regression":
            continue
        for system, scores in evaluation.pooled.items():
            ids = (
                result.ticket_ids[scores.rows]
                if result.ticket_ids is not None
                else scores.rows
            )
            frames.append(
                pd.DataFrame(
                    {
                        "target": evaluation.name,
                        "system": system,
                        "position": scores.rows,
                        "ticket_id": ids,
                        "truth": scores.truth,
                        "predicted": scores.predicted,
                        "second": scores.second,
                        "confidence": scores.confidence,
                        "true_probability": scores.true_probability,
                    }
                )
            )
    columns = [
        "target",
        "system",
        "position",
        "ticket_id",
        "truth",
        "predicted",
        "second",
        "confidence",
        "true_probability",
    ]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=columns)
    )


def format_report(result: EvaluationResult) -> str:
    """Format the evaluation: a table per target, per-class figures, coverage, extra sections."""
    split = (
        f"{result.folds}-fold stratified x {result.repeats}"
        if result.strategy == "stratified"
        else f"{result.folds} time-based folds"
    )
    title = (
        f"evaluation of {Path(result.data).name}, {result.mode} mode: {result.rows} tickets, "
        f"{split}, seed {result.seed}"
    )
    lines = [title]
    for evaluation in result.targets.values():
        lines += [""] + _target_lines(evaluation)
    for section in result.sections:
        lines += ["", f"{section.title}", *[f"  {line}" for line in section.lines]]
    lines += ["", f"{result.seconds:.0f} s; MLflow run {result.run_id}"]
    return "\n".join(lines)


def _target_lines(evaluation: TargetEvaluation) -> list[str]:
    columns = _columns(evaluation)
    header = f"  {'system':<10}" + "".join(f"{title:>10}" for _, title in columns)
    lines = [f"{evaluation.name} ({evaluation.kind}, {evaluation.rows} rows)", header]
    for system in SYSTEMS:
        figures = evaluation.figures.get(system)
        if figures is None:
            continue
        cells = "".join(
            f"{figures.get(key, float('nan')):>10.3f}" for key, _ in columns
        )
        lines.append(f"  {system:<10}{cells}")
    if evaluation.kind == "regression":
        baseline = evaluation.figure(MAJORITY, "mae")
        change = evaluation.figure(MODEL, "mae") / baseline - 1 if baseline else float("nan")
        lines.append(f"  model vs majority MAE: {change:+.1%}")
        return lines
    model = evaluation.figures[MODEL]
    gain = model["macro_f1"] - evaluation.figure(TFIDF_LR, "macro_f1")
    lines.append(f"  model vs tfidf_lr macro-F1: {gain:+.3f}")
    top3_gain = model["top3_accuracy"] - evaluation.figure(MAJORITY, "top3_accuracy")
    lines.append(f"  model vs majority top-3: {top3_gain:+.3f}")
    lines.append(
        f"  ECE before calibration {model.get('ece_uncalibrated', float('nan')):.3f}, "
        f"after {model['ece']:.3f}; a perfectly calibrated model would show "
        f"{model['ece_floor']:.3f} on these rows (mean shared temperature "
        f"{model.get('temperature', float('nan')):.2f})"
    )
    answered = [
        f"{model[f'coverage_at_{p:.2f}']:.0%} at {p:.2f} (achieved "
        f"{model[f'precision_at_{p:.2f}']:.2f})"
        for p in REPORTED_PRECISIONS
        if f"coverage_at_{p:.2f}" in model
    ]
    if answered:
        lines.append("  answered without review: " + ", ".join(answered))
    lines.append(
        f"  {'class':<14}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}"
    )
    for label, values in evaluation.per_class[MODEL].items():
        lines.append(
            f"  {label[:14]:<14}{values['precision']:>10.3f}{values['recall']:>10.3f}"
            f"{values['f1']:>10.3f}{values['support']:>10.0f}"
        )
    return lines


def write_artifacts(result: EvaluationResult, folder: Path) -> None:
    """Write the tables, the printed report and the plots into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    figures_table(result).to_csv(folder / "figures.csv", index=False)
    per_class_table(result).to_csv(folder / "per_class.csv", index=False)
    predictions_table(result).to_csv(folder / "predictions.csv", index=False)
    (folder / "report.txt").write_text(format_report(result) + "\n", encoding="utf-8")
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    for evaluation in result.targets.values():
        if evaluation.kind == "regression":
            continue
        plot_reliability(evaluation, plots / f"reliability_{evaluation.name}.png")
        plot_class_f1(evaluation, plots / f"f1_by_class_{evaluation.name}.png")
        plot_confusion_counts(evaluation, plots / f"confusion_{evaluation.name}.png")


def log_result(result: EvaluationResult, folder: Path) -> None:
    """Log parameters, every figure and the artifacts to the active MLflow run."""
    import mlflow

    from .train import _metric_key

    mlflow.log_params(
        {
            "data": result.data,
            "mapping": result.mapping_source,
            "mode": result.mode,
            "strategy": result.strategy,
            "folds": result.folds,
            "repeats": result.repeats,
            "seed": result.seed,
            "class_weight": result.variant.class_weight,
            "features": json.dumps(result.variant.features, default=list),
            **{
                f"lgbm.{k}": v
                for k, v in {**DEFAULT_PARAMS, **result.variant.params}.items()
            },
        }
    )
    metrics = {}
    for evaluation in result.targets.values():
        for system, figures in evaluation.figures.items():
            for metric, value in figures.items():
                if np.isfinite(value):
                    metrics[_metric_key(f"{evaluation.name}.{system}.{metric}")] = value
        for label, values in evaluation.per_class.get(MODEL, {}).items():
            for key in ("precision", "recall", "f1"):
                metrics[_metric_key(f"{evaluation.name}.model.{key}.{label}")] = values[
                    key
                ]
    for section in result.sections:
        metrics.update({_metric_key(k): v for k, v in section.metrics.items()})
    mlflow.log_metrics(metrics)
    mlflow.log_metric("evaluate_seconds", result.seconds)
    mlflow.log_artifacts(str(folder), "evaluation")


# Plots -----------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fonts import use_cjk_font

    use_cjk_font()
    return plt


def plot_reliability(evaluation: TargetEvaluation, path: Path) -> Path:
    """Plot the reliability diagram of the first repeat: the model before and after calibration."""
    plt = _pyplot()
    model = evaluation.pooled[MODEL]
    correct = model.predicted == model.truth
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    curves = [("model, calibrated", model.confidence, "tab:blue")]
    if model.raw_confidence is not None:
        curves.append(("model, uncalibrated", model.raw_confidence, "tab:orange"))
    lr = evaluation.pooled.get(TFIDF_LR)
    if lr is not None:
        curves.append(("tfidf_lr", lr.confidence, "tab:green"))
    for label, confidence, colour in curves:
        hits = correct if label.startswith("model") else lr.predicted == lr.truth
        bins = reliability_from_confidence(confidence, hits, ECE_BINS)
        shown = bins.counts > 0
        ax.plot(
            bins.confidence[shown],
            bins.accuracy[shown],
            marker="o",
            color=colour,
            label=f"{label} (ECE {bins.ece:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-class probability")
    ax.set_ylabel("share correct")
    ax.set_title(f"{evaluation.name}: reliability ({ECE_BINS} bins)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_class_f1(evaluation: TargetEvaluation, path: Path) -> Path:
    """Plot the per-class F1 of the three systems side by side."""
    plt = _pyplot()
    labels = evaluation.labels
    width = 0.8 / len(SYSTEMS)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(labels) + 3), 4))
    for offset, system in enumerate(SYSTEMS):
        classes = evaluation.per_class.get(system, {})
        values = [classes.get(label, {}).get("f1", 0.0) for label in labels]
        positions = np.arange(len(labels)) + (offset - 1) * width
        ax.bar(positions, values, width=width, label=system)
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=45 if len(labels) > 6 else 0,
        ha="right" if len(labels) > 6 else "center",
        fontsize=8,
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(f"{evaluation.name}: F1 by class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion_counts(evaluation: TargetEvaluation, path: Path) -> Path:
    """Plot the confusion matrix of the model's test-fold predictions (first repeat)."""
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()
    model = evaluation.pooled[MODEL]
    labels = evaluation.labels
    matrix = confusion_matrix(model.truth, model.predicted, labels=labels)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{evaluation.name}: confusion matrix")
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7
                    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "DEFAULT_FOLDS",
    "DEFAULT_REPEATS",
    "SYSTEMS",
    "TIME_SPLIT_ROWS",
    "EvaluationContext",
    "EvaluationResult",
    "Fold",
    "Section",
    "TargetEvaluation",
    "Variant",
    "choose_strategy",
    "evaluate",
    "figures_table",
    "format_report",
    "make_folds",
    "register_section",
    "unregister_section",
]
