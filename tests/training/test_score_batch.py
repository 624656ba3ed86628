"""Batch scoring: parts, resume after a kill, bad rows, and chunked reading."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features.loading import iter_export, load_tickets, read_export
from models.scorer import Scorer
from training.score_batch import BatchError, score_batch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tickets_csv(tmp_path_factory) -> Path:
    from training.demo_data import write_demo_data

    return write_demo_data(3000, tmp_path_factory.mktemp("batch") / "tickets.csv", seed=3)


def test_score_batch_writes_one_row_per_ticket(demo_bundle, tickets_csv, tmp_path):
    out = tmp_path / "scores.parquet"
    summary = score_batch(tickets_csv, out, demo_bundle, chunk_rows=700, workers=1, progress=False)
    scores = pd.read_parquet(out)
    source = pd.read_csv(tickets_csv, dtype=str)
    assert summary.rows == len(source)
    assert summary.errors == 0
    assert summary.parts == 5
    assert scores["ticket_id"].tolist() == source["ticket_id"].tolist()
    assert scores["error"].isna().all()
    for column in ("category", "category_name", "category_probability", "root_cause",
                   "escalation_probability", "escalation_flag", "needs_review", "answer"):
        assert column in scores.columns, column
    assert not (out.parent / "scores.parquet.parts").exists()


def test_score_batch_matches_scorer_answers(demo_bundle, tickets_csv, tmp_path):
    out = tmp_path / "scores.csv"
    score_batch(tickets_csv, out, demo_bundle, chunk_rows=1000, workers=2, progress=False)
    scores = pd.read_csv(out, dtype={"ticket_id": str})
    tickets = load_tickets(tickets_csv).tickets.head(50)
    expected = Scorer(demo_bundle).score(tickets.to_dict("records"))
    for row, answer in zip(scores.head(50).itertuples(), expected):
        assert row.category == answer["category"]["code"]
        assert row.category_probability == pytest.approx(answer["category"]["probability"], abs=1e-9)
        assert json.loads(row.answer)["root_causes"] == answer["root_causes"]


def test_score_batch_reports_bad_rows_in_error_column(demo_bundle, tmp_path, tickets_csv):
    source = pd.read_csv(tickets_csv, dtype=str, keep_default_na=False).head(40)
    source.loc[3, "created_at"] = ""
    source.loc[5, "created_at"] = "not a time"
    source.loc[7, "ticket_id"] = source.loc[6, "ticket_id"]
    path = tmp_path / "bad.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(source.columns)
        rows = source.values.tolist()
        writer.writerows(rows[:10])
        writer.writerow(["too", "few", "fields"])
        writer.writerows(rows[10:])
    out = tmp_path / "bad-scores.parquet"
    summary = score_batch(path, out, demo_bundle, chunk_rows=15, workers=1, progress=False)
    scores = pd.read_parquet(out)
    assert len(scores) == 41
    assert summary.errors == 3
    errors = scores.set_index("source_line")["error"]
    assert errors[5].startswith("rejected: missing created_at")
    assert errors[7].startswith("rejected: invalid created_at")
    assert errors[12].startswith("rejected: malformed row: 3 fields")
    # A repeated ticket id is scored like any other row.
    repeated = scores[scores["ticket_id"] == source.loc[6, "ticket_id"]]
    assert len(repeated) == 2
    assert repeated["error"].isna().all()
    assert scores["source_line"].is_monotonic_increasing


def test_score_batch_reports_rows_without_text(demo_bundle, tmp_path, tickets_csv):
    source = pd.read_csv(tickets_csv, dtype=str, keep_default_na=False).head(12)
    source.loc[2, ["title", "description"]] = ["", ""]
    source.loc[4, ["title", "description"]] = ["  ", "\t \n"]
    source.loc[6, "title"] = ""
    path = tmp_path / "no-text.csv"
    source.to_csv(path, index=False)
    out = tmp_path / "no-text.parquet"
    summary = score_batch(path, out, demo_bundle, chunk_rows=5, workers=1, progress=False)
    scores = pd.read_parquet(out)
    assert len(scores) == 12
    assert summary.errors == 2
    errors = scores["error"]
    for position in (2, 4):
        assert errors[position].startswith("no ticket text: "), position
        assert pd.isna(scores.loc[position, "category"]), position
    assert errors.drop([2, 4]).isna().all()
    assert scores["ticket_id"].tolist() == source["ticket_id"].tolist()
    # Only the title is empty in row 6, and its description is scored.
    assert isinstance(scores.loc[6, "category"], str)


def test_score_batch_rerun_skips_finished_parts(demo_bundle, tickets_csv, tmp_path):
    reference = score_batch(tickets_csv, tmp_path / "reference.parquet", demo_bundle,
                            chunk_rows=1000, workers=1, progress=False)
    summary = _rerun_with_parts(demo_bundle, tickets_csv, tmp_path, keep=2)
    assert summary.parts == 3
    assert summary.parts_skipped == 2
    pd.testing.assert_frame_equal(pd.read_parquet(summary.out), pd.read_parquet(reference.out))


def test_score_batch_rescores_torn_part(demo_bundle, tickets_csv, tmp_path):
    reference = score_batch(tickets_csv, tmp_path / "reference.parquet", demo_bundle,
                            chunk_rows=1000, workers=1, progress=False)

    def tear(part: Path) -> None:
        part.write_bytes(part.read_bytes()[:100])

    summary = _rerun_with_parts(demo_bundle, tickets_csv, tmp_path, keep=3, damage={1: tear})
    assert summary.parts_skipped == 2
    assert summary.rows_reused == 2000
    pd.testing.assert_frame_equal(pd.read_parquet(summary.out), pd.read_parquet(reference.out))


def test_score_batch_rate_counts_scored_rows(demo_bundle, tickets_csv, tmp_path):
    summary = _rerun_with_parts(demo_bundle, tickets_csv, tmp_path, keep=3)
    assert summary.parts_skipped == 3
    assert summary.rows_reused == summary.rows == 3000
    assert summary.rows_per_second == 0


def _rerun_with_parts(bundle, data, folder: Path, keep: int, damage=None):
    """Score once keeping the part files, drop all but ``keep`` of them, and rerun.

    ``damage`` maps part indices to a function called with that part's path
    before the rerun.
    """
    from models.bundle import read_manifest
    from training.score_batch import (
        BatchJob,
        PendingChunks,
        bundle_mapping,
        prepare_parts,
        run_local,
    )

    out = folder / "resumed.parquet"
    mapping = bundle_mapping(read_manifest(bundle))
    job = BatchJob(data=data, out=out, bundle=Path(bundle), mapping=mapping, chunk_rows=1000)
    prepare_parts(job)

    class Bar:
        def update(self, rows):
            pass

    run_local(job, PendingChunks(job, set(), Bar()), 1, Bar())
    for index in range(keep, 3):
        job.part_path(index).unlink()
    for index, change in (damage or {}).items():
        change(job.part_path(index))
    return score_batch(data, out, bundle, chunk_rows=1000, workers=1, progress=False)


def test_score_batch_rejects_parts_of_another_run(demo_bundle, tickets_csv, tmp_path):
    out = tmp_path / "scores.parquet"
    (tmp_path / "scores.parquet.parts").mkdir()
    (tmp_path / "scores.parquet.parts" / "job.json").write_text(json.dumps({"chunk_rows": 5}))
    with pytest.raises(BatchError, match="belongs to another run"):
        score_batch(tickets_csv, out, demo_bundle, chunk_rows=1000, workers=1, progress=False)


def test_score_batch_rejects_input_as_output(demo_bundle, tickets_csv, tmp_path):
    data = tmp_path / "tickets.csv"
    data.write_bytes(tickets_csv.read_bytes())
    with pytest.raises(BatchError, match="is the input export"):
        score_batch(data, data, demo_bundle, overwrite=True, workers=1, progress=False)
    assert data.read_bytes() == tickets_csv.read_bytes()


def test_score_batch_failed_overwrite_keeps_output(demo_bundle, tickets_csv, tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("an earlier run's output\n", encoding="utf-8")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    with pytest.raises(ValueError):  # pyarrow's ArrowInvalid
        score_batch(broken, out, demo_bundle, overwrite=True, workers=1, progress=False)
    assert out.read_text(encoding="utf-8") == "an earlier run's output\n"


def test_score_batch_overwrite_replaces_output(demo_bundle, tickets_csv, tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("an earlier run's output\n", encoding="utf-8")
    summary = score_batch(tickets_csv, out, demo_bundle, overwrite=True, workers=1, progress=False)
    assert len(pd.read_csv(out)) == summary.rows == 3000


def test_score_batch_removes_downloaded_bundle(demo_trained, tickets_csv, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    uri = f"models:/{demo_trained.model_name}/{demo_trained.version}"
    summary = score_batch(tickets_csv, tmp_path / "scores.parquet", uri, workers=1, progress=False)
    assert summary.errors == 0
    assert list((tmp_path / "temp").iterdir()) == []


def test_score_batch_rejects_existing_output(demo_bundle, tickets_csv, tmp_path):
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"")
    with pytest.raises(BatchError, match="already exists; pass --overwrite"):
        score_batch(tickets_csv, out, demo_bundle, workers=1, progress=False)


def test_score_batch_killed_run_resumes_exactly_once(demo_bundle, tmp_path):
    """SIGKILL after the first part, then a rerun: every row is scored once."""
    from training.demo_data import write_demo_data

    data = write_demo_data(6000, tmp_path / "tickets.parquet", seed=4)
    out = tmp_path / "scores.parquet"
    command = [
        sys.executable, "-m", "training.cli", "score-batch", "--data", str(data),
        "--out", str(out), "--model", str(demo_bundle), "--chunk-rows", "100",
        "--workers", "1", "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first_part = tmp_path / "scores.parquet.parts" / "part-00000.parquet"
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not first_part.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first_part.exists(), process.stderr.read().decode()[-2000:]
    assert not out.exists(), "the run finished before it could be killed"
    written = len(list(first_part.parent.glob("part-*.parquet")))
    assert written < 60

    rerun = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{written} reused" in rerun.stdout
    scores = pd.read_parquet(out)
    source = pd.read_parquet(data, columns=["ticket_id"])
    assert len(scores) == len(source)
    assert scores["ticket_id"].is_unique
    assert scores["ticket_id"].tolist() == source["ticket_id"].tolist()
    assert scores["error"].isna().all()


def test_iter_export_csv_chunks_keep_line_numbers(tmp_path):
    path = tmp_path / "export.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        for i in range(7):
            writer.writerow([f"T{i}", "first line\nsecond line" if i % 2 else "one line"])
        writer.writerow(["short"])
        writer.writerow(["T7", "x"])
    whole = read_export(path)
    chunks = list(iter_export(path, chunk_rows=3))
    assert [len(c) for c in chunks] == [3, 3, 2]
    joined = pd.concat(chunks, ignore_index=True)
    assert joined["source_line"].tolist() == whole["source_line"].tolist()
    assert joined["source_line"].tolist() == [2, 3, 5, 6, 8, 9, 11, 13]
    malformed = [row.line for c in chunks for row in c.attrs["malformed"]]
    assert malformed == [12]


def test_iter_export_parquet_chunks_have_fixed_size(tmp_path):
    path = tmp_path / "export.parquet"
    frame = pd.DataFrame({"id": [f"T{i}" for i in range(25)]})
    frame.to_parquet(path, row_group_size=7)
    chunks = list(iter_export(path, chunk_rows=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert pd.concat(chunks)["source_line"].tolist() == list(range(1, 26))


def test_load_tickets_chunked_rejects_ids_seen_in_earlier_chunks(tmp_path, tickets_csv):
    source = pd.read_csv(tickets_csv, dtype=str, keep_default_na=False).head(30)
    source.loc[25, "ticket_id"] = source.loc[2, "ticket_id"]
    path = tmp_path / "dup.csv"
    source.to_csv(path, index=False)
    whole = load_tickets(path)
    chunked = load_tickets(path, chunk_rows=8)
    pd.testing.assert_frame_equal(chunked.tickets, whole.tickets)
    assert chunked.rejected == whole.rejected
    assert chunked.rejected[0].reason.startswith("duplicate ticket id")


def test_answer_json_reads_back():
    import numpy as np

    from training.score_batch import answer_json

    answer = {"category": {"code": "system", "name": "系统原因", "probability": np.float32(0.5)},
              "count": np.int64(3), "huge": 2**70}
    read = json.loads(answer_json(answer))
    assert read["category"]["name"] == "系统原因"
    assert read["category"]["probability"] == 0.5
    assert read["count"] == 3
    assert read["huge"] == 2**70


@pytest.mark.parametrize(
    ("requested", "rows", "finished", "expected"),
    [
        (None, 10_000, set(), 1),
        (4, 120_000, set(), 3),
        (4, 120_000, {0, 1}, 1),
        (2, None, set(), 2),
        (2, 0, set(), 1),
        (1, 1_000_000, set(), 1),
    ],
)
def test_local_workers_bounded_by_pending_chunks(requested, rows, finished, expected, monkeypatch):
    from training.score_batch import local_workers

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert local_workers(requested, rows, 50_000, finished) == expected
