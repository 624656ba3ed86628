"""Feedback endpoints: record an operator's decision, report acceptance rates.

The router's lifespan opens the feedback store named by the settings. When the
database cannot be reached the service still scores: the feedback endpoints return
503 and try to open the store again on the next request, and scored tickets are not
logged until that succeeds.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from features.taxonomy import Taxonomy, load_taxonomy

from .errors import invalid_request, request_id_of
from .feedback import (
    FeedbackConflict,
    FeedbackEntry,
    FeedbackStore,
    ScoredTicketLog,
    as_utc,
    utc_now,
)
from .schemas import ErrorResponse
from .settings import Settings
from .state import LoadedModel

logger = logging.getLogger(__name__)

DEFAULT_PERIOD = timedelta(days=30)
REOPEN_SECONDS = 5.0

STORE_UNAVAILABLE = (
    "The feedback store is unavailable; retry later, with the same request id for "
    "feedback."
)
NO_MODEL_FOR_CAUSE = (
    "No model is loaded to check {field} {value!r} against, and the shipped taxonomy "
    "does not list it. Retry once /readyz reports ready."
)
# Maximum root-cause codes an error lists. A longer list is cut, and the message
# points to GET /v1/labels.
LISTED_CAUSES = 20
REQUEST_ID_REUSED = (
    "The request id was already used for a different feedback entry; send a new "
    "request id for a new entry."
)


class LabelSet(BaseModel):
    """Labels of one ticket, named as in the scoring response; a missing label is null."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(None, min_length=1, max_length=100)
    root_cause: str | None = Field(None, min_length=1, max_length=200)
    escalation: StrictBool | None = None


class FeedbackModel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=200)
    version: str | None = Field(None, max_length=50)


class FeedbackRequest(BaseModel):
    """An operator's decision on the suggestion for one ticket."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"\S",
        description="Client-chosen id of this entry; a repeat with the same id and "
        "content is recorded once.",
    )
    ticket_id: str = Field(min_length=1, max_length=200)
    model: FeedbackModel = Field(description="The model that made the suggestion.")
    score_request_id: str | None = Field(
        None, max_length=200, description="``request_id`` of the scoring response."
    )
    suggested: LabelSet = Field(description="Labels the model suggested.")
    chosen: LabelSet = Field(description="Labels the operator chose.")
    operator_id: str = Field(min_length=1, max_length=200)


class FeedbackAnswer(BaseModel):
    feedback_id: int
    request_id: str
    ticket_id: str
    accepted: bool = Field(description="Every chosen label equals the suggested one.")
    duplicate: bool = Field(description="The request id was recorded before.")
    recorded_at: datetime


class CategoryAcceptance(BaseModel):
    category: str | None
    name: str | None = None
    total: int
    accepted: int
    acceptance_rate: float | None


class FeedbackStats(BaseModel):
    since: datetime
    until: datetime
    model_name: str | None = None
    model_version: str | None = None
    total: int
    accepted: int
    acceptance_rate: float | None = Field(
        description="Share of entries whose chosen labels all equal the suggested ones; "
        "null without entries."
    )
    by_category: list[CategoryAcceptance] = Field(
        description="The same counts per suggested category."
    )


class FeedbackService:
    """The store and the scored-ticket log of one app; opens the store on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: FeedbackStore | None = None
        self.scored_log: ScoredTicketLog | None = None
        self._lock = threading.Lock()
        self._last_attempt = float("-inf")

    def store(self) -> FeedbackStore:
        """Return the open store, opening it first; raise HTTP 503 when that fails."""
        if self._store is not None:
            return self._store
        with self._lock:
            if self._store is None:
                self._open()
        if self._store is None:
            raise HTTPException(
                status_code=503, detail=STORE_UNAVAILABLE, headers={"Retry-After": "5"}
            )
        return self._store

    def _open(self) -> None:
        if time.monotonic() - self._last_attempt < REOPEN_SECONDS:
            return
        self._last_attempt = time.monotonic()
        try:
            store = FeedbackStore(self.settings.feedback_db_url)
        except (SQLAlchemyError, OSError) as exc:
            logger.error("opening the feedback store failed: %s", exc)
            return
        if self.settings.log_scored_tickets:
            self.scored_log = ScoredTicketLog(store, self.settings.store_ticket_text)
        self._store = store

    def close(self) -> None:
        if self.scored_log is not None:
            self.scored_log.close()
        if self._store is not None:
            self._store.close()


