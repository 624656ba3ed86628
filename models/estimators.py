"""LightGBM pipelines per target kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.pipeline import Pipeline

from features.inputs import FeatureSpec
from features.pipeline import build_feature_pipeline

DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 5,
    "colsample_bytree": 0.5,
    "reg_lambda": 1.0,
    "subsample": 1.0,
    "max_bin": 63,
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}


@dataclass
class TargetModel:
    """A fitted pipeline for one target and what is needed to serve it."""

    name: str
    kind: str
    pipeline: Pipeline
    labels: list[Any] = field(default_factory=list)
    transform: str | None = None

    def predict_scores(self, frame) -> np.ndarray:
        """Class probabilities (classifiers) or predictions in target units (regression)."""
        if self.kind == "regression":
            raw = self.pipeline.predict(frame)
            return np.expm1(raw) if self.transform == "log1p" else raw
        return self.pipeline.predict_proba(frame)


def build_estimator(kind: str, n_classes: int, seed: int, n_jobs: int, params: dict | None):
    options = {**DEFAULT_PARAMS, **(params or {}), "random_state": seed, "n_jobs": n_jobs}
    if kind == "regression":
        options.pop("class_weight", None)
        return LGBMRegressor(objective="regression_l1", **options)
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
) -> TargetModel:
    """Fit the feature pipeline and a LightGBM model for one target."""
    features = build_feature_pipeline(frame, spec, **(feature_options or {}))
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
    estimator = build_estimator(kind, n_classes, seed, n_jobs, params)
    pipeline = Pipeline([("features", features), ("model", estimator)])
    pipeline.fit(frame, y)
    labels = [] if kind == "regression" else list(pipeline.classes_)
    return TargetModel(name=name, kind=kind, pipeline=pipeline, labels=labels, transform=transform)


__all__ = ["DEFAULT_PARAMS", "TargetModel", "build_estimator", "fit_target"]
