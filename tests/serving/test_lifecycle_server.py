"""Real uvicorn processes on loopback: reload under load, and several workers."""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

TICKET = {"description": "核心交换机宕机，全网业务中断"}

# Bounds of the load generator, so that a hung server fails the test instead of
# hanging it.
LOAD_THREADS = 4
MAX_REQUESTS = 20_000
MAX_SECONDS = 240.0


class LoadGenerator:
    """Threads that post tickets until stopped, recording each outcome in order."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers
        self.outcomes: list[tuple[float, int | str, str | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(LOAD_THREADS)
        ]
        self._deadline = time.monotonic() + MAX_SECONDS

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.base, headers=self.headers, timeout=30
        ) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                with self._lock:
                    if len(self.outcomes) >= MAX_REQUESTS:
                        return
                try:
                    response = client.post("/v1/score", json=TICKET)
                    version = (
                        response.json()["model"]["version"]
                        if response.status_code == 200
                        else None
                    )
                    outcome: tuple = (time.monotonic(), response.status_code, version)
                except (
                    Exception
                ) as exc:  # recorded and asserted on, not raised in a thread
                    outcome = (time.monotonic(), type(exc).__name__, None)
                with self._lock:
                    self.outcomes.append(outcome)

    def versions_since(self, start: float) -> set[str | None]:
        with self._lock:
            return {v for t, _, v in self.outcomes if t >= start}

    def wait_for_version(self, version: str, timeout: float = 90.0) -> None:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            # Two requests in a row on the new version: the swap happened.
            with self._lock:
                recent = [v for t, _, v in self.outcomes[-2:] if t > started]
            if len(recent) == 2 and set(recent) == {version}:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"the server did not switch to version {version} in {timeout:.0f} s"
        )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def server_env(store: Path, **extra: str) -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[2])
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRIAGE_", "PROMETHEUS_"))
    }
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    env["TRIAGE_FEEDBACK_DB_URL"] = f"sqlite:///{store}"
    env.update(extra)
    return env


def test_reload_under_load_fails_no_request(
    registry_bundle, bundles, keys, start_server, tmp_path, tracking_dir
):
    name = "serving-server-test"
    first = bundles.register(registry_bundle, name)
    bundles.move_alias(name, "champion", first)
    env = server_env(
        tmp_path / "feedback.db",
        MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"],
        TRIAGE_MODEL_URI=f"models:/{name}@champion",
        TRIAGE_POLL_SECONDS="0.5",
        TRIAGE_API_KEYS=keys.client,
        TRIAGE_ADMIN_KEYS=keys.admin,
    )
    server = start_server(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "serving.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",
        ],
        env,
    )
    server.wait_ready()
    load = LoadGenerator(server.base, {"Authorization": f"Bearer {keys.client}"})
    admin = {"X-API-Key": keys.admin}
    load.start()
    try:
        load.wait_for_version(first)

        second = bundles.register(registry_bundle, name)
        bundles.move_alias(name, "champion", second)
        load.wait_for_version(second)

        tampered = bundles.tamper(
            Path(shutil.copytree(registry_bundle, tmp_path / "tampered"))
        )
        bad = bundles.register(tampered, name)
        marked = time.monotonic()
        bundles.move_alias(name, "champion", bad)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            check = httpx.get(f"{server.base}/readyz", timeout=10).json()["last_check"]
            if check["outcome"] == "rejected" and check["version"] == bad:
                break
            time.sleep(0.2)
        assert check["outcome"] == "rejected", check
        reload = httpx.post(f"{server.base}/v1/admin/reload", headers=admin, timeout=60)
        assert reload.status_code == 409
        assert reload.json()["model"]["version"] == second
        time.sleep(1.0)
        assert load.versions_since(marked) == {second}

        # A rollback moves the alias back to the first version.
        bundles.move_alias(name, "champion", first)
        load.wait_for_version(first)
    finally:
        load.stop()

    statuses = Counter(status for _, status, _ in load.outcomes)
    assert set(statuses) == {200}, statuses
    assert len(load.outcomes) > 50
    versions = [v for _, _, v in load.outcomes]
    assert bad not in versions
    assert versions[0] == first
    assert versions[-1] == first
    assert second in versions
    log = server.log()
    assert "rejected model" in log
    assert keys.client not in log
    assert keys.admin not in log


def test_serve_with_two_workers(demo_bundle, keys, start_server, tmp_path):
    env = server_env(tmp_path / "feedback.db", TRIAGE_API_KEYS=keys.client)
    server = start_server(
        [
            sys.executable,
            "-m",
            "training.cli",
            "serve",
            "--bundle",
            str(demo_bundle),
            "--port",
            "{port}",
            "--workers",
            "2",
            "--no-access-log",
        ],
        env,
    )
    server.wait_ready()
    headers = {"X-API-Key": keys.client}
    # New connections, so that the kernel spreads them over both workers.
    statuses = Counter(
        httpx.post(
            f"{server.base}/v1/score", json=TICKET, headers=headers, timeout=30
        ).status_code
        for _ in range(60)
    )
    assert statuses == Counter({200: 60})

    deadline = time.monotonic() + 60
    pids: set[str] = set()
    while time.monotonic() < deadline and len(pids) < 2:
        # A worker registers its model gauge at start; both must have loaded.
        text = httpx.get(f"{server.base}/metrics", headers=headers, timeout=10).text
        pids = set(re.findall(r'triage_model_info\{[^}]*pid="(\d+)"[^}]*\} 1\.0', text))
        time.sleep(0.5)
    assert len(pids) == 2, text
    served = re.search(
        r'triage_http_requests_total\{method="POST",route="/v1/score",'
        r'status="200"\} (\d+)',
        text,
    )
    assert served is not None, text
    assert float(served.group(1)) == 60
