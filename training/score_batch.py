"""``triage score-batch``: score a whole export with a bundle, in resumable parts.

The export is read in chunks of ``chunk_rows`` rows (:func:`iter_export`). Each
chunk becomes one part file, written under ``<out>.parts/`` through a temporary
name and renamed when complete, so a part on disk is always whole. A rerun with
the same input, model and chunk size skips the parts already there. When every
part exists they are joined into ``out`` (Parquet or CSV) and the part folder
is removed.

Each input row gives exactly one output row: the answers of the scorer, or an
``error`` with the reason when the row could not be read or scored.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from tqdm.auto import tqdm

from features.inputs import ticket_text
from features.loading import RejectedRow, apply_mapping, iter_export
from features.mapping import Mapping, load_mapping
from features.schema import SOURCE_LINE
from models.bundle import MANIFEST, sha256_file
from models.heap import freeze_loaded_objects

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 50_000
# Tickets per onnxruntime call: large enough to amortise the call, small enough
# that the dense text features of one call (rows x vocabulary x 4 bytes) stay
# near 100 MB.
SCORE_BATCH_ROWS = 4_000
OUTPUT_SUFFIXES = (".parquet", ".csv")
JOB_FILE = "job.json"


class BatchError(RuntimeError):
    """A batch scoring run cannot start or finish as asked."""


@dataclass(frozen=True)
class BatchJob:
    """One batch scoring run: what is read, with which model, and where parts go."""

    data: Path
    out: Path
    bundle: Path
    mapping: Mapping
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    @property
    def parts_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def part_path(self, index: int) -> Path:
        return self.parts_dir / f"part-{index:05d}.parquet"

    def identity(self) -> dict[str, Any]:
        """What a rerun must share with the first run for its parts to be reused."""
        stat = self.data.stat()
        return {
            "data": str(self.data.resolve()),
            "data_bytes": stat.st_size,
            "data_mtime_ns": stat.st_mtime_ns,
            "chunk_rows": self.chunk_rows,
            "bundle_manifest_sha256": sha256_file(self.bundle / MANIFEST),
            "mapping": self.mapping.to_dict(),
        }


@dataclass
class BatchSummary:
    """Counts of a finished run."""

    out: Path
    rows: int
    scored: int
    errors: int
    parts: int
    parts_skipped: int
    seconds: float
    rows_reused: int = 0
    """Rows of the parts an earlier run had written."""

    @property
    def rows_per_second(self) -> float:
        """Rows scored by this run per second; rows of reused parts are left out."""
        rows = self.rows - self.rows_reused
        return rows / self.seconds if self.seconds > 0 else 0.0


# Input mapping ------------------------------------------------------------------


def scoring_mapping(mapping: Mapping) -> Mapping:
    """The part of ``mapping`` that scoring reads: intake fields, no targets.

    An export of new tickets has neither labels nor closure columns, so they are
    not required.
    """
    keep = set(mapping.intake) | {"ticket_id", "created_at"}
    return replace(
        mapping,
        fields={name: columns for name, columns in mapping.fields.items() if name in keep},
        extra={name: column for name, column in mapping.extra.items() if name in keep},
        closure=(),
        targets={},
    )


def bundle_mapping(manifest: dict[str, Any]) -> Mapping:
    """Rebuild the scoring mapping recorded in a bundle's manifest.

    The manifest does not record the mapping's null markers, so only empty
    cells count as empty; pass the mapping file when the export has others.
    """
    recorded = manifest["mapping"]
    return scoring_mapping(
        Mapping(
            name=recorded["name"],
            fields={k: list(v) for k, v in recorded["fields"].items()},
            extra=dict(recorded.get("extra", {})),
            intake=tuple(recorded["intake"]),
            closure=tuple(recorded.get("closure", ())),
            targets={},
            source="bundle manifest",
        )
    )


# Scoring one chunk ----------------------------------------------------------------


def score_chunk(scorer, raw: pd.DataFrame, mapping: Mapping, source: str) -> pd.DataFrame:
    """Map and score one raw chunk; return one output row per input row.

    Rows the loader rejects, rows without ticket text and rows whose scoring
    raises get the reason in ``error`` and no answer fields. Output rows are in
    input order.
    """
    load = apply_mapping(raw, mapping, source=source, unique_ids=False)
    tickets = load.tickets
    records = tickets.to_dict("records")
    answers: list[dict[str, Any] | None] = [None] * len(records)
    errors: list[str | None] = [None] * len(records)
    # A ticket without text is an error, as in POST /v1/score.
    with_text = []
    for position, record in enumerate(records):
        if ticket_text(record, scorer.spec).strip():
            with_text.append(position)
        else:
            errors[position] = no_text_error(scorer.spec.text_fields)
    for begin in range(0, len(with_text), SCORE_BATCH_ROWS):
        positions = with_text[begin : begin + SCORE_BATCH_ROWS]
        batch_answers, batch_errors = _score_records(scorer, [records[p] for p in positions])
        for position, answer, error in zip(positions, batch_answers, batch_errors):
            answers[position] = answer
            errors[position] = error
    scored = answer_frame(tickets, answers, errors)
    rejected = rejected_frame(load.rejected)
    if len(rejected) == 0:
        return scored
    frame = pd.concat([scored, rejected], ignore_index=True)
    return frame.sort_values(SOURCE_LINE, kind="stable").reset_index(drop=True)


def no_text_error(fields: tuple[str, ...]) -> str:
    """Build the error of a row whose text fields (``fields``) are all empty."""
    verb = "is" if len(fields) == 1 else "are"
    return (
        f"no ticket text: {' and '.join(fields)} {verb} empty; a ticket needs a "
        "description of the symptom"
    )


def _score_records(scorer, records: list[dict]) -> tuple[list, list]:
    """Score a batch; when the batch fails, score its rows one by one to find the bad ones."""
    try:
        return scorer.score(records), [None] * len(records)
    except Exception as exc:  # noqa: BLE001 - any failure is isolated to its row below
        logger.warning(
            "a batch of %d tickets failed to score (%s); scoring them one by one",
            len(records),
            type(exc).__name__,
        )
    answers, errors = [], []
    for record in records:
        try:
            answers.append(scorer.score([record])[0])
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - reported in the row's error column
            answers.append(None)
            errors.append(f"scoring failed: {type(exc).__name__}: {exc}")
    return answers, errors


def answer_frame(
    tickets: pd.DataFrame, answers: list[dict | None], errors: list[str | None]
) -> pd.DataFrame:
    """Flatten answers into columns, one row per ticket, with the full answer as JSON."""
    flat = [flatten_answer(a) if a is not None else {} for a in answers]
    frame = pd.DataFrame(flat, index=range(len(tickets)))
    frame.insert(0, "ticket_id", tickets["ticket_id"].to_numpy(dtype=object))
    frame.insert(1, SOURCE_LINE, tickets[SOURCE_LINE].to_numpy(dtype=np.int64))
    frame["answer"] = [answer_json(a) if a is not None else None for a in answers]
    frame["error"] = pd.Series(errors, dtype=object)
    return frame


def flatten_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer fields most readers filter on, as scalar columns."""
    row: dict[str, Any] = {}
    category = answer.get("category")
    if category:
        row["category"] = category["code"]
        row["category_name"] = category["name"]
        row["category_probability"] = category["probability"]
    causes = answer.get("root_causes")
    if causes:
        row["root_cause"] = causes[0]["code"]
        row["root_cause_name"] = causes[0]["name"]
        row["root_cause_probability"] = causes[0]["probability"]
    row["needs_review"] = bool(answer.get("needs_review", False))
    for name, value in answer.get("targets", {}).items():
        if name in ("category", "root_cause"):
            continue
        if "flag" in value:
            row[f"{name}_probability"] = value["probability"]
            row[f"{name}_flag"] = bool(value["flag"])
        elif "value" in value:
            row[f"{name}_value"] = value["value"]
        elif value.get("top"):
            row[name] = value["top"][0]["code"]
            row[f"{name}_probability"] = value["top"][0]["probability"]
    return row


