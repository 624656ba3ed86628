"""Training and batch scoring at 10,000, 100,000 and 1,000,000 synthetic tickets.

For each size the script writes demo tickets (``training.demo_data``) as
Parquet, trains the three core targets (category, root cause, escalation) with
``training.train.train`` and scores the same file with
``training.score_batch.score_batch``. Each measurement runs in a fresh child
process, which reports its own wall time, CPU time (its own and its worker
processes') and peak resident memory, so that one size's memory cannot hide
in another's figure.

Usage::

    PYTHONPATH=. python benchmarks/scale_bench.py --sizes 10000,100000,1000000

Peak RSS is the larger of the child's own peak and the largest peak of its
worker processes (``getrusage``). Forked workers share pages with their
parent, so the sum would count those twice. "per core" rates divide rows by
CPU seconds, which stays meaningful when other programs share the machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The canonical identity mapping with the three core targets only.
CORE_MAPPING = """\
name = "canonical-core"
description = "Canonical tickets, category, root cause and escalation"
null_values = [""]

[fields]
ticket_id = "ticket_id"
created_at = "created_at"
title = "title"
description = "description"
department = "department"
channel = "channel"
system = "system"
closed_at = "closed_at"
handling_hours = "handling_hours"
closure_notes = "closure_notes"

[stages]
intake = ["ticket_id", "created_at", "title", "description", "department", "channel", "system"]
closure = ["closure_notes"]

[targets.category]
kind = "multiclass"
column = "category"

[targets.root_cause]
kind = "multiclass"
column = "root_cause"

[targets.escalation]
kind = "binary"
column = "escalated"

[targets.escalation.values]
"true" = true
"false" = false
"""


def usage() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_seconds": own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_gib": max(own.ru_maxrss, workers.ru_maxrss) / 2**20,
    }


def child_train(data: str, mapping: str, tracking: str) -> dict:
    from training.train import train

    os.environ["MLFLOW_TRACKING_URI"] = tracking
    started = time.perf_counter()
    result = train(data, mapping, model_name="scale-bench", progress=False)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": result.load.rows_used,
        "bundle": str(result.bundle_dir),
        "macro_f1": {
            name: values.get("macro_f1") for name, values in result.metrics.items()
        },
        **usage(),
    }


def child_score(data: str, bundle: str, out: str) -> dict:
    from training.score_batch import score_batch

    started = time.perf_counter()
    summary = score_batch(data, out, bundle, overwrite=True, progress=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": summary.rows, "errors": summary.errors, **usage()}


def run_child(*args: str) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-4000:])
        raise SystemExit(f"benchmark child {' '.join(args[:1])} failed with {completed.returncode}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure(size: int, folder: Path) -> dict:
    from training.demo_data import write_demo_data

    data = folder / f"tickets-{size}.parquet"
    if not data.is_file():
        write_demo_data(size, data, seed=0)
    mapping = folder / "core.toml"
    mapping.write_text(CORE_MAPPING, encoding="utf-8")
    tracking = f"sqlite:///{folder / f'mlflow-{size}.db'}"
    trained = run_child("train", str(data), str(mapping), tracking)
    scored = run_child("score", str(data), trained["bundle"], str(folder / f"scores-{size}.parquet"))
    return {"size": size, "train": trained, "score": scored}


def print_table(results: list[dict], cores: int) -> None:
    print(f"{cores} cores; rates per core are rows per CPU second")
    header = (
        f"{'tickets':>10} | {'train s':>8} {'train GiB':>9} {'rows/s':>8} {'rows/CPU-s':>10}"
        f" | {'score s':>8} {'score GiB':>9} {'rows/s':>8} {'rows/CPU-s':>10} | category F1"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        t, s = r["train"], r["score"]
        print(
            f"{r['size']:>10,} | {t['seconds']:>8.1f} {t['peak_rss_gib']:>9.2f} "
            f"{t['rows'] / t['seconds']:>8.0f} {t['rows'] / t['cpu_seconds']:>10.0f}"
            f" | {s['seconds']:>8.1f} {s['peak_rss_gib']:>9.2f} "
            f"{s['rows'] / s['seconds']:>8.0f} {s['rows'] / s['cpu_seconds']:>10.0f}"
            f" | {t['macro_f1'].get('category') or 0:.3f}"
        )
    for small, large in itertools.pairwise(results):
        factor = large["size"] / small["size"]
        print(
            f"{small['size']:,} -> {large['size']:,} tickets ({factor:.0f}x): training time "
            f"{large['train']['seconds'] / small['train']['seconds']:.1f}x, scoring time "
            f"{large['score']['seconds'] / small['score']['seconds']:.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="Comma-separated numbers of tickets.")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="Folder for data, models and scores (default a temporary one).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_train(*rest) if kind == "train" else child_score(*rest)
        print(json.dumps(result))
        return

    folder = args.work_dir or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        results.append(measure(size, folder))
        print(f"measured {size:,} tickets", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print_table(results, os.cpu_count() or 1)


if __name__ == "__main__":
    main()
