"""Request and response schemas of the scoring API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TicketIn(BaseModel):
    """A ticket as known at intake."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    ticket_id: str | None = Field(None, max_length=200, description="Caller's ticket id.")
    created_at: datetime | None = Field(None, description="Registration time (ISO 8601).")
    title: str = Field("", max_length=1000)
    description: str = Field("", description="Symptom description, the intake text.")
    department: str | None = Field(None, max_length=200)
    channel: str | None = Field(None, max_length=200)
    system: str | None = Field(None, max_length=200, description="Affected system.")
    extra: dict[str, str | None] = Field(
        default_factory=dict,
        description="Organisation-specific metadata named by the mapping, e.g. deployment.",
    )

    def as_record(self) -> dict[str, Any]:
        record = self.model_dump(exclude={"extra"})
        record.update(self.extra)
        return record


class ScoreRequest(TicketIn):
    include: list[Literal["similar", "reasons"]] = Field(default_factory=list)


class Label(BaseModel):
    code: str
    name: str
    probability: float


class RootCause(Label):
    measures: list[str] = Field(default_factory=list)


class Escalation(BaseModel):
    probability: float
    threshold: float
    flag: bool


class ModelRef(BaseModel):
    name: str
    version: str | None = None
    alias: str | None = None
    trained_at: str | None = None


class ScoreResponse(BaseModel):
    request_id: str
    ticket_id: str | None = None
    category: Label | None = None
    alternatives: list[Label] = Field(default_factory=list)
    root_causes: list[RootCause] = Field(default_factory=list)
    escalation: Escalation | None = None
    needs_review: bool
    targets: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Every target the model declares."
    )
    model: ModelRef


class ErrorResponse(BaseModel):
    detail: Any