def rejected_frame(rejected: list[RejectedRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ticket_id": pd.Series([r.ticket_id for r in rejected], dtype=object),
            SOURCE_LINE: np.asarray([r.line for r in rejected], dtype=np.int64),
            "error": pd.Series([f"rejected: {r.reason}" for r in rejected], dtype=object),
        }
    )


def answer_json(answer: dict[str, Any]) -> str:
    """Write an answer as compact JSON with Chinese text kept as it is.

    orjson writes an answer several times faster than ``json.dumps``, which
    took about a tenth of the scoring time of a chunk.
    """
    try:
        return orjson.dumps(answer, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except orjson.JSONEncodeError:
        # orjson rejects integers beyond 64 bits and nesting deeper than 254 levels.
        return json.dumps(answer, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# Parts ----------------------------------------------------------------------------


def prepare_parts(job: BatchJob, overwrite: bool = False) -> set[int]:
    """Create or reopen the part folder and return the indices of finished parts."""
    # With overwrite, the old output stays until the joined parts replace it.
    if job.out.exists() and not overwrite:
        raise BatchError(
            f"output {job.out} already exists; pass --overwrite to replace it "
            "or choose another --out"
        )
    identity = job.identity()
    job_file = job.parts_dir / JOB_FILE
    if job.parts_dir.is_dir():
        recorded = _read_job(job_file)
        if recorded != identity and not overwrite:
            changed = sorted(k for k in identity if recorded.get(k) != identity[k])
            raise BatchError(
                f"part folder {job.parts_dir} belongs to another run (differs in "
                f"{', '.join(changed)}); pass --overwrite to start again"
            )
        if recorded != identity:
            shutil.rmtree(job.parts_dir)
    job.parts_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic_text(job_file, json.dumps(identity, ensure_ascii=False, indent=2))
    finished = set()
    for path in sorted(job.parts_dir.glob("part-*.parquet")):
        if readable_part(path):
            finished.add(int(path.stem.split("-")[1]))
        else:
            logger.warning("part %s cannot be read; scoring its rows again", path)
            path.unlink()
    return finished


def readable_part(path: Path) -> bool:
    """Return whether ``path`` is a whole Parquet file, by reading its footer."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return False
    return True


def _read_job(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_atomic_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_part(job: BatchJob, index: int, frame: pd.DataFrame) -> Path:
    """Write a part through a temporary file, so a killed run leaves no half part."""
    path = job.part_path(index)
    temporary = path.with_name(path.name + ".tmp")
    frame.to_parquet(temporary, index=False)
    with open(temporary, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(temporary, path)
    return path


def join_parts(job: BatchJob, count: int) -> int:
    """Join parts 0..count-1 into ``job.out``; return the number of rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [job.part_path(i) for i in range(count)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise BatchError(f"parts {', '.join(missing)} are missing from {job.parts_dir}")
    tables = [pq.read_table(p) for p in paths]
    schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
    temporary = job.out.with_name(job.out.name + ".tmp")
    rows = 0
    if job.out.suffix.lower() == ".parquet":
        with pq.ParquetWriter(temporary, schema) as writer:
            for table in tables:
                writer.write_table(_conform(table, schema))
                rows += table.num_rows
    else:
        header = True
        for table in tables:
            frame = _conform(table, schema).to_pandas()
            frame.to_csv(temporary, mode="w" if header else "a", header=header, index=False)
            header = False
            rows += len(frame)
    os.replace(temporary, job.out)
    return rows


def _conform(table, schema):
    """Give a part every column of the joined schema, in its order."""
    import pyarrow as pa

    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def count_rows_hint(path: Path) -> int | None:
    """The number of data rows, exact for Parquet, an upper bound for CSV, for progress."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if suffix == ".csv":
        lines = 0
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                lines += block.count(b"\n")
        return max(lines - 1, 0)
    return None


# Engines --------------------------------------------------------------------------

_worker_scorer = None


def _init_worker(bundle: str, parent: int) -> None:
    global _worker_scorer
    stop_with_parent(parent)
    from models.scorer import Scorer

    _worker_scorer = Scorer(bundle, threads=1, load_similar=False)
    freeze_loaded_objects(collect=False)


def stop_with_parent(parent: int) -> None:
    """Have Linux kill this worker when its parent process ``parent`` exits.

    Without it, workers of a killed ``score-batch`` go on writing parts beside
    the rerun. Other systems keep their default behaviour.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    set_parent_death_signal = 1  # PR_SET_PDEATHSIG in <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(set_parent_death_signal, signal.SIGKILL)
    if os.getppid() != parent:  # the parent exited before prctl took effect
        os._exit(1)


def _score_in_worker(job: BatchJob, index: int, raw: pd.DataFrame, malformed: list) -> int:
    """Score one chunk, write its part from this process and return the part index."""
    raw.attrs["malformed"] = malformed
    write_part(job, index, score_chunk(_worker_scorer, raw, job.mapping, job.data.name))
    return index


class PendingChunks:
    """Iterate over the chunks of an export that have no part yet.

    Rows of skipped chunks are counted on the progress bar as done. After the
    iteration ``count`` is the number of chunks in the export, finished or not.
    """

    def __init__(self, job: BatchJob, finished: set[int], bar):
        self.job, self.finished, self.bar = job, finished, bar
        self.count = 0
        self.rows_reused = 0

    def __iter__(self) -> Iterator[tuple[int, pd.DataFrame]]:
        for index, raw in enumerate(iter_export(self.job.data, self.job.chunk_rows)):
            self.count = index + 1
            if index in self.finished:
                rows = chunk_rows_read(raw)
                self.rows_reused += rows
                self.bar.update(rows)
                continue
            yield index, raw


def chunk_rows_read(raw: pd.DataFrame) -> int:
    """Rows of a raw chunk, counting the malformed CSV records it dropped."""
    return len(raw) + len(raw.attrs.get("malformed", []))


def run_local(job: BatchJob, chunks: PendingChunks, workers: int, bar) -> None:
    """Score pending chunks in ``workers`` processes, each loading the bundle once."""
    if workers <= 1:
        from models.scorer import Scorer

        scorer = Scorer(job.bundle, threads=1, load_similar=False)
        freeze_loaded_objects()
        for index, raw in chunks:
            write_part(job, index, score_chunk(scorer, raw, job.mapping, job.data.name))
            bar.update(chunk_rows_read(raw))
        return

    import multiprocessing as mp

    from features.text import get_tokenizer

    # jieba loads its dictionary here, once, and the forked workers inherit it
    # frozen, so that no collection in a worker writes to the pages they share.
    get_tokenizer()
    freeze_loaded_objects()
    in_flight: dict[Future, tuple[int, int]] = {}
    context = mp.get_context("fork")
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(str(job.bundle), os.getpid()),
    ) as pool:
        for index, raw in chunks:
            rows = chunk_rows_read(raw)
            malformed = raw.attrs.pop("malformed", [])
            future = pool.submit(_score_in_worker, job, index, raw, malformed)
            in_flight[future] = (index, rows)
            # Two chunks per worker keep the workers busy while bounding memory.
            while len(in_flight) >= 2 * workers:
                _collect(job, in_flight, bar)
        while in_flight:
            _collect(job, in_flight, bar)


def _collect(job: BatchJob, in_flight: dict, bar) -> None:
    done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
    for future in done:
        _, rows = in_flight.pop(future)
        future.result()
        bar.update(rows)


# Entry point ----------------------------------------------------------------------


def score_batch(
    data: str | Path,
    out: str | Path,
    model: str | Path | None = None,
    *,
    mapping: Mapping | str | Path | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    engine: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Score every row of ``data`` with the bundle behind ``model`` into ``out``.

    ``model`` is a registry URI (``models:/<name>@<alias>``), a run URI or a
    bundle folder; by default ``$TRIAGE_MODEL_URI``, else
    ``models:/ticket-triage@champion``. ``engine`` is ``local`` (``workers``
    processes, one per core by default) or ``dask`` (the cluster at
    ``scheduler``).
    """
    started = time.perf_counter()
    data, out = Path(data), Path(out)
    if not data.is_file():
        raise FileNotFoundError(f"export {data} not found")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise BatchError(
            f"output {out} has suffix {out.suffix!r}; expected one of "
            f"{', '.join(OUTPUT_SUFFIXES)}"
        )
    if out.exists() and os.path.samefile(out, data):
        raise BatchError(f"output {out} is the input export; choose another --out")
    if chunk_rows < 1:
        raise BatchError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if engine not in ("local", "dask"):
        raise BatchError(f"engine {engine!r} is unknown; expected local or dask")
    # A bundle downloaded from the registry is removed when the run ends.
    with tempfile.TemporaryDirectory(prefix="triage-bundle-") as downloads:
        bundle = resolve_bundle(model, Path(downloads))
        job = BatchJob(
            data=data,
            out=out,
            bundle=bundle,
            mapping=_job_mapping(bundle, mapping),
            chunk_rows=chunk_rows,
        )
        finished = prepare_parts(job, overwrite=overwrite)
        if finished:
            logger.info("%d parts of %s are already scored; skipping them", len(finished), out)
        rows_hint = count_rows_hint(data)
        bar = tqdm(
            total=rows_hint,
            desc="score",
            unit="ticket",
            unit_scale=True,
            disable=not progress,
            mininterval=1,
        )
        chunks = PendingChunks(job, finished, bar)
        with bar:
            if engine == "dask":
                from .dask_engine import score_parts_dask

                score_parts_dask(job, chunks, scheduler, bar)
            else:
                run_local(job, chunks, local_workers(workers, rows_hint, chunk_rows, finished), bar)
        parts = chunks.count
        rows = join_parts(job, parts)
        summary = _summarise(job, rows, parts, len(finished), time.perf_counter() - started)
        summary.rows_reused = chunks.rows_reused
        shutil.rmtree(job.parts_dir)
        logger.info(
            "wrote %d rows of %s into %s (%d scored, %d with errors, %d from reused parts) "
            "in %.1f s, %.0f rows/s",
            summary.rows, data, out, summary.scored, summary.errors, summary.rows_reused,
            summary.seconds, summary.rows_per_second,
        )
        return summary


def local_workers(
    requested: int | None, rows_hint: int | None, chunk_rows: int, finished: set[int]
) -> int:
    """Return how many processes score the pending chunks: one per core by default.

    No more processes start than there are chunks left to score, because each
    one loads the bundle. ``rows_hint`` is the row count of
    :func:`count_rows_hint`, an upper bound for CSV.
    """
    workers = requested or os.cpu_count() or 1
    if rows_hint is not None:
        pending = math.ceil(rows_hint / chunk_rows) - len(finished)
        workers = min(workers, max(1, pending))
    return workers


def resolve_bundle(model: str | Path | None, downloads: Path | None = None) -> Path:
    """Return the bundle folder behind a registry URI, run URI or folder.

    A registry or run URI is downloaded into ``downloads``, by default a new
    temporary folder that the caller removes.
    """
    from models.bundle import find_bundle

    text = str(model or os.environ.get("TRIAGE_MODEL_URI", "models:/ticket-triage@champion"))
    if text.startswith(("models:/", "runs:/")):
        from models.registry_io import download_bundle

        return download_bundle(text, downloads)
    return find_bundle(text)


def _job_mapping(bundle: Path, mapping: Mapping | str | Path | None) -> Mapping:
    if isinstance(mapping, Mapping):
        return scoring_mapping(mapping)
    if mapping is not None:
        return scoring_mapping(load_mapping(mapping))
    from models.bundle import read_manifest

    return bundle_mapping(read_manifest(bundle, verify=False))


def _summarise(job: BatchJob, rows: int, parts: int, skipped: int, seconds: float) -> BatchSummary:
    import pyarrow.parquet as pq

    errors = 0
    for index in range(parts):
        column = pq.read_table(job.part_path(index), columns=["error"]).column("error")
        errors += len(column) - column.null_count
    return BatchSummary(
        out=job.out,
        rows=rows,
        scored=rows - errors,
        errors=errors,
        parts=parts,
        parts_skipped=skipped,
        seconds=seconds,
    )


__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "BatchError",
    "BatchJob",
    "BatchSummary",
    "answer_frame",
    "bundle_mapping",
    "flatten_answer",
    "score_batch",
    "score_chunk",
    "scoring_mapping",
]
