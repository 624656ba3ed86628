"""``POST /v1/score`` and ``POST /v1/score/batch``.

Validation of batch items, tokenisation and the ONNX runs happen on the scoring
threads, never on the event loop. A batch calls the scorer once for all its
valid tickets, so each ONNX graph runs once per batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response

from . import feedback_api
from .coalesce import Coalescer
from .errors import field_errors, invalid_request, request_id_of
from .json_io import BodyError, ResponseShape, json_body, json_response, read_body
from .schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    ScoreRequest,
    ScoreResponse,
    TicketIn,
)
from .service import Service, get_service
from .settings import Settings
from .state import LoadedModel

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not UTF-8."},
    401: {"model": ErrorResponse, "description": "The API key is missing or invalid."},
    413: {"model": ErrorResponse, "description": "The body is larger than the limit."},
    415: {"model": ErrorResponse, "description": "The body is not JSON, or not UTF-8."},
    422: {"model": ErrorResponse, "description": "A field is invalid; see errors."},
    503: {"model": ErrorResponse, "description": "No model is loaded yet."},
}

router = APIRouter(prefix="/v1", tags=["scoring"], responses=ERROR_RESPONSES)


def limit_errors(
    ticket: TicketIn, settings: Settings, prefix: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Errors for the limits that come from settings rather than from the schema."""
    limit = settings.max_description_chars
    if len(ticket.description) <= limit:
        return []
    path = ".".join(str(p) for p in [*prefix, "description"])
    return [
        {
            "field": path,
            "message": f"description has {len(ticket.description)} characters; the "
            f"limit is {limit}; shorten it or raise TRIAGE_MAX_DESCRIPTION_CHARS",
            "type": "string_too_long",
        }
    ]


def score_records(
    service: Service,
    model: LoadedModel,
    records: list[dict[str, Any]],
    include: Sequence[str],
    endpoint: str,
) -> list[dict[str, Any]]:
    """Score records with ``model`` and run the enrichers; one scorer call in all."""
    if not records:
        return []
    started = time.perf_counter()
    answers = model.scorer.score(records, include=include)
    for enrich in service.enrichers:
        enrich(model, records, answers, include)
    seconds = time.perf_counter() - started
    service.metrics.observe_scoring(endpoint, seconds)
    service.metrics.count_categories(answers)
    return answers


def build_coalescer(service: Service) -> Coalescer:
    """Build the coalescer of ``POST /v1/score``, with one slot per scoring thread."""

    def score(
        model: LoadedModel, records: list[dict[str, Any]], include: Sequence[str]
    ) -> asyncio.Future:
        # The executor's future itself, awaited by the coalescer: a coroutine
        # around it would cost a frame and a task step per call.
        return asyncio.get_running_loop().run_in_executor(
            service.executor, score_records, service, model, records, include, "score"
        )

    coalescer = Coalescer(score, slots=service.settings.scoring_thread_count)
    coalescer.batch_sizes = service.metrics.coalesced.observe
    return coalescer


def finish_answer(
    answer: dict[str, Any], record: dict[str, Any], model: LoadedModel, request_id: str
) -> dict[str, Any]:
    return {
        **answer,
        "request_id": request_id,
        "ticket_id": record.get("ticket_id"),
        "model": model.ref(),
    }


SCORE_RESPONSE = ResponseShape(ScoreResponse)


# The route reads its body from the bytes and writes its answer without
# validating it against ScoreResponse, as serving/json_io.py explains. The
# decorator's arguments document both in the OpenAPI document.
@router.post(
    "/score",
    response_model=ScoreResponse,
    summary="Score one ticket.",
    openapi_extra=json_body(ScoreRequest),
)
async def score_one(request: Request) -> Response:
    """Score one ticket: category, root causes with measures, escalation."""
    started = time.perf_counter()
    service: Service = request.app.state.service
    request_id = request_id_of(request)
    try:
        ticket = await read_body(request, ScoreRequest)
    except BodyError as exc:
        return exc.response
    problems = limit_errors(ticket, service.settings)
    if problems:
        return invalid_request(request_id, problems)
    model = service.require_model()
    record = ticket.as_record()
    answer = await service.coalescer.score(model, record, ticket.include)
    answer = finish_answer(answer, record, model, request_id)
    feedback_api.record_scored(request, record, answer, started)
    return json_response(SCORE_RESPONSE(answer))


def score_batch_items(
    service: Service,
    model: LoadedModel,
    batch: BatchRequest,
    request_id: str,
    log: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Validate every item, score the valid ones in one call, keep the input order.

    ``log`` is called with each scored ticket's record and answer.
    """
    items: list[dict[str, Any] | None] = [None] * len(batch.tickets)
    records: list[dict[str, Any]] = []
    positions: list[int] = []
    for index, raw in enumerate(batch.tickets):
        try:
            ticket = TicketIn.model_validate(raw)
        except ValidationError as exc:
            errors = field_errors(exc.errors(), prefix=("tickets", index))
        else:
            errors = limit_errors(ticket, service.settings, prefix=("tickets", index))
        if errors:
            items[index] = {"index": index, "status": "invalid", "errors": errors}
            continue
        records.append(ticket.as_record())
        positions.append(index)

    answers = score_records(service, model, records, batch.include, "batch")
    for index, record, answer in zip(positions, records, answers):
        answer = finish_answer(answer, record, model, request_id)
        items[index] = {"index": index, "status": "scored", "answer": answer}
        if log is not None:
            log(record, answer)
    invalid = len(batch.tickets) - len(records)
    service.metrics.batch_size.observe(len(batch.tickets))
    service.metrics.invalid_items.inc(invalid)
    return {
        "request_id": request_id,
        "model": model.ref(),
        "scored": len(records),
        "invalid": invalid,
        "items": items,
    }


@router.post(
    "/score/batch",
    response_model=BatchResponse,
    summary="Score up to 1,000 tickets; an invalid ticket gets its own error entry.",
)
async def score_batch(
    batch: BatchRequest, request: Request, service: Service = Depends(get_service)
):
    """Score a batch; items keep the input order and invalid ones carry errors."""
    started = time.perf_counter()
    request_id = request_id_of(request)
    limit = service.settings.max_batch
    if len(batch.tickets) > limit:
        return invalid_request(
            request_id,
            [
                {
                    "field": "tickets",
                    "message": f"the batch has {len(batch.tickets)} tickets; the "
                    f"limit is {limit}; split it into smaller batches",
                    "type": "too_long",
                }
            ],
        )
    model = service.require_model()

    def log(record: dict[str, Any], answer: dict[str, Any]) -> None:
        feedback_api.record_scored(request, record, answer, started)

    return await service.run(score_batch_items, service, model, batch, request_id, log)


__all__ = [
    "ERROR_RESPONSES",
    "build_coalescer",
    "limit_errors",
    "router",
    "score_records",
]
