"""Prometheus metrics of the scoring service, served at ``GET /metrics``.

Each app gets its own registry, so several apps in one process (as in tests)
do not share counters. With several worker processes, set
``PROMETHEUS_MULTIPROC_DIR`` to an empty folder before the workers start, as
``triage serve --workers N`` does. Every worker then writes its values there,
and a scrape of any worker returns the sum over all of them. The loaded model
is reported per worker process.

NOTE: nothing calls ``prometheus_client.multiprocess.mark_process_dead`` when
uvicorn replaces a worker, so the model gauge of a dead worker stays in the
output until the folder is emptied; ``triage serve`` uses a new folder per start.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds; single tickets take about a millisecond, a batch of 1,000 about a second.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 5, 10, 32, 100, 250, 500, 1000)

# Route label for requests that matched no route, so that scanners probing random
# paths cannot create one time series per path.
UNMATCHED_ROUTE = "<unmatched>"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


class ServiceMetrics:
    """Request, scoring and model-lifecycle metrics."""

    def __init__(self) -> None:
        # The *_created series double every counter's output and no dashboard
        # here reads them; this switch is process-wide in prometheus_client.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "triage_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "triage_http_request_duration_seconds",
            "Time from receiving a request to sending the last byte of its response.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Counter(
            "triage_scores_total",
            "Scored tickets by predicted anomaly category.",
            ["category"],
            registry=self.registry,
        )
        self.invalid_items = Counter(
            "triage_batch_invalid_items_total",
            "Batch items rejected by validation; the other items were scored.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "triage_batch_tickets",
            "Tickets per batch request.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.coalesced = Histogram(
            "triage_score_coalesced_tickets",
            "Tickets per scorer call of POST /v1/score; above 1 when requests queued.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.scoring_seconds = Histogram(
            "triage_scoring_duration_seconds",
            "Time spent in the scorer per call (tokenisation and ONNX runs).",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "triage_model_info",
            "1 for the model version this process serves, 0 for versions it served "
            "before.",
            ["name", "version", "alias"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.model_loaded_at = Gauge(
            "triage_model_loaded_timestamp_seconds",
            "Unix time at which the served model was loaded.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "triage_model_reloads_total",
            "Checks for a new model by outcome: loaded, unchanged, rejected or failed.",
            ["outcome"],
            registry=self.registry,
        )
        self._model_labels: tuple[str, str, str] | None = None
        # Labelled children by label value, so that scoring calls skip labels().
        self._category_counters: dict[str, Any] = {}
        self._scoring_timers: dict[str, Any] = {}

    def observe_request(
        self, route: str, method: str, status: int, seconds: float
    ) -> None:
        labels = (route, method, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def count_categories(self, answers: list[dict[str, Any]]) -> None:
        for answer in answers:
            category = answer.get("category")
            if category:
                code = category["code"]
                counter = self._category_counters.get(code)
                if counter is None:
                    counter = self._category_counters[code] = self.scores.labels(code)
                counter.inc()

    def observe_scoring(self, endpoint: str, seconds: float) -> None:
        timer = self._scoring_timers.get(endpoint)
        if timer is None:
            timer = self._scoring_timers[endpoint] = self.scoring_seconds.labels(endpoint)
        timer.observe(seconds)

    def model_loaded(
        self, name: str, version: str | None, alias: str | None, at: float
    ) -> None:
        labels = (name, version or "", alias or "")
        if self._model_labels is not None and self._model_labels != labels:
            self.model_info.labels(*self._model_labels).set(0)
        self.model_info.labels(*labels).set(1)
        self.model_loaded_at.set(at)
        self._model_labels = labels

    def render(self) -> tuple[bytes, str]:
        """Return the exposition text and its content type."""
        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["MULTIPROCESS_ENV", "UNMATCHED_ROUTE", "ServiceMetrics", "multiprocess_dir"]
