"""ASGI middleware: request ids and metrics, and the guard on request bodies.

Both are plain ASGI callables rather than ``BaseHTTPMiddleware``, which would
add a task and a memory stream to every request.
"""

from __future__ import annotations

import logging
import random
import re
import time

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from .errors import INTERNAL_ERROR, send_error
from .metrics import UNMATCHED_ROUTE, ServiceMetrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def new_request_id() -> str:
    """Return 32 random hex digits, like ``uuid4().hex``.

    Request ids need to be unique, not unpredictable, so Python's Mersenne
    Twister is enough. ``uuid4`` reads the kernel's random source on every call,
    which costs a system call per request.
    """
    return f"{random.getrandbits(128):032x}"


def caller_request_id(scope: Scope) -> str | None:
    """Return the caller's ``X-Request-ID`` if it is a short token safe to log."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            return text if _CALLER_REQUEST_ID.fullmatch(text) else None
    return None


def route_template(scope: Scope) -> str:
    """Return the matched route's path template, for the metrics' route label.

    A request rejected by middleware never reaches the router; it is labelled
    with its path when that is the path of a route without parameters.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    app = scope.get("app")
    if app is not None and scope.get("path") in _static_paths(app):
        return scope["path"]
    return UNMATCHED_ROUTE


def _static_paths(app) -> frozenset[str]:
    """Paths without parameters of the app's documented routes, computed once."""
    paths = getattr(app.state, "static_route_paths", None)
    if paths is None:
        # The OpenAPI paths, because FastAPI keeps included routers as lazy
        # entries in app.routes that have no path of their own.
        documented = app.openapi().get("paths", {})
        paths = frozenset(path for path in documented if "{" not in path)
        app.state.static_route_paths = paths
    return paths


class RequestContextMiddleware:
    """Give each request an id, count it in the metrics and turn crashes into JSON 500s.

    The id is the caller's ``X-Request-ID`` when it is a plain token, otherwise
    32 new random hex digits. It is stored in ``scope["state"]["request_id"]``
    and returned in the ``X-Request-ID`` response header.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = caller_request_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False

        async def send_with_id(message: ASGIMessage) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Logged without the body: a traceback names code lines, not values.
            logger.exception(
                "request %s: %s %s failed",
                request_id,
                scope["method"],
                route_template(scope),
            )
            if not response_started:
                await send_error(send_with_id, 500, INTERNAL_ERROR, request_id)
            status = 500
        finally:
            self.metrics.observe_request(
                route_template(scope),
                scope["method"],
                status,
                time.perf_counter() - started,
            )


def _json_content_type(scope: Scope) -> tuple[bool, str | None]:
    """Return whether the body is to be read as JSON, and the charset it declares."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media_type, *parameters = value.decode("latin-1").split(";")
            media_type = media_type.strip().lower()
            is_json = media_type == "application/json" or (
                media_type.startswith("application/") and media_type.endswith("+json")
            )
            charset = None
            for parameter in parameters:
                key, _, parameter_value = parameter.partition("=")
                if key.strip().lower() == "charset":
                    charset = parameter_value.strip().strip('"')
            return is_json, charset
    # FastAPI rejects a body without a content type. Check it as JSON all the same,
    # so that the error names what is wrong with the bytes.
    return True, None


def _content_codings(scope: Scope) -> list[str]:
    """Return the codings of every ``Content-Encoding`` header, lower-cased."""
    codings = []
    for name, value in scope.get("headers", ()):
        if name == b"content-encoding":
            for coding in value.decode("latin-1").split(","):
                if coding.strip():
                    codings.append(coding.strip().lower())
    return codings


class BodyGuardMiddleware:
    """Reject encoded bodies (415) and JSON bodies that are too large (413) or not
    UTF-8 (415, 400).

    A body with a ``Content-Encoding`` other than ``identity``, such as gzip, is
    rejected whatever its content type, because no route decodes it. The JSON
    body is read here in full and handed on unchanged. Other content types,
    such as form uploads, pass through untouched.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.too_large = (
            f"The request body is larger than the limit of {max_body_bytes} bytes."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        codings = [c for c in _content_codings(scope) if c != "identity"]
        if codings:
            # Accept-Encoding in a response names the codings accepted in requests
            # (RFC 7694, now part of RFC 9110 section 12.5.3).
            await send_error(
                send,
                415,
                f"The request body has Content-Encoding {', '.join(codings)[:40]!r}, "
                "but the service accepts only unencoded bodies. Send the JSON "
                "without Content-Encoding.",
                request_id,
                {"Accept-Encoding": "identity"},
            )
            return
        is_json, charset = _json_content_type(scope)
        if not is_json:
            await self.app(scope, receive, send)
            return
        if isinstance(charset, str) and charset.lower().replace("_", "-") not in (
            "utf-8",
            "utf8",
        ):
            await send_error(
                send,
                415,
                f"The request body is declared as {charset[:40]!r}; send JSON "
                "encoded as UTF-8.",
                request_id,
            )
            return
        if self._declared_length(scope) > self.max_body_bytes:
            await send_error(send, 413, self.too_large, request_id)
            return

        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await send_error(send, 413, self.too_large, request_id)
                return
            chunks.append(chunk)
            more_body = message.get("more_body", False)
        body = b"".join(chunks)

        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            await send_error(
                send,
                400,
                "The request body is not valid UTF-8 (invalid byte at offset "
                f"{exc.start}); "
                "send JSON encoded as UTF-8.",
                request_id,
            )
            return

        replayed = False

        async def replay() -> ASGIMessage:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0


__all__ = ["BodyGuardMiddleware", "RequestContextMiddleware", "caller_request_id"]
