"""Merge operators' feedback from the feedback store into an export's labels.

For every ticket id that appears both in the export and in the store, the label the
operator chose replaces the export's label. Feedback has a time and the export's
label does not, so feedback always wins, and of several feedback entries for one
ticket and label the newest wins. Each merged label is counted as

``confirmed``
    the export had the same label;
``corrected``
    the export had another label;
``added``
    the export had no label.

An added label of a ticket whose feedback was given on suggestions of the model
being trained must not grade that model: the operator may just have accepted what
it suggested. ``FeedbackMerge.keep_out_of_evaluation`` moves such rows from the
evaluation set to the training set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from features.loading import LoadResult
from features.mapping import TargetSpec, fold

logger = logging.getLogger(__name__)

OUTCOMES = ("confirmed", "corrected", "added")
FEEDBACK_TARGETS = ("category", "root_cause", "escalation")


@dataclass
class FeedbackMerge:
    """An export's tickets with feedback labels merged in, and what the merge did."""

    load: LoadResult
    counts: dict[str, dict[str, int]]
    """Per target, the number of labels confirmed, corrected and added."""
    feedback_rows: int
    unmatched_tickets: int
    """Ticket ids with feedback that the export does not contain."""
    feedback_only: dict[str, np.ndarray]
    """Per target, the rows whose only label is feedback on the model being trained."""
    changes: pd.DataFrame
    """One row per merged label: ticket, target, export and feedback label, outcome."""
    source: str = ""
    """The store's URL without its password."""

    def totals(self) -> dict[str, int]:
        return {
            outcome: sum(c[outcome] for c in self.counts.values())
            for outcome in OUTCOMES
        }

    def keep_out_of_evaluation(self, target: str, eval_rows: np.ndarray) -> np.ndarray:
        """Return ``eval_rows`` without the feedback-only rows of ``target``; the
        number removed is logged to the active MLflow run."""
        only = self.feedback_only.get(target)
        if only is None:
            return eval_rows
        removed = int((eval_rows & only).sum())
        if removed:
            import mlflow

            mlflow.log_metric(f"feedback.{target}.excluded_from_evaluation", removed)
            logger.info(
                "target %s: %d evaluation rows labelled only by feedback on this model "
                "moved to training",
                target,
                removed,
            )
        return eval_rows & ~only

    def log_to_mlflow(self) -> None:
        """Log the counts as metrics and the merged labels as ``feedback/labels.csv``."""
        import mlflow

        mlflow.log_param("feedback", self.source)
        metrics = {
            "feedback.rows": self.feedback_rows,
            "feedback.unmatched_tickets": self.unmatched_tickets,
            **{f"feedback.{k}": v for k, v in self.totals().items()},
        }
        for target, counts in self.counts.items():
            metrics.update({f"feedback.{target}.{k}": v for k, v in counts.items()})
        mlflow.log_metrics(metrics)
        if len(self.changes):
            mlflow.log_text(self.changes.to_csv(index=False), "feedback/labels.csv")


def feedback_value(target: TargetSpec, value: Any) -> Any:
    """Turn a chosen label into the form the loader gives the export's labels."""
    if target.kind == "binary":
        return bool(value)
    if target.values is None:
        # Unmapped labels are folded by the loader, so "数据库BUG" and "数据库bug" match.
        return fold(str(value))
    return str(value)


