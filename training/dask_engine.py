"""The Dask engine: batch scoring and training on a ``dask.distributed`` cluster.

A test's ``LocalCluster`` and a real cluster run the same code. The calling
process reads the export in chunks and places each chunk on a worker, round
robin, so the tickets live on the cluster and the caller keeps only labels
and metadata. Every worker must be able to import this package (the same release
on the same Python).

Scoring: each chunk is mapped and scored on a worker, which loads the bundle
once (the bundle's files are broadcast to every worker, so no shared disk is
needed); the answers come back to the caller, which writes the parts.

Training, per target: document frequencies of every n-gram and counts of every
metadata value are counted per partition and summed, which fixes the
vocabulary and categories as a single fit on all training rows would, ties at
the ``max_features`` cut included. Each partition is then
turned into a sparse float32 matrix where it lives, and a
``lightgbm.DaskLGBMClassifier`` or ``DaskLGBMRegressor`` trains on them with
the options the local engine would use. Evaluation scores and the ONNX parity
check run per partition on the workers.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.inputs import FeatureSpec, feature_frame, ticket_text
from features.loading import DEFAULT_CHUNK_ROWS, LoadResult, iter_tickets
from features.mapping import Mapping, TargetSpec
from features.pipeline import (
    build_feature_pipeline,
    count_terms,
    fit_from_counts,
    select_vocabulary,
)
from features.schema import TEXT_FIELDS
from features.text import token_string

logger = logging.getLogger(__name__)

# Columns the caller drops after placing a chunk on the cluster: free text is
# the bulk of a ticket and only the workers read it.
FREE_TEXT_FIELDS = (*TEXT_FIELDS, "closure_notes")
# Rows of the first partition the caller fetches to fit the feature pipeline
# once its vocabulary and categories are fixed.
TEMPLATE_ROWS = 2_000


class DaskEngineError(RuntimeError):
    """The Dask cluster cannot be reached or cannot run the job as asked."""


def connect(scheduler: str | None):
    """Return a ``distributed.Client`` for the scheduler at ``scheduler``."""
    from distributed import Client

    if not scheduler:
        raise DaskEngineError(
            "the dask engine needs a scheduler address, e.g. --scheduler tcp://host:8786"
        )
    try:
        return Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise DaskEngineError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from exc


# Batch scoring ---------------------------------------------------------------------

_scorers: dict[str, Any] = {}
_scorers_lock = threading.Lock()


def bundle_files(folder: Path) -> dict[str, bytes]:
    """Read every file of a bundle folder, keyed by relative path, to ship to the workers."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def worker_scorer(files: dict[str, bytes], key: str):
    """Return this worker's scorer for bundle ``key``, unpacking and loading it on first use."""
    from models.scorer import Scorer

    with _scorers_lock:
        if key not in _scorers:
            folder = Path(tempfile.mkdtemp(prefix="triage-bundle-"))
            for name, content in files.items():
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            _scorers[key] = Scorer(folder, threads=1, load_similar=False)
        return _scorers[key]


def _score_on_worker(files, key, raw, malformed, mapping, source):
    from .score_batch import score_chunk

    raw.attrs["malformed"] = malformed
    return score_chunk(worker_scorer(files, key), raw, mapping, source)


def score_parts_dask(job, chunks, scheduler: str | None, bar) -> None:
    """Score the pending chunks of ``job`` on the cluster and write their parts here."""
    from distributed import wait

    from models.bundle import MANIFEST, sha256_file

    from .score_batch import chunk_rows_read, write_part

    client = connect(scheduler)
    try:
        key = sha256_file(job.bundle / MANIFEST)
        [files] = client.scatter([bundle_files(job.bundle)], broadcast=True)
        slots = 2 * max(1, sum(client.nthreads().values()))
        in_flight: dict = {}
        for index, raw in chunks:
            rows = chunk_rows_read(raw)
            malformed = raw.attrs.pop("malformed", [])
            future = client.submit(
                _score_on_worker, files, key, raw, malformed, job.mapping, job.data.name,
                pure=False,
            )
            in_flight[future] = (index, rows)
            while len(in_flight) >= slots:
                _write_done(job, in_flight, wait(list(in_flight), return_when="FIRST_COMPLETED").done, bar, write_part)
        while in_flight:
            _write_done(job, in_flight, wait(list(in_flight), return_when="FIRST_COMPLETED").done, bar, write_part)
    finally:
        client.close()


