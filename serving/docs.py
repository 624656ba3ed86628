"""Swagger UI at ``/docs``, served without a CDN.

FastAPI's own page loads its JavaScript, CSS and favicon from a public CDN, so
it does not render on a closed network. This page loads the same files from
``DOCS_ASSETS_PATH``, which serves the copies that the ``fastapi-offline``
package ships (Swagger UI 5.32.6 in its release 1.7.7).

The service has no ReDoc page. The ReDoc bundle in that release draws an
"API docs by Redocly" link in its sidebar with an image from
``https://cdn.redoc.ly/redoc/logo-mini.svg``, and the open-source ReDoc 2 has no
option that leaves it out.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .auth import DOCS_PREFIX

DOCS_ASSETS_PATH = DOCS_PREFIX.rstrip("/")
DOCS_ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
# Unless validatorUrl is null, Swagger UI 5.32.6 shows a badge image from
# swagger.io's online validator and sends it the document's URL (on hosts other
# than localhost). A closed network cannot reach that validator.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def docs_assets_dir() -> Path:
    """Return the folder of Swagger UI files in ``fastapi-offline``.

    Raises RuntimeError naming the missing files when the installed release
    does not have them.
    """
    folder = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    missing = [name for name in DOCS_ASSET_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(
            f"fastapi-offline has no {', '.join(missing)} in {folder}. Reinstall "
            "the service's dependencies with make install"
        )
    return folder


def install_docs(app: FastAPI) -> None:
    """Add ``/docs`` and its files to ``app``, which must be built with
    ``docs_url=None`` and ``redoc_url=None``."""
    app.mount(
        DOCS_ASSETS_PATH, StaticFiles(directory=docs_assets_dir()), name="docs-assets"
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        assets = root + DOCS_ASSETS_PATH
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )


__all__ = ["DOCS_ASSETS_PATH", "docs_assets_dir", "install_docs"]