def latest_choices(
    rows: Iterable[Mapping[str, Any]], targets: Iterable[str]
) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Return, per ticket id and target, the newest feedback row that chose a label."""
    ordered = sorted(rows, key=lambda r: (r["recorded_at"], r["id"]))
    latest: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in ordered:
        for target in targets:
            if row.get(f"chosen_{target}") is not None:
                latest.setdefault(str(row["ticket_id"]), {})[target] = row
    return latest


def _is_missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and np.isnan(value))
        or value is pd.NA
    )


CHANGE_COLUMNS = [
    "ticket_id",
    "target",
    "export_label",
    "feedback_label",
    "outcome",
    "model_name",
    "model_version",
    "recorded_at",
]


class _LabelMerger:
    """Label columns of one export as writable arrays, with the merge's bookkeeping."""

    def __init__(
        self, tickets: pd.DataFrame, targets: dict[str, TargetSpec], model_name: str
    ):
        self.targets = targets
        self.model_name = model_name
        self.position = {
            str(t): i for i, t in enumerate(tickets["ticket_id"].to_numpy())
        }
        self.columns = {
            spec.field: tickets[spec.field].to_numpy(dtype=object, copy=True)
            for spec in targets.values()
        }
        self.counts = {name: dict.fromkeys(OUTCOMES, 0) for name in targets}
        self.feedback_only = {
            name: np.zeros(len(tickets), dtype=bool) for name in targets
        }
        self.changes: list[dict[str, Any]] = []
        self.unmatched = 0

    def apply(self, ticket_id: str, chosen: Mapping[str, Mapping[str, Any]]) -> None:
        """Set the chosen labels of one ticket; ``chosen`` maps target to feedback row."""
        row_index = self.position.get(ticket_id)
        if row_index is None:
            self.unmatched += 1
            return
        for name, row in chosen.items():
            spec = self.targets[name]
            new = feedback_value(spec, row[f"chosen_{name}"])
            old = self.columns[spec.field][row_index]
            if _is_missing(old):
                outcome, old = "added", None
                if row["model_name"] == self.model_name:
                    self.feedback_only[name][row_index] = True
            else:
                outcome = "confirmed" if old == new else "corrected"
            self.counts[name][outcome] += 1
            self.columns[spec.field][row_index] = new
            self.changes.append(
                {
                    "ticket_id": ticket_id,
                    "target": name,
                    "export_label": old,
                    "feedback_label": new,
                    "outcome": outcome,
                    "model_name": row["model_name"],
                    "model_version": row["model_version"],
                    "recorded_at": row["recorded_at"],
                }
            )


def merge_feedback_rows(
    load: LoadResult, rows: list[Mapping[str, Any]], model_name: str
) -> FeedbackMerge:
    """Merge feedback rows (as ``FeedbackStore.feedback_rows`` returns them) into
    ``load``; the input tickets are not changed."""
    targets = {
        name: spec
        for name, spec in load.mapping.targets.items()
        if name in FEEDBACK_TARGETS
    }
    tickets = load.tickets.copy()
    merger = _LabelMerger(tickets, targets, model_name)
    for ticket_id, chosen in latest_choices(rows, targets).items():
        merger.apply(ticket_id, chosen)
    for field_name, values in merger.columns.items():
        tickets[field_name] = values

    if merger.unmatched:
        logger.warning(
            "%d tickets with feedback are not in the export; their feedback is not used",
            merger.unmatched,
        )
    return FeedbackMerge(
        load=replace(load, tickets=tickets),
        counts=merger.counts,
        feedback_rows=len(rows),
        unmatched_tickets=merger.unmatched,
        feedback_only=merger.feedback_only,
        changes=pd.DataFrame(merger.changes, columns=CHANGE_COLUMNS),
    )


def merge_feedback(load: LoadResult, db_url: str, model_name: str) -> FeedbackMerge:
    """Read every feedback entry from the store at ``db_url`` and merge it into ``load``.

    ``model_name`` is the registered name of the model about to be trained.
    """
    from sqlalchemy.engine import make_url

    from serving.feedback import FeedbackStore

    store = FeedbackStore(db_url, create=False)
    try:
        rows = store.feedback_rows()
    finally:
        store.close()
    merged = merge_feedback_rows(load, rows, model_name)
    merged.source = make_url(store.url).render_as_string(hide_password=True)
    totals = merged.totals()
    logger.info(
        "feedback: %d entries; labels confirmed %d, corrected %d, added %d",
        len(rows),
        totals["confirmed"],
        totals["corrected"],
        totals["added"],
    )
    return merged


__all__ = [
    "FeedbackMerge",
    "feedback_value",
    "latest_choices",
    "merge_feedback",
    "merge_feedback_rows",
]
