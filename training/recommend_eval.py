"""Recall of the root-cause recommender: the model alone, the neighbours alone, both.

For each test ticket with a recorded root cause, three rankings of causes are
compared with the truth:

- ``model``: the root-cause model's calibrated probabilities, fitted on the
  training tickets as ``triage train`` and ``triage evaluate`` fit it, with
  the default class weights;
- ``neighbours``: the causes of the nearest closed training tickets, by their
  summed similarity;
- ``combined``: :func:`models.recommend.combine` of the two, as served.

Recall@k is the share of test tickets whose true root cause is among the
first k. Labels are those of the model: causes rarer than the mapping's
``min_count`` in the training tickets count as its ``rare_label``, for the
truth and for the neighbours alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.inputs import TOKENS, FeatureSpec, feature_frame, ticket_text
from features.loading import LoadResult
from features.mapping import Mapping
from models.calibration import fit_calibrated
from models.estimators import DEFAULT_CLASS_WEIGHT
from models.recommend import (
    NEIGHBOURS,
    ROOT_CAUSE_TARGET,
    combine,
    model_label,
    neighbour_support,
)
from models.similar import build_index, metadata_terms, text_terms

from .evaluate_cv import EvaluationContext, Section, make_folds
from .train import intake_spec, target_labels, tokenize_texts

logger = logging.getLogger(__name__)

RECALL_AT = (1, 3)
SYSTEMS = ("model", "neighbours", "combined")


def _hits(truth: str, ranked: Sequence[str]) -> dict[int, bool]:
    return {k: truth in ranked[:k] for k in RECALL_AT}


def _figures(hits: dict[str, dict[int, int]], rows: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"rows": rows}
    for system in SYSTEMS:
        figures[system] = {
            f"recall@{k}": hits[system][k] / rows if rows else float("nan")
            for k in RECALL_AT
        }
    figures["hits"] = hits
    return figures


def recommender_recall(
    train_tickets: pd.DataFrame,
    test_tickets: pd.DataFrame,
    mapping: Mapping,
    *,
    spec: FeatureSpec | None = None,
    train_tokens: Sequence[str] | None = None,
    test_tokens: Sequence[str] | None = None,
    seed: int = 0,
    n_jobs: int = 1,
    params: dict | None = None,
) -> dict[str, Any]:
    """Fit the root-cause model and the index on ``train_tickets``; score ``test_tickets``.

    Parameters
    ----------
    train_tickets, test_tickets
        Canonical tickets, as loaded with ``mapping``.
    mapping
        Must declare a ``root_cause`` target.
    spec
        Model inputs; ``intake_spec(mapping)`` by default.
    train_tokens, test_tokens
        Token strings of the rows, when already computed.
    seed, n_jobs, params
        Passed to the model fit.

    Returns
    -------
    dict
        ``rows`` (test tickets with a root cause), then per system (``model``,
        ``neighbours``, ``combined``) a dict with ``recall@1`` and ``recall@3``,
        and ``hits``: the counts behind them, for pooling over folds.
    """
    if ROOT_CAUSE_TARGET not in mapping.targets:
        raise ValueError(
            f"mapping {mapping.name} declares no {ROOT_CAUSE_TARGET} target; the "
            f"recommender needs one, declared targets: {', '.join(mapping.targets)}"
        )
    target = mapping.targets[ROOT_CAUSE_TARGET]
    spec = spec or intake_spec(mapping)
    tickets = pd.concat([train_tickets, test_tickets], ignore_index=True)
    n_train = len(train_tickets)
    tokens = _tokens(tickets, spec, train_tokens, test_tokens)
    frame = feature_frame(tickets, spec, tokens=tokens)
    labelled = tickets[target.field].notna().to_numpy()
    is_train = np.arange(len(tickets)) < n_train
    y, _ = target_labels(tickets, target, is_train & labelled)
    fit_rows = np.flatnonzero(is_train & labelled)
    test_rows = np.flatnonzero(~is_train & labelled)

    model, _ = fit_calibrated(
        target.name,
        "multiclass",
        frame.iloc[fit_rows],
        y[fit_rows].astype(str),
        spec,
        seed=seed,
        n_jobs=n_jobs,
        params=params,
        class_weight=DEFAULT_CLASS_WEIGHT,
    )
    labels = [str(label) for label in model.labels]
    # predict_scores applies the calibration fitted on held-out training rows.
    probabilities = (
        model.predict_scores(frame.iloc[test_rows])
        if len(test_rows)
        else np.zeros((0, len(labels)))
    )

    index = build_index(
        tickets.iloc[:n_train], spec.text_fields, spec.categorical, tokens[:n_train]
    )
    records = tickets.iloc[test_rows].to_dict("records")
    found = index.search_terms(
        [
            text_terms(tokens[i].split(" ")) + metadata_terms(record, spec.categorical)
            for i, record in zip(test_rows, records)
        ],
        NEIGHBOURS,
        [0] * len(test_rows),
        [None] * len(test_rows),
    )
    return _score_rankings(
        y[test_rows], probabilities, labels, found, target.rare_label
    )


def _tokens(tickets, spec, train_tokens, test_tokens) -> list[str]:
    if train_tokens is not None and test_tokens is not None:
        return [*train_tokens, *test_tokens]
    texts = [
        ticket_text(r, spec) for r in tickets[list(spec.text_fields)].to_dict("records")
    ]
    return tokenize_texts(texts, progress=False)


def _score_rankings(truth, probabilities, labels, found, rare_label) -> dict[str, Any]:
    label_set = set(labels)
    hits = {system: {k: 0 for k in RECALL_AT} for system in SYSTEMS}
    for true_label, row, match in zip(truth, probabilities, found):
        true_label = model_label(str(true_label), label_set, rare_label)
        support = neighbour_support(match.neighbours, label_set, rare_label)
        rankings = {
            "model": [labels[j] for j in np.argsort(-row, kind="stable")],
            "neighbours": sorted(support, key=lambda c: -support[c]),
            "combined": [c.code for c in combine(row, labels, support)],
        }
        for system, ranked in rankings.items():
            for k, hit in _hits(true_label, ranked).items():
                hits[system][k] += hit
    return _figures(hits, len(truth))


def pool(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool fold results into recall over all test tickets of all folds."""
    hits = {
        system: {k: sum(r["hits"][system][k] for r in results) for k in RECALL_AT}
        for system in SYSTEMS
    }
    return _figures(hits, sum(r["rows"] for r in results))


