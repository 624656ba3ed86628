"""Training settings and checks that keep a million-ticket export within one machine.

Two things change with the size of the data. LightGBM's cost grows with rows
times trees, so large training sets get fewer, shallower-sampled rounds
(:func:`large_data_params`). And the ONNX parity check runs over every
evaluation row: onnxruntime's text vectoriser returns a dense
``rows x vocabulary`` float tensor, so the rows are checked in batches
(:func:`check_parity_in_batches`) instead of in one call.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from models.export import ParityReport, check_parity

logger = logging.getLogger(__name__)

# From this many training rows on, :data:`LARGE_DATA_PARAMS` apply.
LARGE_DATA_ROWS = 200_000
# Trees are fitted on a random half of the rows each round (bagging), and
# row-wise histograms replace column-wise ones. On 100,000 demo tickets with
# about 5,000 sparse columns, a tree took 0.10 CPU seconds row-wise and 0.23
# column-wise (LightGBM 4.7, 2-core machine).
LARGE_DATA_PARAMS: dict[str, Any] = {
    "n_estimators": 100,
    "learning_rate": 0.12,
    "subsample": 0.5,
    "subsample_freq": 1,
    "min_child_samples": 20,
    "force_col_wise": False,
    "force_row_wise": True,
}
# Rows per onnxruntime call in the parity check: 20,000 rows x 5,000 columns of
# float32 is 400 MB for the dense text features.
PARITY_BATCH_ROWS = 20_000


def large_data_params(train_rows: int, params: dict | None) -> dict | None:
    """LightGBM parameters for ``train_rows`` rows; the caller's ``params`` win.

    Below :data:`LARGE_DATA_ROWS` rows the caller's parameters are returned
    unchanged.
    """
    if train_rows < LARGE_DATA_ROWS:
        return params
    chosen = {**LARGE_DATA_PARAMS, **(params or {})}
    logger.info(
        "%d training rows: large-data LightGBM settings %s",
        train_rows,
        ", ".join(f"{k}={v}" for k, v in chosen.items() if k in LARGE_DATA_PARAMS),
    )
    return chosen


def check_parity_in_batches(
    model, graph, frame: pd.DataFrame, row_ids: list, batch_rows: int = PARITY_BATCH_ROWS
) -> ParityReport:
    """Run :func:`models.export.check_parity` over ``frame`` in batches and merge the reports.

    Every row is still compared; the merged report has the largest difference,
    the total of argmax mismatches and the five worst rows over all batches.
    """
    if len(frame) <= batch_rows:
        return check_parity(model, graph, frame, row_ids=row_ids)
    reports = []
    for begin in range(0, len(frame), batch_rows):
        rows = frame.iloc[begin : begin + batch_rows]
        reports.append(check_parity(model, graph, rows, row_ids=row_ids[begin : begin + batch_rows]))
    return merge_parity_reports(reports)


def merge_parity_reports(reports: list[ParityReport]) -> ParityReport:
    """Merge reports into one: largest difference, all mismatches, five worst rows."""
    worst = sorted(
        (row for report in reports for row in report.worst_rows), key=lambda r: -r[1]
    )[:5]
    return ParityReport(
        target=reports[0].target,
        rows=sum(r.rows for r in reports),
        max_abs_diff=max(r.max_abs_diff for r in reports),
        argmax_mismatches=sum(r.argmax_mismatches for r in reports),
        worst_rows=worst,
    )



__all__ = [
    "LARGE_DATA_PARAMS",
    "LARGE_DATA_ROWS",
    "PARITY_BATCH_ROWS",
    "check_parity_in_batches",
    "large_data_params",
    "merge_parity_reports",
]
