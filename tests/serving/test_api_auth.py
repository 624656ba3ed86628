"""API keys: which paths are closed, both header forms, admin keys, no key in logs."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serving.auth import KeyRing

TICKET = {"description": "邮件系统无法发送邮件"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/score"),
        ("post", "/v1/score/batch"),
        ("get", "/v1/model"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
        ("post", "/v1/admin/reload"),
        ("get", "/no/such/path"),
    ],
)
def test_closed_path_rejects_missing_key(keyed_client, method, path):
    response = keyed_client.request(method, path, json=TICKET)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["detail"].startswith("An API key is required")
    assert body["request_id"] == response.headers["x-request-id"]


def test_probes_are_open(keyed_client):
    assert keyed_client.get("/healthz").status_code == 200
    ready = keyed_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["auth"] == "api_keys"


def test_wrong_key_is_rejected(keyed_client, keys):
    for headers in (
        bearer("not-the-key"),
        {"X-API-Key": keys.client + "x"},
        bearer(keys.client[:-1]),
    ):
        response = keyed_client.post("/v1/score", json=TICKET, headers=headers)
        assert response.status_code == 401
        assert response.json()["detail"] == "The API key is not valid."


def test_bearer_and_header_keys_accepted(keyed_client, keys):
    for headers in (
        bearer(keys.client),
        {"Authorization": f"bearer {keys.client}"},
        {"X-API-Key": keys.client},
    ):
        response = keyed_client.post("/v1/score", json=TICKET, headers=headers)
        assert response.status_code == 200, response.text


def test_other_authorization_scheme_is_missing_key(keyed_client, keys):
    response = keyed_client.post(
        "/v1/score", json=TICKET, headers={"Authorization": f"Basic {keys.client}"}
    )
    assert response.status_code == 401
    assert response.json()["detail"].startswith("An API key is required")


def test_admin_key_needed_for_reload(keyed_client, keys):
    as_client = keyed_client.post("/v1/admin/reload", headers=bearer(keys.client))
    assert as_client.status_code == 403
    assert as_client.json()["detail"] == "This endpoint requires an admin key."
    as_admin = keyed_client.post("/v1/admin/reload", headers=bearer(keys.admin))
    assert as_admin.status_code == 200, as_admin.text
    assert as_admin.json()["outcome"] == "unchanged"


def test_admin_key_also_scores(keyed_client, keys):
    response = keyed_client.post(
        "/v1/score", json=TICKET, headers={"X-API-Key": keys.admin}
    )
    assert response.status_code == 200


def test_reload_closed_without_admin_keys(settings_factory, demo_bundle, keys):
    from serving.app import create_app

    app = create_app(
        settings_factory(bundle_dir=str(demo_bundle), api_keys=[keys.client])
    )
    with TestClient(app) as client:
        response = client.post("/v1/admin/reload", headers=bearer(keys.client))
    assert response.status_code == 403
    assert "No admin key is configured" in response.json()["detail"]


def test_keys_read_from_environment_and_file(monkeypatch, tmp_path, demo_bundle):
    from serving.app import create_app
    from serving.settings import Settings

    key_file = tmp_path / "keys.txt"
    key_file.write_text(
        "# dispatch system\nfile-key-1\n\n  file-key-2  \n", encoding="utf-8"
    )
    monkeypatch.setenv("TRIAGE_API_KEYS", "env-key-1, env-key-2")
    monkeypatch.setenv("TRIAGE_API_KEYS_FILE", str(key_file))
    monkeypatch.setenv("TRIAGE_BUNDLE_DIR", str(demo_bundle))
    monkeypatch.setenv("TRIAGE_POLL_SECONDS", "0")
    monkeypatch.setenv(
        "TRIAGE_FEEDBACK_DB_URL", f"sqlite:///{tmp_path / 'feedback.db'}"
    )
    settings = Settings(_env_file=None)
    assert [k.get_secret_value() for k in settings.client_keys()] == [
        "env-key-1",
        "env-key-2",
        "file-key-1",
        "file-key-2",
    ]
    assert "env-key-1" not in repr(settings)
    with TestClient(create_app(settings)) as client:
        for key in ("env-key-2", "file-key-2"):
            assert (
                client.post("/v1/score", json=TICKET, headers=bearer(key)).status_code
                == 200
            )
        assert (
            client.post(
                "/v1/score", json=TICKET, headers=bearer("# dispatch system")
            ).status_code
            == 401
        )


def test_unreadable_key_file_is_clear_error(tmp_path):
    from serving.settings import Settings

    settings = Settings(_env_file=None, api_keys_file=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="cannot read the key file .*missing.txt"):
        settings.client_keys()


def test_keys_never_logged(settings_factory, demo_bundle, keys, caplog):
    from serving.app import create_app

    app = create_app(
        settings_factory(
            bundle_dir=str(demo_bundle), api_keys=[keys.client], admin_keys=[keys.admin]
        )
    )
    wrong = "wrong-key-5555"
    with caplog.at_level(logging.DEBUG):
        with TestClient(app) as client:
            client.post("/v1/score", json=TICKET, headers=bearer(keys.client))
            client.post("/v1/score", json=TICKET, headers=bearer(wrong))
            client.post("/v1/admin/reload", headers={"X-API-Key": keys.admin})
    assert "1 client keys, 1 admin keys" in caplog.text
    for secret in (keys.client, keys.admin, wrong):
        assert secret not in caplog.text


def test_no_keys_warns_at_start(settings_factory, demo_bundle, caplog):
    from serving.app import create_app

    app = create_app(settings_factory(bundle_dir=str(demo_bundle)))
    with caplog.at_level(logging.WARNING, logger="serving.auth"):
        with TestClient(app) as client:
            assert client.post("/v1/admin/reload").status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("NO API KEYS CONFIGURED" in r.getMessage() for r in warnings)


@pytest.mark.parametrize(
    ("public_docs", "open_paths"),
    [
        (False, "/, /healthz, /readyz, /static/*"),
        (True, "/, /docs, /healthz, /openapi.json, /readyz, /static/*, /docs/static/*"),
    ],
)
def test_start_log_lists_open_paths(caplog, public_docs, open_paths):
    from serving.auth import describe_auth

    with caplog.at_level(logging.INFO, logger="serving.auth"):
        describe_auth(KeyRing([SecretStr("k")]), KeyRing([]), public_docs)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    expected = f"all paths except {open_paths}: 1 client keys"
    assert any(expected in m for m in messages), messages


def test_public_docs_setting_opens_openapi(settings_factory, demo_bundle, keys):
    from serving.app import create_app

    app = create_app(
        settings_factory(
            bundle_dir=str(demo_bundle), api_keys=[keys.client], public_docs=True
        )
    )
    with TestClient(app) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200
        assert client.get("/v1/model").status_code == 401


def test_key_ring_matches_only_configured_keys():
    ring = KeyRing([SecretStr("alpha-key"), SecretStr("beta-key")])
    assert len(ring) == 2
    assert ring.matches("alpha-key")
    assert ring.matches("beta-key")
    assert not ring.matches("alpha-ke")
    assert not ring.matches("alpha-key ")
    assert not ring.matches("")
    assert not KeyRing([]).matches("alpha-key")


@pytest.mark.parametrize("valid_header", ["x-api-key", "authorization"])
def test_one_wrong_key_of_two_is_rejected(keyed_client, keys, valid_header):
    valid = {"x-api-key": keys.client, "authorization": f"Bearer {keys.client}"}
    wrong = {"x-api-key": "wrong", "authorization": "Bearer wrong"}
    headers = {
        name: (valid if name == valid_header else wrong)[name] for name in valid
    }
    response = keyed_client.post("/v1/score", json=TICKET, headers=headers)
    assert response.status_code == 401
    both = keyed_client.post("/v1/score", json=TICKET, headers=valid)
    assert both.status_code == 200


def test_key_list_without_keys_is_an_error(monkeypatch):
    from pydantic import ValidationError

    from serving.settings import Settings

    monkeypatch.setenv("TRIAGE_API_KEYS", " , ,")
    with pytest.raises(ValidationError, match="contains no key"):
        Settings()
