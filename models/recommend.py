"""Root-cause recommendation from the model and from similar closed tickets.

The root-cause model gives a probability per cause. The nearest closed tickets
give each cause a support: the sum of the similarities of the neighbours with
that cause, divided by the number of neighbours. Support is 1 only when every
neighbour is a copy with that cause, and near 0 when the neighbours are barely
similar. The two are combined as a weighted geometric mean::

    score(c) ∝ (p_model(c) + MODEL_FLOOR) ** (1 - w) * (support(c) + VOTE_SMOOTHING) ** w

normalised over the candidate causes. A geometric mean needs both sources to
agree for a high score: one neighbour cannot lift a cause that the model finds
implausible above the model's own choices, while a cause that the model ranks
second and close neighbours share moves to the top. With no neighbour or only
dissimilar ones the ranking is the model's.

Neighbour count, weight and smoothing were chosen on 5-fold cross-validation
of the ICT records, where the combination's recall@3 of the root cause is
above the model's alone; ``training.recommend_eval`` computes those figures.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingType
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .similar import DEFAULT_K, SimilarTicket

INCLUDE_OPTIONS = ("similar", "reasons")
TOP_CAUSES = 3
# Closed tickets that support root causes; a scored ticket lists the first
# DEFAULT_K of them as its similar tickets.
NEIGHBOURS = 10
NEIGHBOUR_WEIGHT = 0.5
VOTE_SMOOTHING = 0.03
MODEL_FLOOR = 1e-3
ROOT_CAUSE_TARGET = "root_cause"


@dataclass(frozen=True)
class CauseScore:
    """One candidate cause: combined score, model probability and neighbour support."""

    code: str
    score: float
    probability: float
    neighbour_support: float


def check_include(include: Sequence[str] | None) -> tuple[str, ...]:
    """Validate the requested extra parts of a scored ticket; raise ValueError for unknown ones."""
    include = tuple(include or ())
    unknown = sorted(set(include) - set(INCLUDE_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown include option(s) {unknown}; expected any of {', '.join(INCLUDE_OPTIONS)}"
        )
    return include


def model_label(
    cause: str | None, labels: set[str], rare_label: str | None
) -> str | None:
    """Map a recorded cause to the model's label: itself, or the rare label it was merged into."""
    if cause is None or cause in labels:
        return cause
    return rare_label if rare_label in labels else cause


def neighbour_support(
    neighbours: Sequence[SimilarTicket], labels: set[str], rare_label: str | None
) -> dict[str, float]:
    """Sum the similarities of the neighbours per cause and divide by the neighbour count.

    Neighbours without a recorded cause count in the denominator but support
    no cause.
    """
    votes: dict[str, float] = {}
    for ticket in neighbours:
        code = model_label(ticket.root_cause, labels, rare_label)
        if code is not None and ticket.similarity > 0:
            votes[code] = votes.get(code, 0.0) + ticket.similarity
    return {code: vote / len(neighbours) for code, vote in votes.items()}


def combine(
    probabilities: np.ndarray,
    labels: Sequence[str],
    support: MappingType[str, float],
    weight: float = NEIGHBOUR_WEIGHT,
    smoothing: float = VOTE_SMOOTHING,
) -> list[CauseScore]:
    """Rank the model's labels and the neighbours' causes by the combined score."""
    if not 0 <= weight <= 1:
        raise ValueError(f"neighbour weight must be between 0 and 1, got {weight}")
    model = {str(label): float(p) for label, p in zip(labels, probabilities)}
    codes = list(model) + [c for c in support if c not in model]
    model_part = np.array([model.get(c, 0.0) for c in codes])
    support_part = np.array([support.get(c, 0.0) for c in codes])
    log_score = (1 - weight) * np.log(model_part + MODEL_FLOOR) + weight * np.log(
        support_part + smoothing
    )
    score = np.exp(log_score - log_score.max())
    score /= score.sum()
    # Ties keep the model's order, which is the label order for equal probabilities.
    order = sorted(range(len(codes)), key=lambda j: (-score[j], -model_part[j], j))
    return [
        CauseScore(
            codes[j], float(score[j]), float(model_part[j]), float(support_part[j])
        )
        for j in order
    ]


def recommend_causes(
    scorer,
    probabilities: np.ndarray,
    neighbours: Sequence[SimilarTicket],
    category_code: str | None,
    top: int = TOP_CAUSES,
) -> list[dict[str, Any]]:
    """Return the top root causes, each with its measures and the neighbours behind it."""
    entry = scorer.target(ROOT_CAUSE_TARGET)
    labels = [str(label) for label in entry.labels]
    rare = rare_label_of(scorer.manifest)
    support = neighbour_support(neighbours, set(labels), rare)
    ranked = combine(probabilities, labels, support)[:top]
    items = []
    for cause in ranked:
        evidence = [
            t.to_dict()
            for t in neighbours
            if model_label(t.root_cause, set(labels), rare) == cause.code
        ]
        items.append(
            {
                "code": cause.code,
                "name": scorer._cause_name(cause.code),
                "probability": cause.probability,
                "score": cause.score,
                "neighbour_support": cause.neighbour_support,
                "measures": scorer.taxonomy.measures_for(cause.code, category_code),
                "evidence": evidence,
            }
        )
    return items


def rare_label_of(manifest: MappingType[str, Any]) -> str | None:
    """Return the label that rare root causes were merged into at training, if any."""
    targets = manifest.get("mapping", {}).get("targets", {})
    return targets.get(ROOT_CAUSE_TARGET, {}).get("rare_label")


def add_context(
    scorer,
    tickets: Sequence[MappingType[str, Any]],
    predictions: MappingType[str, np.ndarray],
    answers: list[dict[str, Any]],
    include: Sequence[str],
) -> None:
    """Add similar tickets, recurrence, recommended causes and reasons to ``answers``.

    ``similar`` needs the bundle's similar-ticket index. A bundle without one
    leaves the answers as they are, as if ``similar`` was not requested.
    ``reasons`` works with every bundle.
    """
    include = check_include(include)
    index = getattr(scorer, "similar", None)
    if "similar" in include and index is not None and tickets:
        found = index.search(tickets, k=max(DEFAULT_K, NEIGHBOURS))
        has_root_cause = scorer.target(ROOT_CAUSE_TARGET) is not None
        for i, (answer, match) in enumerate(zip(answers, found)):
            answer["similar"] = [t.to_dict() for t in match.neighbours[:DEFAULT_K]]
            answer["possible_recurrence"] = (
                match.recurrence.to_dict() if match.recurrence is not None else None
            )
            if has_root_cause:
                category = answer.get("category", {}).get("code")
                answer["root_causes"] = recommend_causes(
                    scorer,
                    predictions[ROOT_CAUSE_TARGET][i],
                    match.neighbours,
                    category,
                )
    if "reasons" in include and tickets:
        from .explain import explain

        for answer, reasons in zip(answers, explain(scorer, tickets)):
            answer["reasons"] = reasons


__all__ = [
    "INCLUDE_OPTIONS",
    "NEIGHBOURS",
    "NEIGHBOUR_WEIGHT",
    "VOTE_SMOOTHING",
    "CauseScore",
    "add_context",
    "check_include",
    "combine",
    "model_label",
    "neighbour_support",
    "rare_label_of",
    "recommend_causes",
]
