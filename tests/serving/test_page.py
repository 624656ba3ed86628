"""The intake page's files and its label endpoint, on the real app with the demo bundle."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(demo_bundle, settings_factory, tmp_path_factory):
    from serving.app import create_app

    db = tmp_path_factory.mktemp("page") / "feedback.db"
    settings = settings_factory(
        bundle_dir=str(demo_bundle), feedback_db_url=f"sqlite:///{db}"
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_page_served_at_root(client):
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<html lang="zh-CN">' in response.text
    assert 'src="/static/app.js"' in response.text
    assert "工单登记" in response.text


def test_page_forbids_inline_scripts(client):
    policy = client.get("/").headers["content-security-policy"]

    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "object-src 'none'" in policy
    assert client.get("/").headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ],
)
def test_static_files_have_media_types(client, name, media_type):
    response = client.get(f"/static/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert "content-security-policy" in response.headers


@pytest.mark.parametrize("name", ["missing.js", "..%2Fpage.py", "page.py", "index.txt"])
def test_static_rejects_unknown_files(client, name):
    response = client.get(f"/static/{name}")

    assert response.status_code == 404


def test_page_scripts_never_write_markup():
    """Ticket texts reach the page only through textContent; a regression to
    innerHTML or insertAdjacentHTML would let a ticket inject markup."""
    from serving.page import STATIC_DIR

    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ):
        assert sink not in script, sink


def test_labels_list_model_categories_in_taxonomy_order(client, demo_bundle):
    manifest = json.loads((demo_bundle / "manifest.json").read_text(encoding="utf-8"))
    cause_labels = next(
        t["labels"] for t in manifest["targets"] if t["name"] == "root_cause"
    )
    response = client.get("/v1/labels")

    assert response.status_code == 200
    labels = response.json()
    assert [c["code"] for c in labels["categories"]] == [
        "system",
        "human",
        "third_party",
        "other",
    ]
    assert labels["categories"][0]["name"] == "系统故障"
    causes = {c["code"]: c for c in labels["root_causes"]}
    assert set(causes) == {str(v) for v in cause_labels}
    assert causes["crash"]["name"] == "系统崩溃或宕机"
    assert causes["crash"]["category"] == "system"
    assert labels["escalation"] is True