def _write_done(job, in_flight: dict, done, bar, write_part) -> None:
    for future in done:
        index, rows = in_flight.pop(future)
        write_part(job, index, future.result())
        bar.update(rows)
        future.release()


# Training --------------------------------------------------------------------------


def _features_on_worker(tickets: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    texts = [ticket_text(r, spec) for r in tickets[list(spec.text_fields)].to_dict("records")]
    return feature_frame(tickets, spec, tokens=[token_string(t) for t in texts])


def _count_on_worker(frame: pd.DataFrame, mask: np.ndarray, template) -> tuple[dict, int]:
    """Document and term frequencies per text vectoriser, value counts per encoder."""
    return count_terms(frame[mask], template), int(mask.sum())


def _transform_on_worker(frame: pd.DataFrame, mask: np.ndarray, features):
    import scipy.sparse as sp

    return sp.csr_matrix(features.transform(frame[mask]), dtype=np.float32)


def _evaluate_on_worker(frame, mask, ids, model, graph_bytes):
    """Scores of the evaluation rows and their ONNX parity report."""
    import onnx

    from .scale import check_parity_in_batches

    rows = frame[mask]
    if len(rows) == 0:
        return None, None
    scores = model.predict_scores(rows)
    report = check_parity_in_batches(model, onnx.load_from_string(graph_bytes), rows, list(ids))
    return scores, report


def prepare_labels(name: str, kind: str, y: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Labels as ``models.estimators.fit_target`` fits them, and the target transform."""
    if kind == "regression":
        return np.log1p(np.clip(y.astype(float), 0, None)), "log1p"
    y = y.astype(bool) if kind == "binary" else y.astype(str)
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"target {name} has a single label {y[0]!r} in the training rows; "
            "a classifier needs at least two"
        )
    return y, None


class DaskTraining:
    """Tickets placed on a Dask cluster, and the per-target fit that :func:`train` calls."""

    def __init__(self, scheduler: str | None, n_jobs: int = 2, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.client = connect(scheduler)
        self.n_jobs = n_jobs
        self.chunk_rows = chunk_rows
        self.workers = sorted(self.client.scheduler_info()["workers"])
        if not self.workers:
            raise DaskEngineError("the Dask cluster has no workers")
        self.tickets: list = []
        self.owners: list[str] = []
        self.bounds: list[tuple[int, int]] = []
        self.frames: list = []

    # Placing the tickets -------------------------------------------------------

    def load(self, data, mapping: Mapping | str | Path | None, strict: bool) -> LoadResult:
        """Read an export in chunks onto the cluster; return the tickets without free text."""
        kept, rejected, rows_read, issues = [], [], 0, {}
        pending: list[pd.DataFrame] = []
        loaded_mapping = None
        for part in iter_tickets(data, mapping, strict, self.chunk_rows):
            loaded_mapping = part.mapping
            rows_read += part.rows_read
            rejected.extend(part.rejected)
            for target, counter in part.label_issues.items():
                issues.setdefault(target, Counter()).update(counter)
            pending.append(part.tickets)
            # Chunks are held back until there is one per worker, so that a
            # small export still reaches every worker.
            if len(self.tickets) + len(pending) > len(self.workers):
                for chunk in pending:
                    kept.append(self._place(chunk))
                pending = []
        kept.extend(self._place(chunk) for chunk in self._spread(pending))
        tickets = pd.concat(kept, ignore_index=True)
        logger.info(
            "placed %d tickets on %d Dask workers in %d partitions",
            len(tickets), len(self.workers), len(self.tickets),
        )
        return LoadResult(
            tickets=tickets, mapping=loaded_mapping, rows_read=rows_read,
            rejected=sorted(rejected, key=lambda r: r.line), label_issues=issues,
        )

    def distribute(self, load: LoadResult) -> LoadResult:
        """Place already loaded tickets on the cluster; return them without free text."""
        chunks = [
            load.tickets.iloc[i : i + self.chunk_rows]
            for i in range(0, len(load.tickets), self.chunk_rows)
        ]
        kept = [self._place(chunk) for chunk in self._spread(chunks)]
        load.tickets = pd.concat(kept, ignore_index=True)
        return load

    def _spread(self, chunks: list[pd.DataFrame]) -> list[pd.DataFrame]:
        """Cut the last chunks so that every worker gets at least one partition."""
        missing = len(self.workers) - len(self.tickets)
        if missing <= len(chunks) or not chunks:
            return chunks
        whole = pd.concat(chunks, ignore_index=True)
        pieces = max(1, min(missing, len(whole)))
        return [whole.iloc[rows] for rows in np.array_split(np.arange(len(whole)), pieces)]

    def _place(self, chunk: pd.DataFrame) -> pd.DataFrame:
        worker = self.workers[len(self.tickets) % len(self.workers)]
        start = self.bounds[-1][1] if self.bounds else 0
        chunk = chunk.reset_index(drop=True)
        self.tickets.append(self.client.scatter(chunk, workers=[worker]))
        self.owners.append(worker)
        self.bounds.append((start, start + len(chunk)))
        return chunk.drop(columns=[c for c in FREE_TEXT_FIELDS if c in chunk.columns])

    def prepare(self, spec: FeatureSpec) -> None:
        """Tokenise every partition where it lives and keep the model inputs there."""
        from distributed import wait

        self.frames = [
            self.client.submit(_features_on_worker, tickets, spec, workers=[owner])
            for tickets, owner in zip(self.tickets, self.owners)
        ]
        wait(self.frames)
        for future in self.tickets:
            future.release()
        self.tickets = []
        logger.info("tokenised %d partitions on the cluster", len(self.frames))

    # Fitting one target -------------------------------------------------------------

    def _split(self, values: np.ndarray) -> list[np.ndarray]:
        return [values[a:b] for a, b in self.bounds]

    def _map(self, function, *per_partition, **shared) -> list:
        return [
            self.client.submit(function, frame, *args, workers=[owner], pure=False, **shared)
            for frame, owner, *args in zip(self.frames, self.owners, *per_partition)
        ]

    def fit_features(self, spec: FeatureSpec, train: np.ndarray, options: dict | None = None):
        """Fit the feature pipeline on the training rows with cluster-wide counts."""
        masks = self._split(train)
        first = next(i for i, m in enumerate(masks) if m.any())
        sample = self.client.submit(
            lambda frame, mask: frame[mask].head(TEMPLATE_ROWS), self.frames[first], masks[first]
        ).result()
        template = build_feature_pipeline(sample, spec, **(options or {}))
        parts = self.client.gather(self._map(_count_on_worker, masks, template=template))
        return fit_from_counts(template, [counts for counts, _ in parts], sum(n for _, n in parts), sample)

    def fit_and_check(
        self,
        target: TargetSpec,
        frame,
        y: np.ndarray,
        train: np.ndarray,
        evaluation: np.ndarray,
        spec: FeatureSpec,
        probes: pd.DataFrame,
        seed: int,
        n_jobs: int,
        params: dict | None,
        ticket_ids: np.ndarray,
    ):
        """Fit, evaluate, export and parity-check one target; the local ``fit_and_check`` contract.

        ``frame`` is unused: the model inputs are the partitions on the cluster.
        """
        from sklearn.pipeline import Pipeline

        from models.estimators import TargetModel
        from models.export import require_parity, to_onnx

        from .evaluate import classification_metrics, regression_metrics
        from .scale import check_parity_in_batches, merge_parity_reports

        labels, transform = prepare_labels(target.name, target.kind, y[train])
        features = self.fit_features(spec, train, target.model.get("features"))
        estimator = self._fit_estimator(target, features, labels, train, seed, params)
        classes = [] if target.kind == "regression" else list(estimator.classes_)
        pipeline = Pipeline([("features", features), ("model", estimator)])
        model = TargetModel(target.name, target.kind, pipeline, labels=classes, transform=transform)

        graph = to_onnx(model, spec)
        [shared_model] = self.client.scatter([model], broadcast=True)
        results = self.client.gather(
            self._map(
                _evaluate_on_worker, self._split(evaluation), self._split(ticket_ids),
                model=shared_model, graph_bytes=graph.SerializeToString(),
            )
        )
        scored = [scores for scores, _ in results if scores is not None]
        width = max(1, len(classes))
        scores = np.concatenate(scored) if scored else np.zeros((0, width))
        reports = [report for _, report in results if report is not None]
        reports.append(
            check_parity_in_batches(model, graph, probes, [f"probe-{i}" for i in range(len(probes))])
        )
        report = merge_parity_reports(reports)
        require_parity(report)

        if not evaluation.any():
            metrics: dict[str, Any] = {"rows": 0}
        elif target.kind == "regression":
            baseline = float(np.median(y[train].astype(float)))
            metrics = regression_metrics(y[evaluation].astype(float), scores, baseline)
        else:
            y_eval = y[evaluation].astype(bool if target.kind == "binary" else str)
            metrics = classification_metrics(y_eval, scores, model.labels)
        metrics["parity_max_abs_diff"] = report.max_abs_diff
        return model, graph, metrics, scores

    def _fit_estimator(self, target, features, labels, train, seed, params):
        """Train LightGBM across the workers; return the fitted local estimator."""
        import dask
        import dask.array as da
        import scipy.sparse as sp
        from lightgbm import DaskLGBMClassifier, DaskLGBMRegressor

        from models.estimators import (
            DEFAULT_CLASS_WEIGHT,
            build_estimator,
            class_weights,
            target_fit_options,
        )

        n_classes = 0 if target.kind == "regression" else len(np.unique(labels))
        # The target's own settings and the balanced class weights, as the
        # local engine's fit applies them.
        settings = target_fit_options(target.model, params=params, class_weight=DEFAULT_CLASS_WEIGHT)
        params = settings["params"]
        if target.kind != "regression" and settings["class_weight"]:
            params = {**(params or {}), "class_weight": class_weights(labels, settings["class_weight"])}
        local = build_estimator(target.kind, n_classes, seed, self.n_jobs, params)
        options = {k: v for k, v in local.get_params().items() if k != "n_jobs"}
        kind = DaskLGBMRegressor if target.kind == "regression" else DaskLGBMClassifier

        masks = self._split(train)
        y_parts = np.split(labels, np.cumsum([m.sum() for m in masks])[:-1])
        if target.kind != "regression":
            self._check_labels_per_worker(target.name, masks, y_parts, labels)
        [shared] = self.client.scatter([features], broadcast=True)
        matrices = self._map(_transform_on_worker, masks, features=shared)
        width = len(features.get_feature_names_out())
        blocks, label_blocks = [], []
        for future, mask, part in zip(matrices, masks, y_parts):
            rows = int(mask.sum())
            if rows == 0:
                continue
            blocks.append(
                da.from_delayed(
                    dask.delayed(future), shape=(rows, width), dtype=np.float32,
                    meta=sp.csr_matrix((0, width), dtype=np.float32),
                )
            )
            label_blocks.append(da.from_array(part, chunks=len(part)))
        X = da.concatenate(blocks, axis=0)
        y = da.concatenate(label_blocks, axis=0)
        model = kind(client=self.client, **options)
        model.fit(X, y)
        return model.to_local()

    def _check_labels_per_worker(self, name, masks, y_parts, labels) -> None:
        """LightGBM fits a label encoder per worker, so each worker needs every label."""
        everything = set(np.unique(labels).tolist())
        per_worker: dict[str, set] = {}
        for owner, mask, part in zip(self.owners, masks, y_parts):
            if mask.any():
                per_worker.setdefault(owner, set()).update(np.unique(part).tolist())
        for worker, found in per_worker.items():
            missing = everything - found
            if missing:
                raise DaskEngineError(
                    f"target {name}: worker {worker} holds no training row of labels "
                    f"{sorted(map(str, missing))}; LightGBM's Dask estimator needs every "
                    "label on every worker. Use fewer workers or raise min_count for the target"
                )

    def close(self) -> None:
        for future in self.frames:
            future.release()
        self.client.close()


__all__ = [
    "DaskEngineError",
    "DaskTraining",
    "bundle_files",
    "connect",
    "prepare_labels",
    "score_parts_dask",
    "select_vocabulary",
]
