"""API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

With keys configured, every path is closed except those :func:`open_routes`
returns: the probes in ``OPEN_PATHS``, the intake page and its files, and the
OpenAPI pages with their files when ``public_docs`` is set. Routers
added later are closed too, because the check runs as ASGI middleware in front of
all routes.
Paths under ``/v1/admin/`` need an admin key. Keys are compared as SHA-256
digests with :func:`hmac.compare_digest` against every configured key, so the
time taken depends neither on how much of a key matched nor on which key it was.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable

from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import send_error

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# The intake page's own files hold no ticket data, and a browser cannot attach a
# key to a page load; the page sends the operator's key with every API call.
PAGE_PATHS = frozenset({"/"})
PAGE_PREFIX = "/static/"
DOCS_PATHS = frozenset({"/docs", "/openapi.json"})
# Swagger UI's JavaScript, CSS and favicon, open whenever its page is.
DOCS_PREFIX = "/docs/static/"
ADMIN_PREFIX = "/v1/admin/"

MISSING_KEY = (
    "An API key is required; send it as 'Authorization: Bearer <key>' or "
    "'X-API-Key: <key>'."
)
INVALID_KEY = "The API key is not valid."
ADMIN_REQUIRED = "This endpoint requires an admin key."
NO_ADMIN_KEYS = (
    "No admin key is configured, so admin endpoints are closed; set TRIAGE_ADMIN_KEYS "
    "or TRIAGE_ADMIN_KEYS_FILE."
)


def open_routes(public_docs: bool) -> tuple[frozenset[str], tuple[str, ...]]:
    """Return the paths, and the path prefixes, that need no key when keys are set."""
    if public_docs:
        return OPEN_PATHS | PAGE_PATHS | DOCS_PATHS, (PAGE_PREFIX, DOCS_PREFIX)
    return OPEN_PATHS | PAGE_PATHS, (PAGE_PREFIX,)


def _digest(key: str) -> bytes:
    # surrogatepass: a header decoded as latin-1 never contains surrogates, but a
    # key from a file might, and hashing must not raise on it.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """A set of keys checked in constant time; only their digests are kept."""

    def __init__(self, keys: Iterable[SecretStr]) -> None:
        self._digests = [_digest(k.get_secret_value()) for k in keys]

    def __len__(self) -> int:
        return len(self._digests)

    def matches(self, presented: str) -> bool:
        digest = _digest(presented)
        found = False
        for known in self._digests:  # no early exit: every key costs the same
            found |= hmac.compare_digest(digest, known)
        return found


def presented_keys(scope: Scope) -> list[str]:
    """Return the keys a request sends in ``X-API-Key`` and Bearer ``Authorization`` headers."""
    keys = []
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            keys.append(value.decode("latin-1").strip())
        elif name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                keys.append(token.strip())
    return [key for key in keys if key]


class AuthMiddleware:
    """Reject requests to closed paths that carry no valid key (401) or, on admin
    paths, no admin key (403)."""

    def __init__(
        self,
        app: ASGIApp,
        client_keys: KeyRing,
        admin_keys: KeyRing,
        public_docs: bool = False,
    ) -> None:
        self.app = app
        self.client_keys = client_keys
        self.admin_keys = admin_keys
        self.open_paths, self.open_prefixes = open_routes(public_docs)
        self.enabled = bool(len(client_keys) or len(admin_keys))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.enabled
            or scope["type"] != "http"
            or scope["path"] in self.open_paths
            or scope["path"].startswith(self.open_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        keys = presented_keys(scope)
        if not keys:
            await send_error(
                send, 401, MISSING_KEY, request_id, {"WWW-Authenticate": "Bearer"}
            )
            return
        # With a key in both headers, both must be valid: a caller never gets in
        # on one good key beside a wrong one.
        is_admin = all(self.admin_keys.matches(key) for key in keys)
        is_client = all(
            self.admin_keys.matches(key) or self.client_keys.matches(key) for key in keys
        )
        if scope["path"].startswith(ADMIN_PREFIX):
            if is_admin:
                await self.app(scope, receive, send)
            elif not len(self.admin_keys):
                await send_error(send, 403, NO_ADMIN_KEYS, request_id)
            elif is_client:
                await send_error(send, 403, ADMIN_REQUIRED, request_id)
            else:
                await send_error(
                    send, 401, INVALID_KEY, request_id, {"WWW-Authenticate": "Bearer"}
                )
            return
        if is_client:
            await self.app(scope, receive, send)
            return
        await send_error(
            send, 401, INVALID_KEY, request_id, {"WWW-Authenticate": "Bearer"}
        )


def describe_auth(
    client_keys: KeyRing, admin_keys: KeyRing, public_docs: bool = False
) -> None:
    """Log at start how requests are authenticated; never the keys themselves."""
    if not len(client_keys) and not len(admin_keys):
        logger.warning(
            "NO API KEYS CONFIGURED: every endpoint, including /v1/admin/reload, "
            "is open "
            "to anyone who can reach this port; set TRIAGE_API_KEYS or "
            "TRIAGE_API_KEYS_FILE (and TRIAGE_ADMIN_KEYS) before exposing the service"
        )
        return
    paths, prefixes = open_routes(public_docs)
    logger.info(
        "API keys required on all paths except %s: %d client keys, %d admin keys",
        ", ".join([*sorted(paths), *(f"{prefix}*" for prefix in prefixes)]),
        len(client_keys),
        len(admin_keys),
    )
    if not len(admin_keys):
        logger.warning("no admin key configured: /v1/admin/* endpoints are closed")


__all__ = [
    "ADMIN_PREFIX",
    "DOCS_PATHS",
    "OPEN_PATHS",
    "AuthMiddleware",
    "KeyRing",
    "describe_auth",
    "open_routes",
]
