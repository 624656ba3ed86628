"""Per-class confidence thresholds for abstention, chosen for a target precision.

A ticket is answered automatically when the probability of its top class
reaches that class's threshold; otherwise the scorer marks it
``needs_review``. Each threshold is the lowest top-class probability at which
the answers for that class reach the target precision on validation rows, so
that as many tickets as possible are answered at that precision.

Precision is estimated with one right and one wrong answer added
(``(right + 1) / (answers + 2)``, Laplace's rule of succession). The plain
share right, taken at the deepest cut that meets the target, picks the cut
where a small validation set happened to look best, and the answers then
fall short of the target on new tickets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PRECISION = 0.9
REPORTED_PRECISIONS = (0.8, 0.9, 0.95)
# A threshold above any probability sends every answer for the class to review.
NEVER = 2.0
# Fewer validation answers than this for a class cannot show its precision,
# so such a class gets the threshold NEVER.
MIN_ANSWERS = 5


def class_thresholds(
    probabilities: np.ndarray,
    truth: np.ndarray,
    labels: Sequence,
    precision: float = DEFAULT_PRECISION,
    min_answers: int = MIN_ANSWERS,
) -> dict[str, float]:
    """Choose one threshold per class on validation rows.

    Parameters
    ----------
    probabilities
        Calibrated probabilities, one column per label.
    truth
        Column of each row's true label (-1 when the model does not know it).
    labels
        The labels of the columns.
    precision
        Target precision of the answers for each class.
    min_answers
        Smallest number of validation answers a threshold may rest on.

    Returns
    -------
    dict
        Label -> threshold. For a class whose answers never reach
        ``precision`` with at least ``min_answers`` of them, the threshold is
        :data:`NEVER`.
    """
    if not 0 < precision <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {precision}")
    top = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    thresholds: dict[str, float] = {}
    for column, label in enumerate(labels):
        answered = np.flatnonzero(top == column)
        order = answered[np.argsort(-confidence[answered], kind="stable")]
        correct = np.cumsum(truth[order] == column)
        count = np.arange(1, len(order) + 1)
        smoothed = (correct + 1) / (count + 2)
        reached = np.flatnonzero((smoothed >= precision) & (count >= min_answers))
        if len(reached) == 0:
            thresholds[str(label)] = NEVER
            continue
        # The deepest cut-off that still meets the target: every row down to
        # and including it is answered.
        last = reached[-1]
        thresholds[str(label)] = float(confidence[order[last]])
    return thresholds


@dataclass(frozen=True)
class Coverage:
    """Share of tickets answered under a set of thresholds, and how good the answers are."""

    target_precision: float
    coverage: float
    precision: float
    answered: int
    rows: int


def answered_mask(
    probabilities: np.ndarray, labels: Sequence, thresholds: dict[str, float]
) -> np.ndarray:
    """True for rows whose top class reaches its threshold (the scorer's rule)."""
    if not len(probabilities):
        return np.zeros(0, dtype=bool)
    top = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    limits = np.array([thresholds.get(str(label), NEVER) for label in labels])
    return confidence >= limits[top]


def coverage(
    probabilities: np.ndarray,
    truth: np.ndarray,
    labels: Sequence,
    thresholds: dict[str, float],
    target_precision: float,
) -> Coverage:
    """Coverage and achieved precision of ``thresholds`` on evaluation rows."""
    answered = answered_mask(probabilities, labels, thresholds)
    rows = len(probabilities)
    hits = (
        int((probabilities.argmax(axis=1)[answered] == truth[answered]).sum())
        if rows
        else 0
    )
    count = int(answered.sum())
    return Coverage(
        target_precision=target_precision,
        coverage=count / rows if rows else 0.0,
        precision=hits / count if count else float("nan"),
        answered=count,
        rows=rows,
    )


__all__ = [
    "DEFAULT_PRECISION",
    "MIN_ANSWERS",
    "NEVER",
    "REPORTED_PRECISIONS",
    "Coverage",
    "answered_mask",
    "class_thresholds",
    "coverage",
]
