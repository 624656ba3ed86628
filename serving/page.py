"""The intake page at ``/``: plain HTML, CSS and JavaScript from ``serving/static``.

The page calls the JSON API from the browser, so it contains no data itself and needs no
key to load. Its Content-Security-Policy allows scripts and styles from this origin
only, so that a ticket text that ever reached the document as markup still could not
run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).with_name("static")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()


def _static_file(name: str) -> FileResponse:
    path = STATIC_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    # Only plain file names of known types: no sub-folders, no "..".
    if "/" in name or "\\" in name or media_type is None or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no static file named {name!r}")
    return FileResponse(path, media_type=media_type, headers=PAGE_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
def intake_page() -> FileResponse:
    return _static_file("index.html")


@router.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
def static_file(name: str) -> FileResponse:
    return _static_file(name)


@router.get(
    "/v1/labels",
    summary="Display names of the loaded model's categories and root causes.",
)
def labels(request: Request) -> dict[str, Any]:
    model = request.app.state.model_state.model
    if model is None:
        raise HTTPException(status_code=503, detail="no model loaded yet")
    scorer = model.scorer
    taxonomy = scorer.taxonomy
    category_entry = scorer.target("category")
    cause_entry = scorer.target("root_cause")
    model_categories = [str(v) for v in category_entry.labels] if category_entry else []

    # Taxonomy order first, so the page shows categories in a fixed order.
    ordered = [c for c in taxonomy.category_codes if c in model_categories]
    ordered += [c for c in model_categories if c not in ordered]
    categories = []
    for code in ordered:
        category = taxonomy.category(code)
        categories.append({"code": code, "name": category.name if category else code})

    root_causes = []
    for label in cause_entry.labels if cause_entry else []:
        code = str(label)
        cause = taxonomy.cause(code)
        root_causes.append(
            {
                "code": code,
                "name": cause.name if cause else code,
                "category": cause.category if cause else None,
            }
        )
    return {
        "categories": categories,
        "root_causes": root_causes,
        "escalation": scorer.target("escalation") is not None,
    }


__all__ = ["STATIC_DIR", "router"]
