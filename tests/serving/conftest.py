"""Fixtures for the scoring API: apps on the trained demo bundle, registry models."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from models.bundle import write_manifest

CLIENT_KEY = "client-key-0123456789abcdef"
ADMIN_KEY = "admin-key-fedcba9876543210"
REPO = Path(__file__).resolve().parents[2]


_STORE_DIR: list[Path] = []


def make_settings(**overrides):
    """Settings for a test app: no .env file, no polling, a feedback store in tmp."""
    from serving.settings import Settings

    store = _STORE_DIR[0] / f"feedback-{time.monotonic_ns()}.db"
    values = {
        "poll_seconds": 0,
        "scoring_threads": 2,
        "feedback_db_url": f"sqlite:///{store}",
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session", autouse=True)
def _feedback_store_dir(tmp_path_factory):
    # Every test app opens a feedback store; keep them out of the working folder.
    _STORE_DIR.append(tmp_path_factory.mktemp("feedback"))
    yield
    _STORE_DIR.clear()


@pytest.fixture
def bundle_copy(demo_bundle, tmp_path) -> Path:
    """A private copy of the demo bundle that a test may change."""
    return Path(shutil.copytree(demo_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="module")
def open_app(demo_bundle):
    """An app on the demo bundle with no API keys; tests must not change the bundle."""
    from serving.app import create_app

    return create_app(make_settings(bundle_dir=str(demo_bundle)))


@pytest.fixture(scope="module")
def open_client(open_app):
    from fastapi.testclient import TestClient

    with TestClient(open_app) as client:
        yield client


@pytest.fixture(scope="module")
def keyed_app(demo_bundle):
    from serving.app import create_app

    return create_app(
        make_settings(
            bundle_dir=str(demo_bundle), api_keys=[CLIENT_KEY], admin_keys=[ADMIN_KEY]
        )
    )


@pytest.fixture(scope="module")
def keyed_client(keyed_app):
    """A client of an app with keys configured; requests carry no key by default."""
    from fastapi.testclient import TestClient

    with TestClient(keyed_app) as client:
        yield client


def register_bundle(bundle: Path, model_name: str) -> str:
    """Register ``bundle`` as a new version of ``model_name`` and return the version."""
    import mlflow

    from training import registry

    registry.setup_tracking(None, "serving-tests")
    with mlflow.start_run(run_name=f"register {model_name}"):
        return registry.log_bundle(bundle, model_name)


def move_alias(model_name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    from training import registry

    registry.record_alias(MlflowClient(), model_name, alias, version, "test")


def tamper(bundle: Path) -> Path:
    """Append a byte to one ONNX graph, so that its hash no longer matches."""
    graph = bundle / "targets" / "category.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    return bundle


def break_self_test(bundle: Path) -> Path:
    """Swap the category graph for the escalation one and rehash the manifest.

    The hashes match, so only the self-test can notice: the category graph now
    returns two probabilities per ticket for a target that declares more labels.
    """
    targets = bundle / "targets"
    shutil.copy(targets / "escalation.onnx", targets / "category.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("files", None)
    write_manifest(bundle, manifest)
    return bundle


@pytest.fixture(scope="session")
def registry_bundle(demo_bundle, tmp_path_factory) -> Path:
    """The demo bundle copied once, as the source of test registrations."""
    return Path(
        shutil.copytree(demo_bundle, tmp_path_factory.mktemp("registry") / "bundle")
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A uvicorn process on loopback, stopped by :meth:`stop`."""

    def __init__(
        self, args: list[str], env: dict[str, str], port: int, log: Path
    ) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(
            f"server at {self.base} not ready after {timeout:.0f} s:\n{self.log()}"
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-5000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


# Test modules reach the helpers above through these fixtures, because two
# conftest modules cannot both be imported by name.


@pytest.fixture(scope="session")
def keys():
    return SimpleNamespace(client=CLIENT_KEY, admin=ADMIN_KEY)


@pytest.fixture(scope="session")
def settings_factory():
    return make_settings


@pytest.fixture(scope="session")
def bundles():
    return SimpleNamespace(
        register=register_bundle,
        move_alias=move_alias,
        tamper=tamper,
        break_self_test=break_self_test,
    )


@pytest.fixture
def start_server(tmp_path):
    """Start uvicorn processes on free loopback ports; all stop after the test."""
    servers: list[Server] = []

    def start(args: list[str], env: dict[str, str], port: int | None = None) -> Server:
        port = port or free_port()
        command = [a.replace("{port}", str(port)) for a in args]
        server = Server(command, env, port, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    start.free_port = free_port
    yield start
    for server in servers:
        server.stop()


def check_same_scores(answer: dict, expected: dict) -> None:
    """Assert two scoring responses have the same category and escalation, to float32 rounding.

    onnxruntime sums tree outputs in float32, so a ticket scored in a batch
    can differ from the same ticket scored alone in the last digits.
    """
    assert answer["category"]["code"] == expected["category"]["code"]
    assert answer["category"]["probability"] == pytest.approx(
        expected["category"]["probability"], abs=1e-6
    )
    assert answer["escalation"]["flag"] == expected["escalation"]["flag"]
    assert answer["escalation"]["probability"] == pytest.approx(
        expected["escalation"]["probability"], abs=1e-6
    )


@pytest.fixture
def same_scores():
    """Provide :func:`check_same_scores` to tests that compare two scoring responses."""
    return check_same_scores
