"""Reasons for a prediction: the words and metadata values that moved it most.

The reasons come from the exported ONNX graph itself. An input is a distinct
word of the ticket, a known metadata value or a known time feature. Each
input is measured twice against the top class's probability:

- taken away from the whole ticket: the word removed from the token string
  (every occurrence of it), the metadata value replaced by one the model
  never saw, the time feature set to unknown;
- put alone into an empty ticket, which has no words, unseen metadata and
  unknown times.

A reason's weight is the mean of the drop in the first case and the rise in
the second, the two ends of the average that Shapley values take over all
subsets of inputs. A positive weight pushed the prediction towards the top
class, a negative one pulled it away. The second measurement credits a word
that the ticket repeats in other words, which removal alone would score near
zero. All variants of all tickets are scored in one batched onnxruntime call.

Placeholders (``<date>``, ``<num>``...) and the ``<doc>`` sentinel are never
reasons: they mark masked values, not words a person wrote.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingType
from collections.abc import Sequence
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


def _empty_feeds(feeds: dict[str, np.ndarray], spec) -> dict[str, np.ndarray]:
    """Feeds of one ticket with no words, unseen metadata and unknown times."""
    empty = {TOKENS: np.array([[DOC_TOKEN]], dtype=object)}
    for name in spec.categorical:
        empty[name] = np.array([[UNSEEN_VALUE]], dtype=object)
    for name in feeds:
        if name not in empty:
            empty[name] = np.full((1, 1), UNKNOWN_TIME, dtype=np.float32)
    return empty


def _inputs(
    ticket: MappingType[str, Any], feeds: dict[str, np.ndarray], row: int, spec
):
    """Yield (kind, field, displayed value, feeds without it, feeds with only it).

    One tuple per input that can be taken away: each distinct word, each known
    metadata value and each known time feature.
    """
    tokens = tokenize(ticket_text(ticket, spec))
    full = {name: values[row : row + 1] for name, values in feeds.items()}
    empty = _empty_feeds(feeds, spec)
    for word in dict.fromkeys(text_terms(tokens)):
        without = " ".join([DOC_TOKEN, *(t for t in tokens if t != word)])
        yield (
            "word",
            TOKENS,
            word,
            {**full, TOKENS: np.array([[without]], dtype=object)},
            {**empty, TOKENS: np.array([[f"{DOC_TOKEN} {word}"]], dtype=object)},
        )
    for name in spec.categorical:
        if categorical_value(ticket.get(name)) == MISSING:
            continue
        unseen = np.array([[UNSEEN_VALUE]], dtype=object)
        yield (
            "metadata",
            name,
            str(ticket.get(name)),
            {**full, name: unseen},
            {**empty, name: full[name]},
        )
    for name in spec.numeric:
        value = float(full[name][0, 0])
        if value == UNKNOWN_TIME:
            continue
        unknown = np.array([[UNKNOWN_TIME]], dtype=np.float32)
        yield (
            "metadata",
            name,
            _time_label(name, value),
            {**full, name: unknown},
            {**empty, name: full[name]},
        )


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}


def explain(
    scorer,
    tickets: Sequence[MappingType[str, Any]],
    target: str = "category",
    top: int = DEFAULT_TOP,
) -> list[dict[str, Any] | None]:
    """Return the reasons for ``target``'s top class of each ticket, in input order.

    For ``n`` inputs a ticket adds ``2 n + 2`` rows to the one batched call.

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
    empty = _empty_feeds(feeds, spec)
    rows: list[dict[str, np.ndarray]] = []
    owners: list[tuple[int, str, str, str]] = []
    for i, ticket in enumerate(tickets):
        rows += [{name: values[i : i + 1] for name, values in feeds.items()}, empty]
        owners.append((i, "ticket", "", ""))
        for kind, name, displayed, without, alone in _inputs(ticket, feeds, i, spec):
            rows += [without, alone]
            owners.append((i, kind, name, displayed))
    probabilities = scorer._run(entry, _stack(rows))
    return _collect(entry, owners, probabilities, top)


def _collect(entry, owners, probabilities, top) -> list[dict[str, Any]]:
    """Turn the probabilities of the row pairs into weights for each ticket's top class."""
    answers: list[dict[str, Any]] = []
    reasons: list[list[dict[str, Any]]] = []
    for pair, (i, kind, name, displayed) in enumerate(owners):
        first, second = probabilities[2 * pair], probabilities[2 * pair + 1]
        if kind == "ticket":
            top_class = int(np.argmax(first))
            full, empty = float(first[top_class]), float(second[top_class])
            answers.append(
                {
                    "target": entry.name,
                    "code": str(entry.labels[top_class]),
                    "probability": full,
                }
            )
            reasons.append([])
            continue
        # The mean of the input's effect when it is removed from the whole
        # ticket and when it is added to the empty one.
        weight = 0.5 * (
            (full - float(first[top_class])) + (float(second[top_class]) - empty)
        )
        if abs(weight) >= MIN_WEIGHT:
            reasons[i].append(
                {"kind": kind, "field": name, "value": displayed, "weight": weight}
            )
    for answer, found in zip(answers, reasons):
        words = [r for r in found if r["kind"] == "word"]
        metadata = [r for r in found if r["kind"] == "metadata"]
        answer["words"] = [
            {"token": r["value"], "weight": round(r["weight"], 6)}
            for r in _strongest(words, top)
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
