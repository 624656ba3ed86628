"""Probes, model information, metrics and the admin reload."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from .schemas import (
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    ReadyResponse,
    ReloadResponse,
)
from .service import Service, get_service
from .state import LoadedModel

router = APIRouter()

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "The API key is missing or invalid."},
}

RELOAD_DETAILS = {
    "loaded": "The new model passed its self-test and now serves all new requests.",
    "unchanged": "The source points to the model already loaded.",
    "rejected": "The source's model failed verification or its self-test; the "
    "loaded model keeps serving.",
    "failed": "The model source could not be read; the old model keeps serving.",
}
RELOAD_STATUS = {"loaded": 200, "unchanged": 200, "rejected": 409, "failed": 503}


@router.get("/healthz", response_model=HealthResponse, summary="The process is alive.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="A model is loaded and passed its self-test.",
    responses={503: {"model": ReadyResponse, "description": "No model is loaded yet."}},
)
async def readyz(service: Service = Depends(get_service)):
    model = service.state.model
    report = service.state.last_report
    content = {
        "status": "ready" if model else "not_ready",
        "model": model.ref() if model else None,
        "self_test": "passed" if model else None,
        "auth": "api_keys" if service.auth_enabled else "open",
        "last_check": report.to_dict() if report else None,
    }
    return JSONResponse(status_code=200 if model else 503, content=content)


def model_info(model: LoadedModel, service: Service) -> dict[str, Any]:
    manifest = model.scorer.manifest
    targets = manifest["targets"]
    report = service.state.last_report
    return {
        **model.ref(),
        "source": model.source,
        "run_id": model.run_id,
        "loaded_at": model.loaded_at,
        "labels": {
            t["name"]: t.get("labels", [])
            for t in targets
            if t.get("kind") != "regression"
        },
        "thresholds": {t["name"]: t.get("threshold") for t in targets},
        "targets": targets,
        "metrics": manifest.get("metrics", {}),
        "feature_fields": manifest["feature_spec"],
        "known_values": manifest.get("known_values", {}),
        "last_check": report.to_dict() if report else None,
    }


@router.get(
    "/v1/model",
    response_model=ModelInfo,
    tags=["model"],
    summary="The loaded model: version, labels, metrics, feature fields, thresholds.",
    responses={
        **AUTH_ERRORS,
        503: {"model": ErrorResponse, "description": "No model is loaded yet."},
    },
)
def get_model(service: Service = Depends(get_service)):
    return model_info(service.require_model(), service)


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latency, scores by category, model version.",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **AUTH_ERRORS,
    },
)
def metrics(service: Service = Depends(get_service)) -> Response:
    body, content_type = service.metrics.render()
    return Response(content=body, media_type=content_type)


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResponse,
    tags=["admin"],
    summary="Check the model source now and load its model if it changed.",
    responses={
        **AUTH_ERRORS,
        403: {"model": ErrorResponse, "description": "The key is not an admin key."},
        409: {"model": ReloadResponse, "description": "The new model was rejected."},
        503: {
            "model": ReloadResponse,
            "description": "The model source could not be read.",
        },
    },
)
async def reload_model(
    force: bool = Query(False, description="Reload even if the version is unchanged."),
    service: Service = Depends(get_service),
):
    previous = service.state.model
    # The default thread pool, not the scoring threads: a load takes seconds.
    report = await asyncio.to_thread(
        service.watcher.check, retry_rejected=True, force=force, verify_remote=True
    )
    current = service.state.model
    content = {
        "outcome": report.outcome,
        "detail": RELOAD_DETAILS[report.outcome],
        "model": current.ref() if current else None,
        "previous": previous.ref() if previous and current is not previous else None,
        "error": report.error,
    }
    return JSONResponse(status_code=RELOAD_STATUS[report.outcome], content=content)


__all__ = ["router"]
