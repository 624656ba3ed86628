"""``include`` on the scoring API: similar tickets, recurrence, evidence and reasons."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def client(demo_bundle, tmp_path_factory):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    store = tmp_path_factory.mktemp("feedback") / "feedback.db"
    settings = Settings(
        _env_file=None,
        bundle_dir=str(demo_bundle),
        poll_seconds=0,
        scoring_threads=1,
        feedback_db_url=f"sqlite:///{store}",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def copy_request(demo_csv) -> tuple[str, dict]:
    tickets = pd.read_csv(demo_csv, parse_dates=["created_at", "closed_at"])
    original = tickets.iloc[200]
    body = {
        "ticket_id": "API-COPY-1",
        "created_at": (original["closed_at"] + pd.Timedelta(days=2)).isoformat(),
        "title": original["title"],
        "description": original["description"],
        "department": original["department"],
        "channel": original["channel"],
        "system": original["system"],
    }
    return original["ticket_id"], body


def test_score_without_include_has_no_extras(client, copy_request):
    _, body = copy_request
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["similar"] is None
    assert answer["possible_recurrence"] is None
    assert answer["reasons"] is None
    assert all(cause["evidence"] == [] for cause in answer["root_causes"])


def test_score_includes_similar_and_recurrence(client, copy_request):
    original_id, body = copy_request
    response = client.post("/v1/score", json={**body, "include": ["similar"]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["similar"][0]["ticket_id"] == original_id
    assert answer["possible_recurrence"]["ticket_id"] == original_id
    assert len(answer["root_causes"]) == 3
    assert all(
        "score" in cause and cause["measures"] for cause in answer["root_causes"]
    )
    evidence = [t["ticket_id"] for c in answer["root_causes"] for t in c["evidence"]]
    assert original_id in evidence


def test_score_includes_reasons(client, copy_request):
    _, body = copy_request
    response = client.post("/v1/score", json={**body, "include": ["reasons"]})
    assert response.status_code == 200, response.text
    reasons = response.json()["reasons"]
    assert reasons["code"] == response.json()["category"]["code"]
    assert reasons["words"]
    assert {"token", "weight"} <= set(reasons["words"][0])


def test_batch_passes_include_to_every_ticket(client, copy_request):
    original_id, body = copy_request
    batch = {
        "tickets": [body, {**body, "ticket_id": "API-COPY-2"}],
        "include": ["similar"],
    }
    response = client.post("/v1/score/batch", json=batch)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["scored", "scored"]
    for item in items:
        assert item["answer"]["similar"][0]["ticket_id"] == original_id


def test_unknown_include_is_a_client_error(client, copy_request):
    _, body = copy_request
    response = client.post("/v1/score", json={**body, "include": ["evidence"]})
    assert response.status_code == 422
    assert "include" in response.text