def cross_validate_recommender(
    load: LoadResult,
    folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    params: dict | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the recommender's recall over stratified ``folds``-fold cross-validation.

    The folds are those of ``triage evaluate`` for the root cause (its first
    repeat): stratified on the root-cause labels, over the labelled tickets.
    """
    tickets = load.tickets.reset_index(drop=True)
    mapping = load.mapping
    target = mapping.targets.get(ROOT_CAUSE_TARGET)
    if target is None:
        raise ValueError(
            f"mapping {mapping.name} declares no {ROOT_CAUSE_TARGET} target; declared "
            f"targets: {', '.join(mapping.targets)}"
        )
    spec = intake_spec(mapping)
    frame = feature_frame(tickets, spec, tokens=_tokens(tickets, spec, None, None))
    labelled = np.flatnonzero(tickets[target.field].notna().to_numpy())
    mask = np.zeros(len(tickets), dtype=bool)
    mask[labelled] = True
    strata, _ = target_labels(tickets, target, mask)
    splits = make_folds(
        labelled,
        strata[labelled].astype(str),
        tickets["created_at"].to_numpy()[labelled],
        "stratified",
        folds,
        1,
        seed,
    )
    return _run_folds(
        tickets,
        mapping,
        spec,
        frame[TOKENS].tolist(),
        splits,
        seed,
        n_jobs,
        params,
        progress,
    )


def _run_folds(tickets, mapping, spec, tokens, splits, seed, n_jobs, params, progress):
    results = []
    for fold in tqdm(
        splits, desc="recommender folds", unit="fold", disable=not progress
    ):
        train_rows = np.sort(fold.train)
        test_rows = np.sort(fold.test)
        results.append(
            recommender_recall(
                tickets.iloc[train_rows],
                tickets.iloc[test_rows],
                mapping,
                spec=spec,
                train_tokens=[tokens[i] for i in train_rows],
                test_tokens=[tokens[i] for i in test_rows],
                seed=seed,
                n_jobs=n_jobs,
                params=params,
            )
        )
    return pool(results)


def format_recall(figures: dict[str, Any]) -> list[str]:
    """Format a recall table: one line per system, with recall@1 and recall@3."""
    lines = [
        f"{figures['rows']} test tickets with a root cause",
        "system       recall@1  recall@3",
    ]
    for system in SYSTEMS:
        values = figures[system]
        lines.append(
            f"{system:<12} {values['recall@1']:>8.3f}  {values['recall@3']:>8.3f}"
        )
    return lines


def recommender_section(context: EvaluationContext) -> Section | None:
    """Compute the recommender's recall on the root-cause folds of ``triage evaluate``.

    ``triage evaluate`` registers this section. It returns None when the root
    cause is not among the evaluated targets or the mode is not intake.
    """
    splits = [f for f in context.folds.get(ROOT_CAUSE_TARGET, []) if f.repeat == 0]
    if not splits or context.spec.mode != "intake":
        return None
    tickets = context.load.tickets.reset_index(drop=True)
    figures = _run_folds(
        tickets,
        context.load.mapping,
        context.spec,
        context.frame[TOKENS].tolist(),
        splits,
        context.seed,
        1,
        None,
        False,
    )
    metrics = {
        f"recommender.{system}.recall_at_{k}": figures[system][f"recall@{k}"]
        for system in SYSTEMS
        for k in RECALL_AT
    }
    return Section(
        "Root-cause recommender (first repeat)", format_recall(figures), metrics
    )


__all__ = [
    "cross_validate_recommender",
    "format_recall",
    "pool",
    "recommender_recall",
    "recommender_section",
]