@asynccontextmanager
async def feedback_lifespan(app: FastAPI):
    service = FeedbackService(app.state.settings)
    app.state.feedback = service
    try:
        await run_in_threadpool(service.store)
    except HTTPException:
        logger.warning(
            "starting without the feedback store; the feedback endpoints return 503"
        )
    try:
        yield
    finally:
        await run_in_threadpool(service.close)


router = APIRouter(lifespan=feedback_lifespan, tags=["feedback"])


def record_scored(
    request: Request, ticket: dict[str, Any], response: dict[str, Any], started: float
) -> None:
    """Queue one scoring response for the scored-ticket log, when the log is on.

    ``started`` is the ``time.perf_counter()`` reading when the handler began.
    """
    service: FeedbackService | None = getattr(request.app.state, "feedback", None)
    if service is not None and service.scored_log is not None:
        service.scored_log.record(ticket, response, started)


def out_of_range(field: str) -> dict[str, str]:
    """Build the error for a time outside the years 1 to 9999 once converted to UTC."""
    return {
        "field": field,
        "message": f"{field} is out of range once converted to UTC (years 1 to 9999); "
        "give a later or earlier time",
        "type": "value_error",
    }


def _loaded_model(request: Request) -> LoadedModel | None:
    model_state = getattr(request.app.state, "model_state", None)
    return model_state.model if model_state is not None else None


def _taxonomy(model: LoadedModel | None) -> Taxonomy:
    return model.scorer.taxonomy if model is not None else load_taxonomy()


def known_root_causes(model: LoadedModel | None) -> list[str]:
    """Return the root-cause codes a feedback entry may name, without repeats.

    These are the causes of the model's taxonomy, the labels of its root-cause
    target and the causes recorded in its similar-ticket index. Suggestions come
    from the last two, and an organisation's own labels, which its mapping does
    not translate into taxonomy codes, appear only there. With no model loaded only the shipped
    taxonomy's causes are known.
    """
    if model is None:
        return [cause.code for cause in load_taxonomy().causes()]
    scorer = model.scorer
    codes = [cause.code for cause in scorer.taxonomy.causes()]
    entry = scorer.target("root_cause")
    if entry is not None:
        codes += [str(label) for label in entry.labels]
    index = getattr(scorer, "similar", None)
    if index is not None:
        codes += index.table.root_cause_labels
    return list(dict.fromkeys(codes))


def _listed(codes: list[str]) -> str:
    if len(codes) <= LISTED_CAUSES:
        return ", ".join(codes)
    first_codes = ", ".join(codes[:LISTED_CAUSES])
    more = len(codes) - LISTED_CAUSES
    return f"{first_codes} and {more} more (GET /v1/labels lists the model's labels)"


def label_errors(
    body: FeedbackRequest, taxonomy: Taxonomy, root_causes: list[str]
) -> list[dict[str, Any]]:
    """Field errors for labels the schema alone cannot check.

    A root cause is not checked against the category beside it. The model ranks
    categories and root causes independently, so an accepted suggestion can
    pair a category with a cause that the taxonomy files under another category.
    """
    errors = []
    if all(value is None for value in body.chosen.model_dump().values()):
        errors.append(
            {
                "field": "chosen",
                "message": "chosen has no label; send at least one of category, "
                "root_cause, escalation",
                "type": "missing",
            }
        )
    codes = taxonomy.category_codes
    for part in ("suggested", "chosen"):
        category = getattr(body, part).category
        if category is not None and category not in codes:
            errors.append(
                {
                    "field": f"{part}.category",
                    "message": f"category {category!r} is not a category code; expected "
                    f"one of {', '.join(codes)}",
                    "type": "enum",
                }
            )
    known = set(root_causes)
    for part in ("suggested", "chosen"):
        cause = getattr(body, part).root_cause
        if cause is not None and cause not in known:
            errors.append(
                {
                    "field": f"{part}.root_cause",
                    "message": f"root cause {cause!r} is not a root-cause code of the "
                    f"loaded model; expected one of {_listed(root_causes)}",
                    "type": "enum",
                }
            )
    return errors


