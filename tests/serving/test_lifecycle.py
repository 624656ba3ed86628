"""Model lifecycle in one process: follow the alias, reject bad bundles, swap safely."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.bundle import BundleError
from serving.lifecycle import FolderSource, ModelWatcher
from serving.state import ModelState, load_bundle, self_test

TICKET = {"description": "数据库表空间满，ERP无法写入"}


@pytest.fixture(scope="module")
def followed_model(registry_bundle, bundles, tracking_dir):
    """A registered model of its own, so that moving its alias affects no other test."""
    name = "serving-lifecycle-test"
    first = bundles.register(registry_bundle, name)
    bundles.move_alias(name, "champion", first)
    return name, first


def registry_app(settings_factory, name: str, **overrides):
    from serving.app import create_app

    return create_app(
        settings_factory(model_uri=f"models:/{name}@champion", **overrides)
    )


def reload(client: TestClient, **params):
    return client.post("/v1/admin/reload", params=params)


def served_version(client: TestClient) -> str:
    return client.post("/v1/score", json=TICKET).json()["model"]["version"]


def test_alias_move_and_rollback_followed(
    followed_model, registry_bundle, bundles, settings_factory
):
    name, first = followed_model
    app = registry_app(settings_factory, name)
    with TestClient(app) as client:
        assert served_version(client) == first
        assert client.get("/readyz").json()["model"]["version"] == first

        second = bundles.register(registry_bundle, name)
        bundles.move_alias(name, "champion", second)
        response = reload(client)
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == "loaded"
        assert response.json()["previous"]["version"] == first
        assert served_version(client) == second
        info = client.get("/v1/model").json()
        assert info["version"] == second
        assert info["alias"] == "champion"
        assert info["source"] == f"models:/{name}@champion"

        # A rollback moves the alias back to an older version: the version
        # differs from the loaded one, so the service loads it again.
        bundles.move_alias(name, "champion", first)
        response = reload(client)
        assert response.json()["outcome"] == "loaded"
        assert served_version(client) == first
        assert reload(client).json()["outcome"] == "unchanged"
        metrics = client.get("/metrics").text
    assert (
        f'triage_model_info{{alias="champion",name="{name}",version="{first}"}} 1.0'
        in metrics
    )
    assert (
        f'triage_model_info{{alias="champion",name="{name}",version="{second}"}} 0.0'
        in metrics
    )
    assert 'triage_model_reloads_total{outcome="loaded"} 3.0' in metrics


def test_polling_picks_up_alias_move(
    followed_model, registry_bundle, bundles, settings_factory
):
    name, first = followed_model
    bundles.move_alias(name, "champion", first)
    app = registry_app(settings_factory, name, poll_seconds=0.2)
    with TestClient(app) as client:
        assert served_version(client) == first
        newer = bundles.register(registry_bundle, name)
        bundles.move_alias(name, "champion", newer)
        deadline = time.monotonic() + 60
        while served_version(client) != newer and time.monotonic() < deadline:
            time.sleep(0.2)
        assert served_version(client) == newer
        assert client.get("/readyz").json()["last_check"]["outcome"] in (
            "loaded",
            "unchanged",
        )
    bundles.move_alias(name, "champion", first)


def test_tampered_registry_version_rejected(
    followed_model, registry_bundle, bundles, settings_factory, tmp_path, caplog
):
    name, first = followed_model
    bundles.move_alias(name, "champion", first)
    tampered = bundles.tamper(
        Path(shutil.copytree(registry_bundle, tmp_path / "tampered"))
    )
    bad = bundles.register(tampered, name)
    app = registry_app(settings_factory, name)
    with TestClient(app) as client:
        assert served_version(client) == first
        bundles.move_alias(name, "champion", bad)
        response = reload(client)
        assert response.status_code == 409
        body = response.json()
        assert body["outcome"] == "rejected"
        assert "changed after export" in body["error"]
        assert body["model"]["version"] == first
        assert body["previous"] is None
        assert served_version(client) == first
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready"
        assert ready["model"]["version"] == first
        assert ready["last_check"]["outcome"] == "rejected"
        assert ready["last_check"]["version"] == bad
        # Polling skips a rejected version instead of downloading it every time.
        report = app.state.service.watcher.check()
        assert report.outcome == "rejected"
    assert any(
        "rejected model" in r.getMessage()
        for r in caplog.records
        if r.levelname == "ERROR"
    )
    bundles.move_alias(name, "champion", first)


def test_tampered_served_registry_version_rejected(
    followed_model, bundles, settings_factory, tmp_path
):
    from mlflow import MlflowClient

    from models.bundle import find_bundle

    name, first = followed_model
    bundles.move_alias(name, "champion", first)
    # The artifact store of the test registry is a local folder, so the stored
    # bundle can be changed in place.
    uri = MlflowClient().get_model_version_download_uri(name, first)
    stored = find_bundle(Path(uri.removeprefix("file://")))
    graph = stored / "targets" / "category.onnx"
    original = tmp_path / "category.onnx"
    shutil.copy(graph, original)
    app = registry_app(settings_factory, name)
    with TestClient(app) as client:
        assert served_version(client) == first
        bundles.tamper(stored)
        try:
            response = reload(client)
        finally:
            shutil.copy(original, graph)
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["outcome"] == "rejected"
        assert "targets/category.onnx" in body["error"]
        assert body["model"]["version"] == first
        assert served_version(client) == first
        assert reload(client).json()["outcome"] == "unchanged"


def test_missing_alias_keeps_old_model(followed_model, settings_factory):
    from mlflow import MlflowClient

    name, first = followed_model
    app = registry_app(settings_factory, name)
    client_registry = MlflowClient()
    with TestClient(app) as client:
        client_registry.delete_registered_model_alias(name, "champion")
        try:
            response = reload(client)
        finally:
            client_registry.set_registered_model_alias(name, "champion", first)
        assert response.status_code == 503
        assert response.json()["outcome"] == "failed"
        assert "cannot resolve" in response.json()["error"]
        assert served_version(client) == first


def test_start_without_model_is_not_ready(settings_factory, tracking_dir):
    from serving.app import create_app

    app = create_app(settings_factory(model_uri="models:/no-such-model@champion"))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["last_check"]["outcome"] == "failed"
        score = client.post("/v1/score", json=TICKET)
        assert score.status_code == 503
        assert score.json()["detail"].startswith("No model is loaded yet")
        assert score.headers["retry-after"] == "5"
        assert client.get("/v1/model").status_code == 503


def test_folder_tampered_in_place_rejected(
    bundle_copy, bundles, settings_factory, demo_bundle, caplog
):
    from serving.app import create_app

    app = create_app(settings_factory(bundle_dir=str(bundle_copy)))
    with TestClient(app) as client:
        before = client.post("/v1/score", json=TICKET).json()
        assert reload(client).json()["outcome"] == "unchanged"
        bundles.tamper(bundle_copy)

        response = reload(client)
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["outcome"] == "rejected"
        assert "targets/category.onnx" in body["error"]
        assert "changed after export" in body["error"]
        assert "keeps serving from memory" in body["error"]
        assert body["previous"] is None
        after = client.post("/v1/score", json=TICKET).json()
        assert after["category"] == before["category"]
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready"
        assert ready["last_check"]["outcome"] == "rejected"

        # A poll, which does not go through the admin endpoint, finds the same fault.
        assert app.state.service.watcher.check().outcome == "rejected"
        response = reload(client, force="true")
        assert response.status_code == 409
        assert "changed after export" in response.json()["error"]

        shutil.copy(
            demo_bundle / "targets" / "category.onnx",
            bundle_copy / "targets" / "category.onnx",
        )
        assert reload(client).json()["outcome"] == "unchanged"
        metrics = client.get("/metrics").text
    assert 'triage_model_reloads_total{outcome="rejected"} 3.0' in metrics
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("targets/category.onnx" in message for message in errors)


def test_failing_self_test_rejected(
    bundle_copy, bundles, settings_factory, demo_bundle
):
    from serving.app import create_app

    app = create_app(settings_factory(bundle_dir=str(bundle_copy)))
    with TestClient(app) as client:
        before = client.post("/v1/score", json=TICKET).json()
        bundles.break_self_test(bundle_copy)
        response = reload(client)
        assert response.status_code == 409, response.text
        assert (
            "self-test: target category returned shape (3, 2)"
            in response.json()["error"]
        )
        after = client.post("/v1/score", json=TICKET).json()
        assert after["category"] == before["category"]
        assert len(after["alternatives"]) == 3

        # Restoring the bundle that is loaded is no change at all.
        shutil.rmtree(bundle_copy)
        shutil.copytree(demo_bundle, bundle_copy)
        assert reload(client).json()["outcome"] == "unchanged"


def test_self_test_rejects_broken_bundle_directly(bundle_copy, bundles):
    from models.scorer import Scorer

    bundles.break_self_test(bundle_copy)
    with pytest.raises(BundleError, match="expected \\(3, 4\\)"):
        self_test(Scorer(bundle_copy))
    with pytest.raises(BundleError, match="self-test"):
        load_bundle(bundle_copy, threads=1)


def test_requests_in_flight_finish_on_old_model(
    bundle_copy, demo_bundle, settings_factory
):
    """A swap during a request must not change the model that request uses."""
    from serving.app import create_app

    app = create_app(settings_factory(bundle_dir=str(bundle_copy)))
    with TestClient(app) as client:
        service = app.state.service
        old = service.state.model
        entered, release = threading.Event(), threading.Event()
        original = old.scorer.score

        def slow_score(tickets, **options):
            entered.set()
            assert release.wait(30)
            return original(tickets, **options)

        old.scorer.score = slow_score
        results = {}
        worker = threading.Thread(
            target=lambda: results.update(
                answer=client.post("/v1/score", json=TICKET).json()
            )
        )
        worker.start()
        assert entered.wait(30)
        new = load_bundle(demo_bundle, threads=1, version="new", identity="other")
        assert service.state.swap(new) is old
        release.set()
        worker.join(30)
        del old.scorer.score
        assert results["answer"]["model"]["version"] is None
        assert client.post("/v1/score", json=TICKET).json()["model"]["version"] == "new"


def test_watcher_skips_rejected_version_until_asked(bundle_copy, bundles):
    state = ModelState()
    watcher = ModelWatcher(state, FolderSource(bundle_copy), threads=1)
    assert watcher.check().outcome == "loaded"
    good = state.model
    bundles.break_self_test(bundle_copy)
    first = watcher.check()
    assert first.outcome == "rejected"
    calls = []
    original = watcher.source.load
    watcher.source.load = lambda ref, threads: (
        calls.append(ref) or original(ref, threads)
    )
    assert watcher.check().outcome == "rejected"
    assert calls == []
    assert watcher.check(retry_rejected=True).outcome == "rejected"
    assert len(calls) == 1
    assert state.model is good
