"""Time of one LightGBM fit on the ICT records, with the default model settings.

Run from the repository root::

    python benchmarks/fit_bench.py [--data FILE] [--mapping FILE] [--jobs 1 2]

For the ``category`` target in intake and closure mode it prints the number of
feature columns and, for each thread count, the median of three timed fits of
two kinds. The first is the feature pipeline with LightGBM alone
(``fit_target``). The second is the calibrated fit that ``triage train`` runs
(``fit_calibrated``): the temperatures and thresholds come from five
cross-fitted models under 1,000 rows, or from a fit on 80% of the rows
scored on the other 20% from there on, and then a model is fitted on all
rows. Each figure is given as wall time and as CPU time of the process,
which sums the LightGBM threads. The load average is printed beside the
figures, because LightGBM's threads wait for each other and a busy machine
slows a two-thread fit far more than a one-thread fit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.inputs import feature_frame, ticket_text
from features.loading import load_tickets
from models.calibration import fit_calibrated
from models.estimators import DEFAULT_CLASS_WEIGHT, fit_target
from training.train import intake_spec, tokenize_texts

DEFAULT_DATA = REPO.parent / "shared" / "data" / "ict" / "ict_fault_records.csv"
DEFAULT_MAPPING = REPO / "features" / "mappings" / "ict.toml"


def timed(function, repeats: int) -> tuple[float, float]:
    """Return the median wall time and the median CPU time of ``repeats`` calls, in seconds.

    The CPU time is that of the whole process, so it sums every LightGBM thread.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="Export to fit on."
    )
    parser.add_argument(
        "--mapping", type=Path, default=DEFAULT_MAPPING, help="Mapping file."
    )
    parser.add_argument(
        "--jobs",
        type=int,
        nargs="+",
        default=[1, 2],
        help="LightGBM thread counts to time.",
    )
    parser.add_argument("--repeats", type=int, default=3, help="Timed fits per figure.")
    args = parser.parse_args()

    load = load_tickets(args.data, args.mapping)
    tickets = load.tickets
    y = tickets["category"].to_numpy(dtype=str)
    print(f"{len(tickets)} tickets from {args.data.name}, {os.cpu_count()} CPUs")
    for mode in ("intake", "closure"):
        spec = intake_spec(load.mapping, mode)
        texts = [
            ticket_text(r, spec)
            for r in tickets[list(spec.text_fields)].to_dict("records")
        ]
        frame = feature_frame(
            tickets, spec, tokens=tokenize_texts(texts, progress=False)
        )
        model = fit_target("category", "multiclass", frame, y, spec, n_jobs=1)
        columns = len(model.pipeline.named_steps["features"].get_feature_names_out())
        print(f"\ncategory, {mode} mode: {columns} feature columns")
        options = {"class_weight": DEFAULT_CLASS_WEIGHT}
        for jobs in args.jobs:
            plain = partial(
                fit_target,
                "category",
                "multiclass",
                frame,
                y,
                spec,
                n_jobs=jobs,
                **options,
            )
            calibrated = partial(
                fit_calibrated,
                "category",
                "multiclass",
                frame,
                y,
                spec,
                n_jobs=jobs,
                **options,
            )
            load_average = os.getloadavg()[0]
            plain_wall, plain_cpu = timed(plain, args.repeats)
            calibrated_wall, calibrated_cpu = timed(calibrated, args.repeats)
            print(
                f"  {jobs} thread(s): fit {plain_wall:.1f} s ({plain_cpu:.1f} CPU s), "
                f"calibrated fit {calibrated_wall:.1f} s ({calibrated_cpu:.1f} CPU s) "
                f"(load average {load_average:.1f})"
            )


if __name__ == "__main__":
    main()
