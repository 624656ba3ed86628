"""The FastAPI application: scoring API for the dispatch system."""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .schemas import ScoreRequest, ScoreResponse
from .settings import Settings, get_settings
from .state import ModelState, load_model

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model loads in the lifespan, before the first request."""
    settings = settings or get_settings()
    state = ModelState()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.swap(load_model(settings.model_uri, settings.bundle_dir, settings.onnx_threads))
        yield

    app = FastAPI(
        title="Ticket triage",
        version="1",
        description="Anomaly category, root cause and escalation for work orders at intake.",
        lifespan=lifespan,
    )
    app.state.model_state = state
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [
            {
                "field": ".".join(str(p) for p in err["loc"] if p != "body"),
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.get("/healthz", summary="Process is alive.")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="A model is loaded and passed its self-test.")
    def readyz() -> JSONResponse:
        model = state.model
        if model is None:
            return JSONResponse(status_code=503, content={"status": "loading"})
        return JSONResponse({"status": "ready", "model": model.ref()})

    @app.post("/v1/score", response_model=ScoreResponse, summary="Score one ticket.")
    async def score(ticket: ScoreRequest) -> dict:
        if len(ticket.description) > settings.max_description_chars:
            raise HTTPException(
                status_code=422,
                detail=[{
                    "field": "description",
                    "message": f"description has {len(ticket.description)} characters; "
                    f"the limit is {settings.max_description_chars}",
                    "type": "string_too_long",
                }],
            )
        model = state.model
        if model is None:
            raise HTTPException(status_code=503, detail="no model loaded yet")
        answer = (await run_in_threadpool(model.scorer.score, [ticket.as_record()]))[0]
        return {
            **answer,
            "request_id": uuid.uuid4().hex,
            "ticket_id": ticket.ticket_id,
            "model": model.ref(),
        }

    @app.get("/v1/model", summary="The loaded model: version, labels, metrics, fields.")
    def model_info() -> dict:
        model = state.model
        if model is None:
            raise HTTPException(status_code=503, detail="no model loaded yet")
        manifest = model.scorer.manifest
        return {
            **model.ref(),
            "targets": manifest["targets"],
            "metrics": manifest.get("metrics", {}),
            "feature_fields": manifest["feature_spec"],
            "known_values": manifest.get("known_values", {}),
        }

    return app
