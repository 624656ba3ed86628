"""``triage audit``: closed tickets whose coded cause disagrees with a confident closure model.

The closure-mode model reads the closure notes besides the intake fields. When
it is confident (its top class clears the per-class threshold chosen for the
target precision) and names another class than the one coded on the ticket,
the ticket is listed for review: either the code is wrong or the notes
describe something unusual.

By default the predictions are cross-fitted: the tickets are split into
folds, and each fold is scored by a model fitted on the other folds, so that
no ticket is judged by a model that has learnt its own code. With a bundle
(``--model``) its closure-mode model scores every ticket instead, which suits
tickets the bundle was not trained on, such as a new month.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.inputs import feature_frame, ticket_text
from features.loading import LoadResult, load_tickets
from features.mapping import Mapping, TargetSpec
from features.schema import SOURCE_LINE
from models.calibration import fit_calibrated
from models.thresholds import DEFAULT_PRECISION, NEVER

from .evaluate_cv import (
    DEFAULT_FOLDS,
    Variant,
    as_labels,
    fold_labels,
    make_folds,
    strata_for,
)
from .train import _labelled, intake_spec, tokenize_texts

logger = logging.getLogger(__name__)

AUDIT_COLUMNS = [
    "ticket_id",
    SOURCE_LINE,
    "created_at",
    "coded",
    "predicted",
    "probability",
    "coded_probability",
    "threshold",
    "description",
    "closure_notes",
]


@dataclass
class AuditResult:
    """How many closed tickets were checked and the ones flagged, most confident first."""

    checked: int
    flagged: pd.DataFrame
    source: str


@dataclass
class ClosurePredictions:
    """Closure-mode predictions for the checked tickets, in positions of the loaded tickets."""

    positions: np.ndarray
    coded: np.ndarray
    predicted: np.ndarray
    probability: np.ndarray
    coded_probability: np.ndarray
    threshold: np.ndarray


def closed_tickets(tickets: pd.DataFrame) -> np.ndarray:
    """True for tickets with a closing time or closure notes."""
    closed = tickets["closed_at"].notna().to_numpy()
    notes = tickets["closure_notes"].fillna("").astype(str).str.strip() != ""
    return closed | notes.to_numpy()


def _target(mapping: Mapping, name: str) -> TargetSpec:
    target = mapping.targets.get(name)
    if target is None:
        raise ValueError(
            f"target {name!r} is not declared by mapping {mapping.name}; "
            f"declared targets: {', '.join(mapping.targets)}"
        )
    if target.kind != "multiclass":
        raise ValueError(
            f"target {name} is {target.kind}; the audit compares multiclass codes such as "
            "category or root_cause"
        )
    return target


def cross_fitted_predictions(
    load: LoadResult,
    target: TargetSpec,
    checked: np.ndarray,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    precision: float = DEFAULT_PRECISION,
    n_jobs: int = 1,
    variant: Variant | None = None,
    progress: bool = False,
) -> ClosurePredictions:
    """Score every checked ticket with a closure model fitted on the other folds."""
    variant = variant or Variant()
    tickets = load.tickets
    spec = intake_spec(load.mapping, mode="closure")
    texts = [
        ticket_text(r, spec) for r in tickets[list(spec.text_fields)].to_dict("records")
    ]
    frame = feature_frame(
        tickets, spec, tokens=tokenize_texts(texts, progress=progress)
    )
    positions = np.flatnonzero(checked)
    strata = strata_for(tickets, target, positions)
    splits = make_folds(
        positions,
        strata,
        tickets["created_at"].to_numpy()[positions],
        "stratified",
        folds,
        1,
        seed,
    )
    parts: list[ClosurePredictions] = []
    for fold in splits:
        fit_labels, coded = fold_labels(target, fold, tickets)
        model, _ = fit_calibrated(
            target.name,
            target.kind,
            frame.iloc[fold.train],
            fit_labels,
            spec,
            seed=seed,
            precision=precision,
            n_jobs=n_jobs,
            params=variant.params,
            feature_options=variant.features,
            class_weight=variant.class_weight,
        )
        probabilities = model.predict_scores(frame.iloc[fold.test])
        labels = [str(label) for label in model.labels]
        parts.append(
            _predictions(
                fold.test, coded, probabilities, labels, model.class_thresholds
            )
        )
    return ClosurePredictions(
        **{
            key: np.concatenate([getattr(part, key) for part in parts])
            for key in ClosurePredictions.__dataclass_fields__
        }
    )


def bundle_predictions(
    load: LoadResult, target: TargetSpec, checked: np.ndarray, model_uri: str
) -> ClosurePredictions:
    """Score every checked ticket with the closure-mode model of a bundle."""
    from models.scorer import load_scorer

    scorer = load_scorer(model_uri)
    entries = [
        e for e in scorer.targets if e.field == target.field and e.mode == "closure"
    ]
    if not entries:
        found = ", ".join(f"{e.name} ({e.mode})" for e in scorer.targets)
        raise ValueError(
            f"bundle {model_uri} has no closure-mode model for target {target.name}; "
            f"its targets: {found}. Train it again, or omit --model to cross-fit models "
            "on the data"
        )
    entry = entries[0]
    positions = np.flatnonzero(checked)
    records = load.tickets.iloc[positions].to_dict("records")
    probabilities = scorer.predict(records)[entry.name]
    coded = load.tickets[target.field].to_numpy(dtype=object)[positions]
    labels = [str(label) for label in entry.labels]
    thresholds = dict(entry.class_thresholds)
    if entry.threshold is not None:
        thresholds = {label: thresholds.get(label, entry.threshold) for label in labels}
    return _predictions(
        positions, as_labels(coded, "multiclass"), probabilities, labels, thresholds
    )


def _predictions(
    positions, coded, probabilities, labels, thresholds
) -> ClosurePredictions:
    labels_array = np.asarray(labels, dtype=object)
    top = probabilities.argmax(axis=1)
    index = {label: i for i, label in enumerate(labels)}
    coded_column = np.array([index.get(str(c), -1) for c in coded])
    coded_probability = np.where(
        coded_column >= 0,
        probabilities[np.arange(len(positions)), np.maximum(coded_column, 0)],
        0.0,
    )
    return ClosurePredictions(
        positions=np.asarray(positions),
        coded=np.asarray(coded, dtype=object),
        predicted=labels_array[top],
        probability=probabilities.max(axis=1),
        coded_probability=coded_probability,
        threshold=np.array(
            [thresholds.get(label, NEVER) for label in labels_array[top]]
        ),
    )


def audit(
    data: str | Path,
    mapping: Mapping | str | Path | None = None,
    *,
    out: str | Path | None = None,
    target: str = "category",
    model_uri: str | None = None,
    precision: float = DEFAULT_PRECISION,
    min_probability: float | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    n_jobs: int = 1,
    variant: Variant | None = None,
    load: LoadResult | None = None,
) -> AuditResult:
    """Flag closed tickets whose coded label disagrees with a confident closure prediction.

    A prediction is confident when its probability reaches the threshold of
    its class (chosen for ``precision`` on held-out rows), or
    ``min_probability`` when that is given. The flagged tickets are written
    to ``out`` as CSV (UTF-8 with a byte-order mark, so that spreadsheet
    programs read the Chinese text) when ``out`` is given.
    """
    load = load or load_tickets(data, mapping)
    spec = _target(load.mapping, target)
    checked = closed_tickets(load.tickets) & _labelled(load.tickets, spec)
    if checked.sum() < 2 * folds and model_uri is None:
        raise ValueError(
            f"{data} has {int(checked.sum())} closed tickets with a coded {target}; "
            f"cross-fitting {folds} folds needs at least {2 * folds}"
        )
    if model_uri is None:
        predictions = cross_fitted_predictions(
            load,
            spec,
            checked,
            folds=folds,
            seed=seed,
            precision=precision,
            n_jobs=n_jobs,
            variant=variant,
        )
        source = f"cross-fitted closure models, {folds} folds"
    else:
        predictions = bundle_predictions(load, spec, checked, model_uri)
        source = f"closure model of {model_uri}"
    limit = (
        np.full(len(predictions.positions), min_probability)
        if min_probability is not None
        else predictions.threshold
    )
    flag = (predictions.predicted != predictions.coded) & (
        predictions.probability >= limit
    )
    flagged = _flagged_frame(load.tickets, predictions, limit, flag)
    logger.info(
        "audit of %s: %d closed tickets checked with %s, %d flagged",
        target,
        len(predictions.positions),
        source,
        len(flagged),
    )
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        flagged.to_csv(out, index=False, encoding="utf-8-sig")
    return AuditResult(
        checked=len(predictions.positions), flagged=flagged, source=source
    )


def _flagged_frame(
    tickets, predictions: ClosurePredictions, limit, flag
) -> pd.DataFrame:
    rows = tickets.iloc[predictions.positions[flag]]
    frame = pd.DataFrame(
        {
            "ticket_id": rows["ticket_id"].to_numpy(),
            SOURCE_LINE: rows[SOURCE_LINE].to_numpy(),
            "created_at": rows["created_at"].to_numpy(),
            "coded": predictions.coded[flag],
            "predicted": predictions.predicted[flag],
            "probability": np.round(predictions.probability[flag], 4),
            "coded_probability": np.round(predictions.coded_probability[flag], 4),
            "threshold": np.round(limit[flag], 4),
            "description": rows["description"].to_numpy(),
            "closure_notes": rows["closure_notes"].to_numpy(),
        },
        columns=AUDIT_COLUMNS,
    )
    return frame.sort_values("probability", ascending=False, kind="stable").reset_index(
        drop=True
    )


__all__ = [
    "AUDIT_COLUMNS",
    "AuditResult",
    "ClosurePredictions",
    "audit",
    "bundle_predictions",
    "closed_tickets",
    "cross_fitted_predictions",
]
