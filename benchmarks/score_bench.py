"""Scoring speed: ONNX against the fitted pipelines, batches, and HTTP through uvicorn.

Run from the repository root::

    python benchmarks/score_bench.py

Steps, all in one run and on the same synthetic tickets:

1. Fit the category, root-cause and escalation pipelines (scikit-learn features,
   LightGBM) on demo tickets and export each to ONNX into a bundle folder.
2. Score single tickets both ways, tokenisation included: the bundle's
   ``Scorer`` (normalise, jieba, three ONNX runs, answer) and the fitted
   pipelines (normalise, jieba, ``feature_frame``, three ``predict_proba``).
   Print median and p99 of each and the ratio of the medians.
3. Score batches of 1, 32 and 1,000 tickets with the ``Scorer``; print tickets
   per second.
4. Start ``uvicorn serving.main:app`` on a free loopback port and drive
   ``POST /v1/score`` and ``GET /healthz`` with a keep-alive load generator at
   fixed concurrency, bounded in requests and seconds; print requests per
   second, p50 and p99 and the ratio, and fail if any request failed.

The load generator runs in this process and shares the machine's cores with
the server, so HTTP figures are lower bounds for a dedicated server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.inputs import (  # noqa: E402
    FeatureSpec,
    feature_frame,
    ticket_feeds,
    ticket_text,
)
from features.loading import load_tickets  # noqa: E402
from features.schema import INTAKE_FIELDS  # noqa: E402
from features.taxonomy import DEFAULT_TAXONOMY  # noqa: E402
from features.text import (  # noqa: E402
    DOMAIN_DICTIONARY,
    _block_words,
    get_tokenizer,
    token_string,
)
from models.bundle import TargetEntry, write_manifest  # noqa: E402
from models.estimators import TargetModel, fit_target  # noqa: E402
from models.export import to_onnx  # noqa: E402
from models.scorer import CORE_TARGETS, Scorer  # noqa: E402
from training.demo_data import write_demo_data  # noqa: E402
from training.train import intake_spec, target_labels  # noqa: E402

# Required figures, checked at the end.
MIN_SPEEDUP = 5.0
MIN_HTTP_SHARE = 0.40


@dataclass
class Models:
    natives: dict[str, TargetModel]
    spec: FeatureSpec
    bundle: Path
    tickets: list[dict]


def fit_and_export(rows: int, seed: int, folder: Path) -> Models:
    """Fit the three core targets on demo tickets and write an ONNX bundle."""
    data = write_demo_data(rows, folder / "tickets.csv", seed=seed)
    load = load_tickets(data, None)
    tickets = load.tickets
    spec = intake_spec(load.mapping)
    frame = feature_frame(tickets, spec)
    bundle = folder / "bundle"
    (bundle / "targets").mkdir(parents=True)

    natives: dict[str, TargetModel] = {}
    entries = []
    everything = np.ones(len(tickets), dtype=bool)
    for name in CORE_TARGETS:
        target = load.mapping.targets[name]
        y, labelled = target_labels(tickets, target, everything)
        model = fit_target(
            name, target.kind, frame[labelled], y[labelled], spec, seed=seed, n_jobs=1
        )
        natives[name] = model
        file = f"targets/{name}.onnx"
        (bundle / file).write_bytes(to_onnx(model, spec).SerializeToString())
        labels = [v.item() if isinstance(v, np.generic) else v for v in model.labels]
        entries.append(
            TargetEntry(
                name=name,
                kind=target.kind,
                field=target.field,
                file=file,
                labels=labels,
                threshold=0.5 if target.kind == "binary" else None,
            )
        )
    shutil.copy(DOMAIN_DICTIONARY, bundle / "it_ops.txt")
    shutil.copy(DEFAULT_TAXONOMY, bundle / "taxonomy.toml")
    write_manifest(
        bundle,
        {
            "name": "score-bench",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "feature_spec": spec.to_dict(),
            "dictionary": "it_ops.txt",
            "targets": [e.to_dict() for e in entries],
        },
    )
    records = tickets[[f for f in INTAKE_FIELDS if f in tickets.columns]].to_dict(
        "records"
    )
    for record in records:
        record["created_at"] = pd.Timestamp(record["created_at"]).to_pydatetime()
    return Models(natives=natives, spec=spec, bundle=bundle, tickets=records)


def new_tickets(count: int, seed: int) -> list[dict]:
    """Intake fields of ``count`` demo tickets of another seed than the fitted ones."""
    from training.demo_data import generate_tickets

    tickets = generate_tickets(count, seed=seed)
    records = tickets[[f for f in INTAKE_FIELDS if f in tickets.columns]].to_dict(
        "records"
    )
    for record in records:
        record["created_at"] = pd.Timestamp(record["created_at"]).to_pydatetime()
    return records


def native_scores(models: Models, ticket: dict) -> dict[str, np.ndarray]:
    """Score one ticket with the fitted pipelines: the same inputs, no ONNX."""
    frame = feature_frame(pd.DataFrame([ticket]), models.spec)
    return {name: model.predict_scores(frame) for name, model in models.natives.items()}


def quantiles_ms(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1000.0
    return float(np.median(values)), float(np.percentile(values, 99))


def forget_words() -> None:
    """Empty the tokeniser's block cache, so that a timed call pays for all of jieba.

    The benchmark scores the same demo tickets many times; with the cache kept,
    it would time the cache instead of the tokeniser.
    """
    _block_words.cache_clear()


def bench_single(models: Models, scorer: Scorer, count: int, warmup: int) -> dict:
    """Time single-ticket scoring both ways, alternating on the same tickets."""
    tickets = models.tickets[:count]
    for ticket in models.tickets[-warmup:]:
        scorer.score([ticket])
        native_scores(models, ticket)

    onnx_times, native_times = [], []
    for ticket in tickets:
        forget_words()
        started = time.perf_counter()
        scorer.score([ticket])
        onnx_times.append(time.perf_counter() - started)
        forget_words()
        started = time.perf_counter()
        native_scores(models, ticket)
        native_times.append(time.perf_counter() - started)

    max_diff = 0.0
    for ticket in tickets[:100]:
        onnx, native = scorer.predict([ticket]), native_scores(models, ticket)
        for name in CORE_TARGETS:
            max_diff = max(max_diff, float(np.max(np.abs(onnx[name] - native[name]))))
    return {
        "onnx": quantiles_ms(onnx_times),
        "native": quantiles_ms(native_times),
        "max_abs_diff": max_diff,
        "tickets": len(tickets),
        **bench_parts(scorer, tickets),
    }


def bench_parts(scorer: Scorer, tickets: list[dict]) -> dict:
    """Time the two main costs inside one ONNX score: jieba and one graph run."""
    tokenise_times, run_times = [], []
    session = scorer.sessions["category"]
    names = [i.name for i in session.get_inputs()]
    for ticket in tickets:
        text = ticket_text(ticket, scorer.spec)
        forget_words()
        started = time.perf_counter()
        token_string(text)
        tokenise_times.append(time.perf_counter() - started)
        feeds = ticket_feeds([ticket], scorer.spec)
        started = time.perf_counter()
        session.run(None, {n: feeds[n] for n in names})
        run_times.append(time.perf_counter() - started)
    return {
        "tokenise": quantiles_ms(tokenise_times),
        "one_graph_run": quantiles_ms(run_times),
    }


def bench_batches(
    scorer: Scorer, tickets: list[dict], sizes: tuple[int, ...], seconds: float
) -> dict:
    """Tickets per second of ``Scorer.score`` for each batch size."""
    results = {}
    for size in sizes:
        batch = (tickets * (size // len(tickets) + 1))[:size]
        scorer.score(batch)  # warm-up
        calls, elapsed = 0, 0.0
        while calls < 3 or elapsed < seconds:
            forget_words()
            started = time.perf_counter()
            scorer.score(batch)
            elapsed += time.perf_counter() - started
            calls += 1
        results[size] = {"calls": calls, "tickets_per_second": calls * size / elapsed}
    return results


# HTTP ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    failures: Counter

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


async def drive(
    port: int,
    requests: list[bytes],
    concurrency: int,
    total: int,
    max_seconds: float,
) -> LoadResult:
    """Send ``total`` requests over ``concurrency`` keep-alive connections.

    Each connection sends one request, reads the whole response and sends the
    next, cycling through ``requests``. A response other than 200, or a broken
    connection, counts as a failure. The run stops after ``max_seconds``.
    """
    latencies: list[float] = []
    failures: Counter = Counter()
    issued = 0
    deadline = time.perf_counter() + max_seconds

    async def connection() -> None:
        nonlocal issued
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while issued < total and time.perf_counter() < deadline:
                request = requests[issued % len(requests)]
                issued += 1
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = int(
                    head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]
                )
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    failures[status] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            failures[type(exc).__name__] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return LoadResult(
        len(latencies), time.perf_counter() - started, latencies, failures
    )


def merge(results: list[LoadResult]) -> LoadResult:
    failures: Counter = Counter()
    for result in results:
        failures.update(result.failures)
    return LoadResult(
        requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results),
        latencies=[x for r in results for x in r.latencies],
        failures=failures,
    )


def http_request(method: str, path: str, port: int, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("ascii") + body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, port: int, workdir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(
        PYTHONPATH=str(REPO),
        TRIAGE_BUNDLE_DIR=str(bundle),
        TRIAGE_POLL_SECONDS="0",
        TRIAGE_FEEDBACK_DB_URL=f"sqlite:///{workdir / 'feedback.db'}",
    )
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    log = open(workdir / "server.log", "wb")
    server = subprocess.Popen(
        command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited: {(workdir / 'server.log').read_text()[-2000:]}"
            )
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
                == 200
            ):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.kill()
    raise TimeoutError("the server was not ready after 180 s")


def bench_http(models: Models, workdir: Path, args) -> dict:
    port = free_port()
    server = start_server(models.bundle, port, workdir)
    try:
        # Every scoring request carries a ticket of its own, never fitted on and
        # never sent before, so the tokeniser's block cache only gains from the
        # phrases that tickets share, as in service.
        per_round = max(1, args.http_requests // args.http_rounds)
        fresh = new_tickets(args.http_warmup + per_round * args.http_rounds, args.seed + 1)
        bodies = [
            json.dumps(
                {
                    k: (v.isoformat() if hasattr(v, "isoformat") else v)
                    for k, v in t.items()
                },
                ensure_ascii=False,
            ).encode("utf-8")
            for t in fresh
        ]
        score = [http_request("POST", "/v1/score", port, body) for body in bodies]
        trivial = [http_request("GET", "/healthz", port)]
        warmup = {"trivial": trivial, "score": score[: args.http_warmup]}
        for requests in warmup.values():
            asyncio.run(drive(port, requests, args.concurrency, args.http_warmup, 30))
        # Alternate short runs of both endpoints, so that a change in the load of
        # the machine during the benchmark affects both alike.
        runs: dict[str, list[LoadResult]] = {"trivial": [], "score": []}
        server_cpu = {name: 0.0 for name in runs}
        process = psutil.Process(server.pid)
        for index in range(args.http_rounds):
            start = args.http_warmup + index * per_round
            endpoints = {"trivial": trivial, "score": score[start : start + per_round]}
            for name, requests in endpoints.items():
                before = process.cpu_times()
                runs[name].append(
                    asyncio.run(
                        drive(
                            port,
                            requests,
                            args.concurrency,
                            per_round,
                            args.http_seconds,
                        )
                    )
                )
                after = process.cpu_times()
                server_cpu[name] += (after.user - before.user) + (
                    after.system - before.system
                )
        merged = {name: merge(results) for name, results in runs.items()}
        return merged | {
            "server_cpu_ms": {
                name: 1000 * server_cpu[name] / max(1, merged[name].requests)
                for name in runs
            },
            "round_shares": [
                s.per_second / t.per_second
                for s, t in zip(runs["score"], runs["trivial"])
            ]
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


# Report ---------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    python = platform.python_version()
    return f"{cpu}, {cores} cores, load average {load:.1f} at start, Python {python}"


def report_in_process(models: Models, scorer: Scorer, args) -> float:
    """Time single tickets both ways and batches; print them, return the speed-up."""
    single = bench_single(models, scorer, args.single, warmup=50)
    onnx_median, onnx_p99 = single["onnx"]
    native_median, native_p99 = single["native"]
    speedup = native_median / onnx_median
    print(f"\nsingle ticket, {single['tickets']} tickets, tokenisation included:")
    print(
        f"  ONNX Scorer.score        median {onnx_median:7.3f} ms   "
        f"p99 {onnx_p99:7.3f} ms"
    )
    print(
        f"  scikit-learn + LightGBM  median {native_median:7.3f} ms   "
        f"p99 {native_p99:7.3f} ms"
    )
    print(
        f"  ratio of medians: ONNX is {speedup:.1f}x faster "
        f"(max abs probability difference {single['max_abs_diff']:.2e})"
    )
    print(
        f"  inside: jieba tokenise median {single['tokenise'][0]:.3f} ms, "
        f"one ONNX graph run median {single['one_graph_run'][0]:.3f} ms"
    )

    batches = bench_batches(
        scorer, models.tickets, (1, 32, 1000), args.batch_seconds
    )
    print("\nbatch throughput (Scorer.score, one ONNX run per target per batch):")
    for size, result in batches.items():
        print(
            f"  batch {size:5d}: {result['tickets_per_second']:8.0f} tickets/s "
            f"({result['calls']} calls)"
        )
    return speedup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--rows", type=int, default=2000, help="Demo tickets to fit on."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the demo tickets.")
    parser.add_argument(
        "--single", type=int, default=500, help="Tickets timed one by one."
    )
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=3.0,
        help="Minimum seconds of scoring per batch size.",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="Keep-alive connections of the HTTP load generator.",
    )
    parser.add_argument(
        "--http-requests",
        type=int,
        default=4000,
        help="Requests per endpoint in the measured HTTP run.",
    )
    parser.add_argument(
        "--http-warmup",
        type=int,
        default=300,
        help="Requests per endpoint before the measured run.",
    )
    parser.add_argument(
        "--http-rounds",
        type=int,
        default=5,
        help="Alternating runs of each endpoint that share --http-requests.",
    )
    parser.add_argument(
        "--http-seconds",
        type=float,
        default=60.0,
        help="Maximum seconds of one HTTP run.",
    )
    parser.add_argument(
        "--http-only",
        action="store_true",
        help="Skip the in-process single-ticket and batch timings (steps 2 and 3) "
        "and their check; the bundle is still fitted.",
    )
    args = parser.parse_args()

    import onnxruntime

    print(f"machine: {machine()}; onnxruntime {onnxruntime.__version__}")
    workdir = Path(tempfile.mkdtemp(prefix="score-bench-"))
    try:
        started = time.perf_counter()
        get_tokenizer()
        models = fit_and_export(args.rows, args.seed, workdir)
        scorer = Scorer(models.bundle, threads=1)
        print(
            f"fitted and exported 3 targets on {args.rows} demo tickets in "
            f"{time.perf_counter() - started:.0f} s"
        )

        speedup = None if args.http_only else report_in_process(models, scorer, args)

        http = bench_http(models, workdir, args)
        print(
            "\nHTTP, uvicorn with 1 worker on 127.0.0.1, "
            f"{args.concurrency} keep-alive "
            "connections, load generator in the same machine:"
        )
        for name, path in (("trivial", "GET /healthz"), ("score", "POST /v1/score")):
            result = http[name]
            p50, p99 = quantiles_ms(result.latencies)
            print(
                f"  {path:15s} {result.per_second:7.0f} requests/s   "
                f"p50 {p50:6.2f} ms   "
                f"p99 {p99:6.2f} ms   {result.requests} requests, failures: "
                f"{dict(result.failures) or 0}"
            )
        share = http["score"].per_second / http["trivial"].per_second
        rounds = http["round_shares"]
        print(
            f"  /v1/score throughput is {share:.0%} of the trivial endpoint's "
            f"({len(rounds)} alternating rounds, "
            f"{min(rounds):.0%} to {max(rounds):.0%})"
        )
        cpu = http["server_cpu_ms"]
        print(
            f"  server CPU per request: /healthz {cpu['trivial']:.2f} ms, "
            f"/v1/score {cpu['score']:.2f} ms ({cpu['trivial'] / cpu['score']:.0%}; "
            "less disturbed by other jobs than the throughput share)"
        )

        failures = sum(
            sum(http[name].failures.values()) for name in ("trivial", "score")
        )
        print("\nchecks:")
        fast_enough = speedup is None or speedup >= MIN_SPEEDUP
        if speedup is not None:
            print(
                f"  ONNX at least {MIN_SPEEDUP:.0f}x faster than native: "
                f"{'yes' if fast_enough else 'NO'} ({speedup:.1f}x)"
            )
        print(
            f"  /v1/score at least {MIN_HTTP_SHARE:.0%} of trivial: "
            f"{'yes' if share >= MIN_HTTP_SHARE else 'NO'} ({share:.0%})"
        )
        print(
            "  zero failed HTTP requests: "
            f"{'yes' if failures == 0 else 'NO'} ({failures})"
        )
        ok = fast_enough and share >= MIN_HTTP_SHARE and failures == 0
        return 0 if ok else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