def require_checkable_causes(body: FeedbackRequest, model: LoadedModel | None) -> None:
    """Raise HTTP 503 for a root cause outside the shipped taxonomy while no model
    is loaded, because only the model lists an organisation's own causes."""
    if model is not None:
        return
    known = set(known_root_causes(None))
    for part in ("suggested", "chosen"):
        cause = getattr(body, part).root_cause
        if cause is not None and cause not in known:
            detail = NO_MODEL_FOR_CAUSE.format(field=f"{part}.root_cause", value=cause)
            raise HTTPException(
                status_code=503, detail=detail, headers={"Retry-After": "5"}
            )


@router.post(
    "/v1/feedback",
    response_model=FeedbackAnswer,
    summary="Record the labels an operator accepted or corrected for a ticket.",
    responses={
        409: {
            "model": ErrorResponse,
            "description": "The request id was used for a different entry.",
        },
        422: {
            "model": ErrorResponse,
            "description": "A field is invalid; errors names it.",
        },
        503: {
            "model": ErrorResponse,
            "description": "The feedback store is unavailable, or no model is "
            "loaded to check a root cause that the shipped taxonomy does not list.",
        },
    },
)
def post_feedback(body: FeedbackRequest, request: Request) -> Any:
    model = _loaded_model(request)
    require_checkable_causes(body, model)
    errors = label_errors(body, _taxonomy(model), known_root_causes(model))
    if errors:
        return invalid_request(request_id_of(request), errors)
    entry = FeedbackEntry(
        request_id=body.request_id,
        ticket_id=body.ticket_id,
        model_name=body.model.name,
        model_version=body.model.version,
        operator_id=body.operator_id,
        suggested=body.suggested.model_dump(),
        chosen=body.chosen.model_dump(),
        score_request_id=body.score_request_id,
    )
    store = request.app.state.feedback.store()
    try:
        recorded = store.record_feedback(entry)
    except FeedbackConflict as exc:
        logger.warning("feedback %s rejected: %s", body.request_id, exc)
        raise HTTPException(status_code=409, detail=REQUEST_ID_REUSED) from None
    except SQLAlchemyError as exc:
        logger.error("recording feedback %s failed: %s", body.request_id, exc)
        raise HTTPException(status_code=503, detail=STORE_UNAVAILABLE) from None
    return {
        "feedback_id": recorded.feedback_id,
        "request_id": body.request_id,
        "ticket_id": body.ticket_id,
        "accepted": recorded.accepted,
        "duplicate": recorded.duplicate,
        "recorded_at": recorded.recorded_at.replace(tzinfo=UTC),
    }


@router.get(
    "/v1/feedback/stats",
    response_model=FeedbackStats,
    summary="Acceptance rate of suggestions, overall and per category, for a period.",
)
def feedback_stats(
    request: Request,
    since: Annotated[
        datetime | None,
        Query(
            description="Start of the period (ISO 8601, inclusive); default 30 days "
            "before its end."
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(description="End of the period (ISO 8601, exclusive); default now."),
    ] = None,
    model_name: Annotated[
        str | None, Query(description="Count only this model's suggestions.")
    ] = None,
    model_version: Annotated[
        str | None, Query(description="Count only this model version.")
    ] = None,
) -> Any:
    try:
        until = as_utc(until) if until is not None else utc_now()
    except OverflowError:
        return invalid_request(request_id_of(request), [out_of_range("until")])
    try:
        since = as_utc(since) if since is not None else until - DEFAULT_PERIOD
    except OverflowError:
        return invalid_request(request_id_of(request), [out_of_range("since")])
    if since >= until:
        problem = {
            "field": "since",
            "message": f"since ({since.isoformat()}) must be before until "
            f"({until.isoformat()})",
            "type": "value_error",
        }
        return invalid_request(request_id_of(request), [problem])
    store = request.app.state.feedback.store()
    try:
        counts = store.feedback_stats(since, until, model_name, model_version)
    except SQLAlchemyError as exc:
        logger.error("reading feedback stats failed: %s", exc)
        raise HTTPException(status_code=503, detail=STORE_UNAVAILABLE) from None
    taxonomy = _taxonomy(_loaded_model(request))
    for group in counts["by_category"]:
        category = taxonomy.category(group["category"] or "")
        group["name"] = category.name if category else None
    return {
        "since": since.replace(tzinfo=UTC),
        "until": until.replace(tzinfo=UTC),
        "model_name": model_name,
        "model_version": model_version,
        **counts,
    }


__all__ = [
    "FeedbackRequest",
    "FeedbackService",
    "FeedbackStats",
    "record_scored",
    "router",
]
