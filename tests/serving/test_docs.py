"""``/docs`` loads every file from the service itself, so that it works on a
network with no internet access, and there is no ReDoc page."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

# src and href attributes, and url: '...' in the inline Swagger UI set-up.
URL_PATTERN = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")
ASSET_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


def page_urls(html: str) -> list[str]:
    return [a or b for a, b in URL_PATTERN.findall(html)]


def test_docs_page_loads_local_files(open_client):
    response = open_client.get("/docs")
    assert response.status_code == 200, response.text
    html = response.text
    assert "http://" not in html
    assert "https://" not in html
    urls = page_urls(html)
    assets = [url for url in urls if url != "/openapi.json"]
    assert "/openapi.json" in urls
    assert any(url.endswith(".js") for url in assets), urls
    for url in assets:
        assert url.startswith("/docs/static/"), url
        asset = open_client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        content_type = asset.headers["content-type"]
        assert content_type.startswith(ASSET_TYPES[suffix]), (url, content_type)
        assert len(asset.content) > 1000, url


def test_swagger_ui_skips_online_validator(open_client):
    assert '"validatorUrl": null' in open_client.get("/docs").text


def test_redoc_page_is_not_served(open_client):
    # The ReDoc bundle loads its sidebar logo from cdn.redoc.ly, with no option
    # to leave it out.
    assert open_client.get("/redoc").status_code == 404
    assert "/redoc" not in open_client.get("/openapi.json").json()["paths"]


def test_docs_files_need_key_like_docs(keyed_client, keys):
    asset = "/docs/static/swagger-ui-bundle.js"
    for path in ("/docs", asset):
        assert keyed_client.get(path).status_code == 401, path
        with_key = keyed_client.get(path, headers={"X-API-Key": keys.client})
        assert with_key.status_code == 200, path


def test_public_docs_opens_docs_files(settings_factory, demo_bundle, keys):
    from serving.app import create_app

    settings = settings_factory(
        bundle_dir=str(demo_bundle), api_keys=[keys.client], public_docs=True
    )
    with TestClient(create_app(settings)) as client:
        for path in ("/docs", "/docs/static/swagger-ui.css"):
            assert client.get(path).status_code == 200, path
        assert client.get("/v1/model").status_code == 401
