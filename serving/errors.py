"""JSON error responses: one fixed sentence per HTTP error, field errors for 422.

Every error response has the shape ``{"detail": str, "request_id": str, "errors":
[...]}``, where ``errors`` appears only on 422 and lists one entry per invalid
field, up to ``MAX_ERROR_ENTRIES`` entries and one that counts the rest. No
handler logs or echoes the request body; a field error carries the
field's path and what was expected, never the value that came.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import Send

logger = logging.getLogger(__name__)

INVALID_REQUEST = (
    "The request is invalid; each entry of errors names a field and the problem."
)
INTERNAL_ERROR = (
    "The service failed to handle the request; the request id identifies it in the "
    "service log."
)

NOT_JSON = (
    "The request body must be JSON; send it with 'Content-Type: application/json' "
    "and encode it as UTF-8."
)

# pydantic-core 2.50's JSON parser raises "recursion limit exceeded" for arrays and
# objects nested deeper than about this many levels. NOTE: it accepts 201 levels of
# arrays but not 201 levels of objects, so this is the depth every body may use.
MAX_JSON_DEPTH = 200
TOO_DEEP = (
    "the body is not valid JSON: arrays and objects nest too deeply; the limit is "
    f"{MAX_JSON_DEPTH} levels"
)
# The reason in the ``ctx`` of a ``json_invalid`` error for such nesting, from
# pydantic-core and from _read_as_fastapi in serving/json_io.py.
RECURSION_LIMIT_REASON = "recursion limit exceeded"

# Maximum entries in one error list. A body of 5 MB can hold hundreds of thousands
# of invalid fields, and a list of them all is larger than the request, so one
# entry after the last listed one counts the others.
MAX_ERROR_ENTRIES = 100
TOO_MANY_ERRORS = "too_many_errors"

# Fixed sentences for the statuses the framework raises by itself.
STATUS_SENTENCES = {
    400: "The request could not be read.",
    404: "No endpoint has this path.",
    405: "The endpoint does not accept this HTTP method.",
    413: "The request body is too large.",
    415: "The request body must be JSON encoded as UTF-8.",
}


# Details that Starlette and FastAPI raise by themselves, replaced by the
# sentences above: HTTP reason phrases and FastAPI's body parse failure.
FRAMEWORK_DETAILS = frozenset({"There was an error parsing the body"})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _sent_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def request_id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def error_content(
    detail: str, request_id: str | None, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    content: dict[str, Any] = {"detail": detail, "request_id": request_id}
    if errors is not None:
        content["errors"] = errors
    return content


def field_path(location: Iterable[Any]) -> str:
    """Dotted path of a field from a pydantic location, without the ``body`` prefix."""
    parts = [str(part) for part in location]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def limit_entries(
    entries: list[dict[str, Any]], prefix: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Keep the first ``MAX_ERROR_ENTRIES`` entries and add one that counts the rest.

    A list that this function limited already is returned unchanged.
    """
    if len(entries) <= MAX_ERROR_ENTRIES or (
        len(entries) == MAX_ERROR_ENTRIES + 1
        and entries[-1].get("type") == TOO_MANY_ERRORS
    ):
        return entries
    return [*entries[:MAX_ERROR_ENTRIES], _more_errors(len(entries), prefix)]


def _more_errors(total: int, prefix: Sequence[Any]) -> dict[str, Any]:
    return {
        "field": field_path(prefix),
        "message": f"{total - MAX_ERROR_ENTRIES} more errors are not listed; the "
        f"service lists the first {MAX_ERROR_ENTRIES} of {total}",
        "type": TOO_MANY_ERRORS,
    }


def field_errors(
    errors: Sequence[dict[str, Any]], prefix: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Turn pydantic errors into ``{field, message, type}`` entries, without inputs.

    Only the first ``MAX_ERROR_ENTRIES`` errors get entries, and one more entry
    counts the others.
    """
    entries = []
    for error in errors[:MAX_ERROR_ENTRIES]:
        location = [*prefix, *error.get("loc", ())]
        message = error.get("msg", "invalid value")
        if error.get("type") == "json_invalid":
            # FastAPI puts the character offset of a JSON syntax error in the location.
            position = (
                location[-1] if location and isinstance(location[-1], int) else None
            )
            reason = error.get("ctx", {}).get("error", "invalid JSON")
            message = f"the body is not valid JSON: {reason}"
            if reason.startswith(RECURSION_LIMIT_REASON):
                message = TOO_DEEP
            elif position is not None:
                message += f" at character {position}"
            location = ["body"]
        entries.append(
            {
                "field": field_path(location),
                "message": message,
                "type": error.get("type"),
            }
        )
    if len(errors) > MAX_ERROR_ENTRIES:
        entries.append(_more_errors(len(errors), prefix))
    return entries


def invalid_request(
    request_id: str | None, errors: list[dict[str, Any]]
) -> JSONResponse:
    """Return the 422 response, with at most ``MAX_ERROR_ENTRIES`` error entries."""
    content = error_content(INVALID_REQUEST, request_id, limit_entries(errors))
    return JSONResponse(status_code=422, content=content)


async def send_error(
    send: Send,
    status: int,
    detail: str,
    request_id: str | None,
    headers: dict[str, str] | None = None,
) -> None:
    """Send a JSON error from ASGI middleware, before any route runs.

    The request context middleware, outermost, adds the ``X-Request-ID`` header.
    """
    body = json.dumps(error_content(detail, request_id), ensure_ascii=False).encode(
        "utf-8"
    )
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send(
        {"type": "http.response.start", "status": status, "headers": raw_headers}
    )
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers that return validation and HTTP errors in that JSON shape."""

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if not _sent_json(request) and any(
            tuple(e.get("loc", ())) == ("body",) for e in errors
        ):
            # FastAPI reads a body without a JSON content type as bytes, which then
            # fails validation as a whole; the content type is the real mistake.
            return JSONResponse(
                status_code=415,
                content=error_content(NOT_JSON, request_id_of(request)),
            )
        return invalid_request(request_id_of(request), field_errors(errors))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # FastAPI returns 400 for every body parse failure other than a JSON
            # syntax error. Python's json.loads raises RecursionError on deep
            # nesting, at about 1,000 levels less the stack already in use.
            entry = {"field": "body", "message": TOO_DEEP, "type": "json_invalid"}
            return invalid_request(request_id_of(request), [entry])
        detail = str(exc.detail)
        if detail in FRAMEWORK_DETAILS or detail == _phrase(exc.status_code):
            detail = STATUS_SENTENCES.get(exc.status_code, detail)
        return JSONResponse(
            status_code=exc.status_code,
            content=error_content(detail, request_id_of(request)),
            headers=getattr(exc, "headers", None),
        )


__all__ = [
    "INTERNAL_ERROR",
    "INVALID_REQUEST",
    "MAX_ERROR_ENTRIES",
    "MAX_JSON_DEPTH",
    "RECURSION_LIMIT_REASON",
    "TOO_MANY_ERRORS",
    "error_content",
    "field_errors",
    "field_path",
    "install_error_handlers",
    "invalid_request",
    "limit_entries",
    "send_error",
]
