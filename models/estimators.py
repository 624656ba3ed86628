"""LightGBM pipelines per target kind."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.pipeline import Pipeline

from features.inputs import FeatureSpec
from features.pipeline import build_feature_pipeline

# Chosen by cross-validation on the ICT records (docs/model.md lists the
# variants): an Optuna search, then a lower learning rate. A model this lightly
# fitted separates the rare classes better than longer ones do, and stays
# calibrated after temperature scaling where longer ones do not.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 100,
    "learning_rate": 0.025,
    "num_leaves": 16,
    "min_child_samples": 4,
    "colsample_bytree": 0.6,
    "reg_lambda": 0.06,
    "subsample": 1.0,
    "max_bin": 63,
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}
# Exponent of the "balanced" class weights n / (k * count): 1 is fully
# balanced, 0 is unweighted.
DEFAULT_CLASS_WEIGHT = 1.0
# Regressions are fitted on log1p of the target. The L1 objective estimates
# the conditional median there, which is also the median in the target's units
# and so the value with the lowest absolute error. ``params`` may replace it.
REGRESSION_OBJECTIVE = "regression_l1"
# Regression settings on top of DEFAULT_PARAMS. Under the L1 objective a tree
# moves each leaf by the learning rate times the leaf's median residual, so
# 100 trees at 0.025 stop far short of the conditional median. The number of
# trees is chosen per fit by :func:`select_rounds` unless ``params`` fixes it.
REGRESSION_PARAMS: dict[str, Any] = {"learning_rate": 0.1}
ROUND_CANDIDATES = (100, 200, 300, 400, 600, 800, 1000, 1500)
ROUND_SELECTION_FOLDS = 3
# Fewer training rows than this: no inner folds, the smallest candidate is used.
ROUND_SELECTION_MIN_ROWS = 30
# Smallest probability taken into the logarithm of temperature scaling.
PROBABILITY_FLOOR = 1e-12


def apply_class_temperatures(probabilities: np.ndarray, temperatures) -> np.ndarray:
    """Rescale each row by the temperature of its top class: ``softmax(log(p) / T[argmax p])``.

    One temperature per row never changes which class ranks first. The ONNX
    graph does the same in float32 (see :func:`models.calibration.add_calibration`).
    """
    temperatures = np.asarray(temperatures, dtype=np.float64)
    if not len(probabilities):
        return probabilities
    logits = np.log(np.clip(probabilities, PROBABILITY_FLOOR, 1.0))
    logits = logits / temperatures[probabilities.argmax(axis=1)][:, None]
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


@dataclass
class TargetModel:
    """A fitted pipeline for one target and what is needed to serve it.

    ``temperatures`` (one per label, see :mod:`models.calibration`) come from
    held-out rows; a classifier fitted without them returns the pipeline's
    probabilities unchanged.
    """

    name: str
    kind: str
    pipeline: Pipeline
    labels: list[Any] = field(default_factory=list)
    transform: str | None = None
    temperatures: list[float] | None = None
    class_thresholds: dict[str, float] = field(default_factory=dict)

    def predict_raw(self, frame, matrix=None) -> np.ndarray:
        """The pipeline's own probabilities (classifiers) or predictions in target units.

        ``matrix`` contains ``frame``'s rows already through the feature pipeline
        (see :class:`FittedFeatures`); then only the estimator runs.
        """
        step = self.pipeline if matrix is None else self.pipeline[-1]
        inputs = frame if matrix is None else matrix
        if self.kind == "regression":
            raw = step.predict(inputs)
            return np.expm1(raw) if self.transform == "log1p" else raw
        return step.predict_proba(inputs)

    def predict_scores(self, frame, matrix=None) -> np.ndarray:
        """What the exported graph returns: calibrated probabilities, or regression values."""
        scores = self.predict_raw(frame, matrix)
        if self.kind == "regression" or self.temperatures is None:
            return scores
        return apply_class_temperatures(scores, self.temperatures)


@dataclass
class FittedFeatures:
    """A fitted feature pipeline and its output rows, shared by the targets of a large export.

    Fitting the vectorisers once and slicing one sparse matrix costs far less
    than a pipeline fit per target when the export has many tickets.
    """

    transformer: Any
    matrix: Any

    def take(self, rows) -> FittedFeatures:
        """Return the same pipeline with the matrix rows ``rows`` (positions or a boolean mask)."""
        return FittedFeatures(self.transformer, self.matrix[rows])


def class_weights(y, power: float = DEFAULT_CLASS_WEIGHT) -> dict[Any, float]:
    """Weights ``(n / (k * count)) ** power`` per label, so rare classes count more."""
    counts = Counter(np.asarray(y).tolist())
    n, k = sum(counts.values()), len(counts)
    return {label: float((n / (k * count)) ** power) for label, count in counts.items()}


def target_fit_options(
    settings: dict[str, Any] | None,
    params: dict | None = None,
    feature_options: dict | None = None,
    class_weight: float | None = DEFAULT_CLASS_WEIGHT,
) -> dict[str, Any]:
    """Merge a target's own ``model`` settings (see :mod:`features.mapping`) over shared ones.

    Returns the ``params``, ``feature_options`` and ``class_weight`` keyword
    arguments of :func:`fit_target`. The target's parameters and feature
    options replace the shared ones key by key, and its class weight replaces
    the shared exponent.
    """
    settings = settings or {}
    return {
        "params": {**(params or {}), **settings.get("params", {})} or None,
        "feature_options": {**(feature_options or {}), **settings.get("features", {})}
        or None,
        "class_weight": settings.get("class_weight", class_weight),
    }


def select_rounds(
    frame,
    y_log: np.ndarray,
    spec: FeatureSpec,
    seed: int,
    n_jobs: int,
    params: dict,
    feature_options: dict | None,
    candidates: tuple[int, ...] = ROUND_CANDIDATES,
) -> int:
    """Choose the number of trees of a regression by K-fold CV on its own training rows.

    ``y_log`` is log1p of the target. Each inner fold fits the feature
    pipeline and ``max(candidates)`` trees, and scores every candidate count on
    its held-out rows by the absolute error in the target's units. The count
    with the lowest mean error wins. Only the training rows are read, so an
    outer cross-validation of the whole fit stays honest.
    """
    if len(y_log) < ROUND_SELECTION_MIN_ROWS:
        return min(candidates)
    from sklearn.model_selection import KFold

    splitter = KFold(n_splits=ROUND_SELECTION_FOLDS, shuffle=True, random_state=seed)
    errors = np.zeros(len(candidates))
    for fit_rows, held_rows in splitter.split(y_log):
        features = build_feature_pipeline(frame.iloc[fit_rows], spec, **(feature_options or {}))
        fit_matrix = features.fit_transform(frame.iloc[fit_rows])
        held_matrix = features.transform(frame.iloc[held_rows])
        estimator = build_estimator(
            "regression", 0, seed, n_jobs, {**params, "n_estimators": max(candidates)}
        )
        estimator.fit(fit_matrix, y_log[fit_rows])
        truth = np.expm1(y_log[held_rows])
        for index, rounds in enumerate(candidates):
            predicted = np.expm1(estimator.predict(held_matrix, num_iteration=rounds))
            errors[index] += np.abs(predicted - truth).sum()
    return int(candidates[int(np.argmin(errors))])


def build_estimator(
    kind: str, n_classes: int, seed: int, n_jobs: int, params: dict | None
):
    options = {
        **DEFAULT_PARAMS,
        **(params or {}),
        "random_state": seed,
        "n_jobs": n_jobs,
    }
    if kind == "regression":
        options.pop("class_weight", None)
        objective = options.pop("objective", REGRESSION_OBJECTIVE)
        return LGBMRegressor(objective=objective, **options)
    if kind == "binary" or n_classes == 2:
        return LGBMClassifier(objective="binary", **options)
    return LGBMClassifier(objective="multiclass", **options)


def fit_target(
    name: str,
    kind: str,
    frame,
    y,
    spec: FeatureSpec,
    seed: int = 0,
    n_jobs: int = 2,
    params: dict | None = None,
    feature_options: dict | None = None,
    class_weight: float | None = None,
    features: FittedFeatures | None = None,
) -> TargetModel:
    """Fit the feature pipeline and a LightGBM model for one target.

    ``class_weight`` is the exponent of the balanced class weights (see
    :func:`class_weights`) for classifiers; None or 0 fits unweighted. A
    regression takes :data:`REGRESSION_PARAMS` under ``params``, and unless
    ``params`` sets ``n_estimators`` its tree count comes from
    :func:`select_rounds` on these rows. With
    ``features`` (one matrix row per row of ``frame``) the pipeline's features
    are that fitted transformer and only LightGBM is fitted.
    """
    if features is not None and features.matrix.shape[0] != len(frame):
        raise ValueError(
            f"the feature matrix has {features.matrix.shape[0]} rows for {len(frame)} tickets"
        )
    y = np.asarray(y)
    transform = None
    if kind == "regression":
        transform = "log1p"
        y = np.log1p(np.clip(y.astype(float), 0, None))
        n_classes = 0
    else:
        y = y.astype(bool) if kind == "binary" else y.astype(str)
        n_classes = len(np.unique(y))
        if n_classes < 2:
            raise ValueError(
                f"target {name} has a single label {y[0]!r} in the training rows; "
                "a classifier needs at least two"
            )
    if kind == "regression":
        params = {**REGRESSION_PARAMS, **(params or {})}
        if "n_estimators" not in params:
            params["n_estimators"] = select_rounds(
                frame, y, spec, seed, n_jobs, params, feature_options
            )
    elif class_weight:
        params = {**(params or {}), "class_weight": class_weights(y, class_weight)}
    estimator = build_estimator(kind, n_classes, seed, n_jobs, params)
    if features is None:
        pipeline = Pipeline(
            [("features", build_feature_pipeline(frame, spec, **(feature_options or {}))), ("model", estimator)]
        )
        pipeline.fit(frame, y)
    else:
        estimator.fit(features.matrix, y)
        pipeline = Pipeline([("features", features.transformer), ("model", estimator)])
    labels = [] if kind == "regression" else list(pipeline.classes_)
    return TargetModel(
        name=name, kind=kind, pipeline=pipeline, labels=labels, transform=transform
    )


__all__ = [
    "DEFAULT_CLASS_WEIGHT",
    "DEFAULT_PARAMS",
    "PROBABILITY_FLOOR",
    "REGRESSION_OBJECTIVE",
    "REGRESSION_PARAMS",
    "ROUND_CANDIDATES",
    "FittedFeatures",
    "TargetModel",
    "apply_class_temperatures",
    "build_estimator",
    "class_weights",
    "fit_target",
    "select_rounds",
    "target_fit_options",
]
