"""The FastAPI application: scoring API for the dispatch system.

Middleware, outermost first: request id and metrics, API keys, the JSON body
guard. The lifespan loads jieba and the model before the first request and
then polls the model source; see ``serving/lifecycle.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from features.text import get_tokenizer

from . import feedback_api, operations, page, scoring
from .auth import DOCS_PATHS, OPEN_PATHS, AuthMiddleware, KeyRing, describe_auth
from .docs import install_docs
from .errors import install_error_handlers
from .json_io import add_body_schemas
from .lifecycle import ModelWatcher, source_for
from .metrics import ServiceMetrics
from .middleware import BodyGuardMiddleware, RequestContextMiddleware
from .service import Service
from .settings import Settings, get_settings
from .state import ModelState

logger = logging.getLogger(__name__)

# Seconds between load attempts while no model is loaded, whatever poll_seconds is.
RETRY_WITHOUT_MODEL_SECONDS = 5.0


def configure_logging(level: str) -> None:
    """Send the service's log lines to standard error unless logging is set up.

    ``triage`` configures logging in its own process, but uvicorn workers and
    ``uvicorn serving.main:app`` start with only uvicorn's loggers configured.
    """
    if logging.getLogger().handlers:
        return
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_service(settings: Settings) -> Service:
    state = ModelState()
    metrics = ServiceMetrics()
    source = source_for(settings.model_uri, settings.bundle_dir)
    service = Service(
        settings=settings,
        state=state,
        watcher=ModelWatcher(state, source, settings.onnx_threads, metrics),
        metrics=metrics,
        client_keys=KeyRing(settings.client_keys()),
        admin_keys=KeyRing(settings.all_admin_keys()),
        executor=ThreadPoolExecutor(
            max_workers=settings.scoring_thread_count, thread_name_prefix="triage-score"
        ),
    )
    service.coalescer = scoring.build_coalescer(service)
    return service


async def follow_model_source(service: Service) -> None:
    """Check the model source on a timer; retry sooner while no model is loaded."""
    interval = service.settings.poll_seconds
    while True:
        if service.state.model is None:
            retry = RETRY_WITHOUT_MODEL_SECONDS
            wait = min(interval, retry) or retry
        elif interval > 0:
            wait = interval
        else:
            return
        await asyncio.sleep(wait)
        try:
            await asyncio.to_thread(service.watcher.check)
        except Exception:  # a bug in one check must not stop the polling
            logger.exception("model check raised; polling goes on")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model loads in the lifespan, before the first request."""
    settings = settings or get_settings()
    service = build_service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(settings.log_level)
        describe_auth(service.client_keys, service.admin_keys, settings.public_docs)
        # jieba's dictionary and the ONNX sessions load once per process, here.
        await asyncio.to_thread(get_tokenizer)
        report = await asyncio.to_thread(service.watcher.check)
        if service.state.model is None:
            logger.error(
                "no model loaded at start (%s); scoring endpoints return 503 and "
                "loading is retried every %.0f s",
                report.error,
                RETRY_WITHOUT_MODEL_SECONDS,
            )
        polling = asyncio.create_task(follow_model_source(service))
        try:
            yield
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            service.executor.shutdown(wait=False, cancel_futures=True)
            if service.state.model is not None:
                service.state.model.discard_download()

    app = FastAPI(
        title="Ticket triage",
        version="1",
        description="Anomaly category, root cause and escalation for work orders at "
        "intake. Send an API key as `Authorization: Bearer <key>` or `X-API-Key`.",
        lifespan=lifespan,
        # install_docs serves Swagger UI with local files in place of a CDN, and
        # ReDoc not at all, because its bundle loads a logo from Redocly's CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    app.state.service = service
    app.state.model_state = service.state
    app.state.settings = settings

    install_error_handlers(app)
    app.include_router(operations.router)
    app.include_router(scoring.router)
    app.include_router(feedback_api.router)
    app.include_router(page.router)

    # add_middleware puts each new one outside the previous ones.
    app.add_middleware(BodyGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        AuthMiddleware,
        client_keys=service.client_keys,
        admin_keys=service.admin_keys,
        public_docs=settings.public_docs,
    )
    app.add_middleware(RequestContextMiddleware, metrics=service.metrics)

    app.openapi = lambda: document_security(app)
    return app


ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}

# Errors the middleware and handlers give on any operation with a JSON body.
BODY_ERRORS = {
    "400": "The body is not valid UTF-8.",
    "413": "The body is larger than the limit.",
    "415": "The body is not JSON, declares a charset other than UTF-8, or has a "
    "Content-Encoding other than identity.",
    "422": "A field is invalid; errors names each one.",
}


def document_security(app: FastAPI) -> dict:
    """Build the OpenAPI document with the API key schemes and shared error responses.

    Every closed operation lists both key schemes and the 401 response. Every
    operation that takes parameters or a body lists the JSON error shape of
    ``serving/errors.py`` in place of FastAPI's default validation error.
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    add_body_schemas(schema)
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    open_paths = OPEN_PATHS | DOCS_PATHS
    for path, operations_by_method in schema.get("paths", {}).items():
        for operation in operations_by_method.values():
            responses = operation.setdefault("responses", {})
            if path in open_paths:
                operation["security"] = []
            else:
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                missing_key = _error_response("The API key is missing or invalid.")
                responses.setdefault("401", missing_key)
            errors = BODY_ERRORS if "requestBody" in operation else {}
            if "422" in responses or operation.get("parameters"):
                errors = {**errors, "422": BODY_ERRORS["422"]}
            for status, description in errors.items():
                responses[status] = _error_response(description)
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    app.openapi_schema = schema
    return schema


def _error_response(description: str) -> dict:
    content = {"application/json": {"schema": ERROR_SCHEMA}}
    return {"description": description, "content": content}
