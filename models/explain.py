"""Reasons for a prediction: the words and metadata values that moved it most.

The reasons come from the exported ONNX graph itself, by occlusion. Each word
of the ticket is removed from the token string (every occurrence of it), each
known metadata value is replaced by a value the model never saw, and each
known time feature is set to unknown. All variants of all tickets are scored
in one batched onnxruntime call. A reason's weight is the drop in the top
class's probability when that input is taken away: a positive weight pushed
the prediction towards the top class, a negative one pulled it away.

Placeholders (``<date>``, ``<num>``...) and the ``<doc>`` sentinel are never
reasons: they mark masked values, not words a person wrote.

Removing one input at a time measures each input alone. Two words that each
suffice for the prediction both get a small weight, because the other one
still carries it.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingType, Sequence
from typing import Any

import numpy as np

from features.inputs import (
    MISSING,
    MONTH_PERIODS,
    TOKENS,
    categorical_value,
    ticket_feeds,
    ticket_text,
)
from features.text import DOC_TOKEN, tokenize

from .similar import text_terms

DEFAULT_TOP = 8
# Weights smaller than this are rounding noise of float32 probabilities.
MIN_WEIGHT = 1e-4
# A category no model was trained on: the one-hot encoders give it all zeros,
# as for any value they never saw.
UNSEEN_VALUE = "\x00unseen"
UNKNOWN_TIME = -1.0


def _time_label(name: str, value: float) -> str:
    if name == "month_period" and 0 <= value < len(MONTH_PERIODS):
        return MONTH_PERIODS[int(value)]
    return str(int(value))


def _variants(ticket: MappingType[str, Any], feeds: dict[str, np.ndarray], row: int, spec):
    """Yield (kind, field, displayed value, feeds) for each input that can be taken away."""
    tokens = tokenize(ticket_text(ticket, spec))
    base = {name: values[row : row + 1] for name, values in feeds.items()}
    for word in dict.fromkeys(text_terms(tokens)):
        without = " ".join([DOC_TOKEN, *(t for t in tokens if t != word)])
        yield "word", TOKENS, word, {**base, TOKENS: np.array([[without]], dtype=object)}
    for name in spec.categorical:
        if categorical_value(ticket.get(name)) == MISSING:
            continue
        unseen = np.array([[UNSEEN_VALUE]], dtype=object)
        yield "metadata", name, str(ticket.get(name)), {**base, name: unseen}
    for name in spec.numeric:
        value = float(base[name][0, 0])
        if value == UNKNOWN_TIME:
            continue
        unknown = np.array([[UNKNOWN_TIME]], dtype=np.float32)
        yield "metadata", name, _time_label(name, value), {**base, name: unknown}


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}


def explain(
    scorer, tickets: Sequence[MappingType[str, Any]], target: str = "category",
    top: int = DEFAULT_TOP,
) -> list[dict[str, Any] | None]:
    """Return the reasons for ``target``'s top class of each ticket, in input order.

    Each result has the target, the top class ``code`` and its
    ``probability``, then ``words`` (token and weight) and ``metadata`` (field,
    value and weight). Each list keeps the ``top`` largest absolute weights,
    sorted from the most positive weight down. Every result is None when
    ``target`` is not a classifier of the bundle's intake inputs.
    """
    entry = scorer.target(target)
    if entry is None or entry.kind == "regression" or entry.mode != "intake":
        return [None] * len(tickets)
    spec = scorer.spec
    tickets = list(tickets)
    if not tickets:
        return []
    feeds = ticket_feeds(tickets, spec)
    rows: list[dict[str, np.ndarray]] = []
    owners: list[tuple[int, str, str, str]] = []
    for i, ticket in enumerate(tickets):
        rows.append({name: values[i : i + 1] for name, values in feeds.items()})
        owners.append((i, "original", "", ""))
        for kind, name, displayed, variant in _variants(ticket, feeds, i, spec):
            rows.append(variant)
            owners.append((i, kind, name, displayed))
    probabilities = scorer._run(entry, _stack(rows))
    return _collect(entry, tickets, owners, probabilities, top)


def _collect(entry, tickets, owners, probabilities, top) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    reasons: list[list[dict[str, Any]]] = [[] for _ in tickets]
    top_class = [0] * len(tickets)
    for row, (i, kind, name, displayed) in enumerate(owners):
        if kind == "original":
            top_class[i] = int(np.argmax(probabilities[row]))
            answers.append(
                {
                    "target": entry.name,
                    "code": str(entry.labels[top_class[i]]),
                    "probability": float(probabilities[row, top_class[i]]),
                }
            )
            continue
        weight = answers[i]["probability"] - float(probabilities[row, top_class[i]])
        if abs(weight) >= MIN_WEIGHT:
            reasons[i].append({"kind": kind, "field": name, "value": displayed, "weight": weight})
    for answer, found in zip(answers, reasons):
        words = [r for r in found if r["kind"] == "word"]
        metadata = [r for r in found if r["kind"] == "metadata"]
        answer["words"] = [
            {"token": r["value"], "weight": round(r["weight"], 6)} for r in _strongest(words, top)
        ]
        answer["metadata"] = [
            {"field": r["field"], "value": r["value"], "weight": round(r["weight"], 6)}
            for r in _strongest(metadata, top)
        ]
    return answers


def _strongest(reasons: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """Keep the ``top`` reasons of largest absolute weight, most positive first."""
    chosen = sorted(reasons, key=lambda r: -abs(r["weight"]))[:top]
    return sorted(chosen, key=lambda r: -r["weight"])


__all__ = ["DEFAULT_TOP", "explain"]
