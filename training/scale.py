"""Training settings and checks that keep a million-ticket export within one machine.

Three things change with the size of the data, from :data:`LARGE_DATA_ROWS`
tickets on:

- The feature pipeline is fitted once per feature mode, and every target's
  LightGBM model is fitted on rows of the one sparse matrix it returns
  (:func:`shared_features`), instead of fitting the vectorisers again for each
  target and for its calibration fit.
- LightGBM's cost grows with rows times trees, so each tree is grown on a
  bounded random share of the rows (:func:`large_data_params`), and each
  classifier is fitted once: the model fitted without its held-out
  calibration rows is the one shipped.
- The ONNX parity check compares a random sample of the evaluation rows
  (:func:`parity_rows`). onnxruntime's text vectoriser returns a dense
  ``rows x vocabulary`` float tensor, so the rows are checked in batches
  (:func:`check_parity_in_batches`) instead of in one call.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.inputs import FeatureSpec
from features.pipeline import build_feature_pipeline, count_terms, fit_from_counts
from models.estimators import FittedFeatures
from models.export import ParityReport, check_parity

logger = logging.getLogger(__name__)

# From this many tickets on, the settings of this module apply.
LARGE_DATA_ROWS = 50_000
# Fewer, faster rounds than the defaults, and row-wise histograms. On 100,000
# demo tickets with 5,034 sparse columns and half the rows drawn per tree, a
# tree took 0.20 CPU seconds row-wise and 0.22 column-wise (LightGBM 4.7,
# 2-core machine).
LARGE_DATA_PARAMS: dict[str, Any] = {
    "n_estimators": 100,
    "learning_rate": 0.12,
    "subsample": 0.5,
    "subsample_freq": 1,
    "min_child_samples": 20,
    "force_col_wise": False,
    "force_row_wise": True,
}
# Each tree is grown on a random share of the training rows (bagging): half of
# them, and at most this many. A tree's cost grows with the rows it is grown
# on (about 2 CPU microseconds a row at 5,000 columns and 16 leaves, measured on
# 100,000 demo tickets), so the cap keeps LightGBM's time flat past 200,000
# rows. Over 100 rounds every row is still drawn many times.
TREE_ROWS = 100_000
# Rows per onnxruntime call in the parity check: 20,000 rows x 5,000 columns of
# float32 is 400 MB for the dense text features.
PARITY_BATCH_ROWS = 20_000
# Rows per process-pool task when the features of a large export are counted
# and transformed.
FEATURE_CHUNK_ROWS = 50_000
# Evaluation rows the parity check of a large export compares, drawn at random.
PARITY_SAMPLE_ROWS = 20_000


def is_large(tickets: int) -> bool:
    """Return whether an export of ``tickets`` tickets gets this module's settings."""
    return tickets >= LARGE_DATA_ROWS


def large_data_params(train_rows: int, params: dict | None, tickets: int | None = None) -> dict | None:
    """LightGBM parameters for ``train_rows`` rows; the caller's ``params`` win.

    They apply to an export of ``tickets`` tickets (by default ``train_rows``)
    from :data:`LARGE_DATA_ROWS` on; below it the caller's parameters are
    returned unchanged. Above ``2 * TREE_ROWS`` training rows the bagging share
    shrinks so that a tree is grown on :data:`TREE_ROWS` rows.
    """
    if not is_large(train_rows if tickets is None else tickets):
        return params
    large = {**LARGE_DATA_PARAMS, "subsample": min(0.5, TREE_ROWS / max(train_rows, 1))}
    chosen = {**large, **(params or {})}
    logger.info(
        "%d training rows: large-data LightGBM settings %s",
        train_rows,
        ", ".join(f"{k}={v}" for k, v in chosen.items() if k in LARGE_DATA_PARAMS),
    )
    return chosen


def shared_features(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    fit_rows: np.ndarray,
    workers: int | None = None,
    chunk_rows: int = FEATURE_CHUNK_ROWS,
) -> FittedFeatures:
    """Fit the feature pipeline on the ``fit_rows`` of ``frame`` and transform every row.

    ``fit_rows`` is a boolean mask; the returned matrix has one float32 row per
    row of ``frame``, in its order. With more than ``chunk_rows`` rows the
    n-grams are counted and the rows transformed in chunks of ``chunk_rows``,
    in ``workers`` forked processes (one per core by default). The vocabulary
    equals that of one fit on all rows (:func:`features.pipeline.fit_from_counts`).
    """
    started = time.perf_counter()
    fit_rows = np.asarray(fit_rows, dtype=bool)
    if not fit_rows.any():
        raise ValueError("no training row to fit the feature pipeline on")
    workers = workers or os.cpu_count() or 1
    fitting = frame[fit_rows]
    transformer = build_feature_pipeline(fitting, spec)
    if workers > 1 and len(frame) > chunk_rows:
        parts = _in_pool(_count_part, fitting, transformer, workers, chunk_rows)
        transformer = fit_from_counts(transformer, parts, len(fitting), fitting.head(chunk_rows))
        del parts
        blocks = _in_pool(_transform_part, frame, transformer, workers, chunk_rows)
        matrix = sp.vstack(blocks, format="csr", dtype=np.float32)
    else:
        transformer.fit(fitting)
        matrix = sp.csr_matrix(transformer.transform(frame), dtype=np.float32)
    logger.info(
        "features of %d tickets (%d columns) fitted once for all targets in %.1f s",
        matrix.shape[0], matrix.shape[1], time.perf_counter() - started,
    )
    return FittedFeatures(transformer, matrix)


# Rows and pipeline that the forked processes of :func:`_in_pool` read.
_pool_inputs: tuple[pd.DataFrame, Any] | None = None


def _count_part(bounds: tuple[int, int]) -> dict[str, Any]:
    rows, template = _pool_inputs
    return count_terms(rows.iloc[bounds[0] : bounds[1]], template)


def _transform_part(bounds: tuple[int, int]):
    rows, transformer = _pool_inputs
    return sp.csr_matrix(transformer.transform(rows.iloc[bounds[0] : bounds[1]]), dtype=np.float32)


def _in_pool(function, rows: pd.DataFrame, pipeline, workers: int, chunk_rows: int) -> list:
    """``function`` over chunks of ``rows`` in forked processes, results in row order.

    The processes inherit ``rows`` and ``pipeline`` through the fork instead of
    receiving a pickled copy of each chunk.
    """
    import multiprocessing as mp

    global _pool_inputs
    bounds = [(b, min(b + chunk_rows, len(rows))) for b in range(0, len(rows), chunk_rows)]
    _pool_inputs = (rows, pipeline)
    try:
        with mp.get_context("fork").Pool(min(workers, len(bounds))) as pool:
            return pool.map(function, bounds, chunksize=1)
    finally:
        _pool_inputs = None


def parity_rows(evaluation: np.ndarray, seed: int, limit: int = PARITY_SAMPLE_ROWS) -> np.ndarray:
    """Positions of at most ``limit`` evaluation rows, drawn at random and kept in order."""
    positions = np.flatnonzero(evaluation)
    if len(positions) <= limit:
        return positions
    chosen = np.random.default_rng(seed).choice(positions, size=limit, replace=False)
    return np.sort(chosen)


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
    "PARITY_SAMPLE_ROWS",
    "TREE_ROWS",
    "check_parity_in_batches",
    "is_large",
    "large_data_params",
    "merge_parity_reports",
    "parity_rows",
    "shared_features",
]
