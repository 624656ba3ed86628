"""Similar-ticket search: time per query and index size for growing indexes.

Run from the repository root::

    python benchmarks/similar_bench.py                      # 10k, 100k and 1M
    python benchmarks/similar_bench.py --sizes 10000 100000

For each size, the steps are:

1. Generate that many synthetic closed tickets with
   ``training.demo_data.generate_tickets`` (the tickets ``triage demo-data``
   writes) and tokenise them with the training tokeniser.
   ``prep s`` is the time of this step.
2. Build the index as ``triage train`` does, from title and description with
   department, channel and system as metadata terms. Save it into an empty
   bundle folder and print the build seconds and the size of the index files.
3. Load the index back from the files, as the scorer does at start-up, and
   print the seconds and the bytes of its arrays in memory (``RAM MB``).
4. Search single new tickets (another seed, so none is in the index) with
   ``SimilarIndex.search``, tokenisation and the recurrence rule included,
   and print median, p95 and p99 wall-clock milliseconds per query and the
   mean CPU milliseconds (which a busy machine disturbs less); then one batch
   of 100 tickets, as wall-clock milliseconds per ticket.

Figures depend on the machine and on its load; the script prints the CPU
count and Python version beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.inputs import ticket_text
from features.mapping import load_mapping
from models.similar import INDEX_FILES, SimilarIndex, build_index
from training.demo_data import generate_tickets
from training.train import intake_spec, tokenize_texts

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUERY_SEED = 12_345


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def memory_bytes(index: SimilarIndex) -> int:
    """Add up the bytes of the loaded index's arrays: weights, ids and ticket columns."""
    postings = index.postings
    total = postings.data.nbytes + postings.indices.nbytes + postings.indptr.nbytes
    table = index.table
    for column in (table.ticket_id, table.description, table.notes):
        total += column.data.nbytes + column.offsets.nbytes
    for array in (
        table.ticket_hash,
        table.root_cause,
        table.category,
        table.system,
        table.handling_hours,
        table.created_at,
        table.closed_at,
        index.idf,
    ):
        total += array.nbytes
    return int(total)


def measure(size: int, queries: list[dict], spec, folder: Path, seed: int) -> dict:
    started = time.perf_counter()
    tickets = generate_tickets(size, seed=seed)
    texts = [
        ticket_text(r, spec) for r in tickets[list(spec.text_fields)].to_dict("records")
    ]
    tokens = tokenize_texts(texts, progress=False)
    prepared = time.perf_counter() - started

    started = time.perf_counter()
    index = build_index(tickets, spec.text_fields, spec.categorical, tokens)
    entry = index.save(folder)
    built = time.perf_counter() - started
    del index, tickets, texts, tokens
    size_bytes = sum((folder / name).stat().st_size for name in INDEX_FILES)

    started = time.perf_counter()
    index = SimilarIndex.load(folder, entry)
    loaded = time.perf_counter() - started

    index.search(queries[:5], k=10)  # warm-up: first jieba and scipy calls
    single, cpu = [], []
    for ticket in queries:
        started, started_cpu = time.perf_counter(), time.process_time()
        index.search([ticket], k=10)
        single.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    started = time.perf_counter()
    index.search(queries[:100], k=10)
    batch = (time.perf_counter() - started) / min(100, len(queries))
    return {
        "size": size,
        "terms": entry["terms"],
        "nonzeros": int(index.postings.nnz),
        "prepare_s": prepared,
        "build_s": built,
        "load_s": loaded,
        "bytes": size_bytes,
        "memory": memory_bytes(index),
        "p50_ms": percentile_ms(single, 50),
        "p95_ms": percentile_ms(single, 95),
        "p99_ms": percentile_ms(single, 99),
        "cpu_ms": float(np.mean(cpu) * 1000.0),
        "batch_ms": batch * 1000.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="Index sizes in closed tickets.",
    )
    parser.add_argument(
        "--queries", type=int, default=300, help="Single-ticket queries per size."
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the indexed tickets."
    )
    args = parser.parse_args()

    spec = intake_spec(load_mapping())
    queries = generate_tickets(max(args.queries, 100), seed=QUERY_SEED).to_dict(
        "records"
    )
    queries = [
        {
            k: v
            for k, v in q.items()
            if k
            in (
                "ticket_id",
                "created_at",
                "title",
                "description",
                "department",
                "channel",
                "system",
            )
        }
        for q in queries
    ]
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    print(
        f"{'tickets':>9} {'terms':>7} {'nonzeros':>11} {'prep s':>7} {'build s':>8} "
        f"{'load s':>7} {'size MB':>8} {'RAM MB':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'cpu ms':>7} {'batch ms':>9}"
    )
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="similar-bench-") as folder:
            row = measure(size, queries[: args.queries], spec, Path(folder), args.seed)
        print(
            f"{row['size']:>9,} {row['terms']:>7,} {row['nonzeros']:>11,} "
            f"{row['prepare_s']:>7.1f} {row['build_s']:>8.1f} {row['load_s']:>7.2f} "
            f"{row['bytes'] / 1e6:>8.1f} {row['memory'] / 1e6:>7.1f} {row['p50_ms']:>7.2f} {row['p95_ms']:>7.2f} "
            f"{row['p99_ms']:>7.2f} {row['cpu_ms']:>7.2f} {row['batch_ms']:>9.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
