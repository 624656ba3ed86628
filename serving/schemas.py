"""Request and response schemas of the scoring API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SkipValidation,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from features.schema import CANONICAL_FIELDS

from .errors import MAX_ERROR_ENTRIES, TOO_MANY_ERRORS


def reject_lone_surrogates(value: Any) -> Any:
    """Raise a validation error for text with a lone UTF-16 surrogate (``"\\ud800"``).

    JSON escapes can encode such code points, but they are not Unicode text: they
    cannot be encoded as UTF-8 for the tokenizer, the ONNX graphs or the response.
    """
    if not isinstance(value, str):
        return value  # the str validation that follows reports the wrong type
    for index, char in enumerate(value):
        if "\ud800" <= char <= "\udfff":
            raise PydanticCustomError(
                "string_surrogate",
                "text contains the lone surrogate U+{code} at character {index}; "
                "send valid Unicode text",
                {"code": f"{ord(char):04X}", "index": index},
            )
    return value


# Unicode text without lone surrogates; every string field of a request uses it.
# The check runs before pydantic's own, which would reject the text with a vaguer
# message when the field has a length constraint.
Text = Annotated[str, BeforeValidator(reject_lone_surrogates)]
ExtraName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
]


class TicketIn(BaseModel):
    """A ticket as known at intake. Only ``description`` (or ``title``) is required."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    ticket_id: Text | None = Field(
        None, max_length=200, description="Caller's ticket id."
    )
    created_at: datetime | None = Field(
        None,
        description="Registration time (ISO 8601); drives the time-of-month "
        "features.",
    )
    title: Text = Field("", max_length=1000)
    description: Text = Field(
        "",
        validate_default=True,
        description="Symptom description, the intake text. The service caps its length "
        "(TRIAGE_MAX_DESCRIPTION_CHARS, 5,000 characters by default).",
    )
    department: Text | None = Field(None, max_length=200)
    channel: Text | None = Field(None, max_length=200, description="Intake channel.")
    system: Text | None = Field(None, max_length=200, description="Affected system.")
    extra: dict[ExtraName, Annotated[Text, Field(max_length=200)] | None] = Field(
        default_factory=dict,
        max_length=50,
        description="Organisation-specific metadata named by the mapping, e.g. "
        "deployment. Values the model has not seen are scored like missing ones.",
    )

    @field_validator("description")
    @classmethod
    def _require_text(cls, value: str, info: ValidationInfo) -> str:
        # title is declared before description, so it is validated by now.
        if not value.strip() and not str(info.data.get("title") or "").strip():
            raise PydanticCustomError(
                "ticket_text_missing",
                "description and title are both empty; a ticket needs a description "
                "of the symptom",
            )
        return value

    @field_validator("extra")
    @classmethod
    def _reject_canonical_names(
        cls, value: dict[str, str | None]
    ) -> dict[str, str | None]:
        clashes = sorted(set(value) & set(CANONICAL_FIELDS))
        if clashes:
            raise PydanticCustomError(
                "extra_field_clash",
                "extra names canonical fields ({fields}); send them as top-level "
                "fields",
                {"fields": ", ".join(clashes)},
            )
        return value

    def as_record(self) -> dict[str, Any]:
        record = self.model_dump(exclude={"extra", "include"})
        record.update(self.extra)
        return record


IncludePart = Literal["similar", "reasons"]


class ScoreRequest(TicketIn):
    include: list[IncludePart] = Field(
        default_factory=list, description="Optional parts to add to the answer."
    )


class BatchRequest(BaseModel):
    """Up to ``TRIAGE_MAX_BATCH`` tickets (1,000 by default), scored in input order."""

    model_config = ConfigDict(extra="forbid")

    # Items are validated one by one in the route, so that an invalid ticket gets
    # its own error entry and the others are still scored.
    tickets: list[SkipValidation[TicketIn]] = Field(min_length=1)
    include: list[IncludePart] = Field(
        default_factory=list, description="Optional parts to add to every answer."
    )


class Label(BaseModel):
    code: str
    name: str
    probability: float


class SimilarTicket(BaseModel):
    """A closed ticket similar to the scored one."""

    ticket_id: str
    similarity: float = Field(description="Cosine similarity of the two tickets, 0 to 1.")
    description: str = Field("", description="Start of its title and description.")
    root_cause: str | None = Field(None, description="Root cause recorded at closure.")
    category: str | None = None
    notes: str = Field("", description="Start of the closure notes.")
    handling_hours: float | None = None
    created_at: str | None = None
    closed_at: str | None = None
    system: str | None = None


class Recurrence(BaseModel):
    """The recent closed ticket on the same system that this ticket repeats."""

    ticket_id: str
    similarity: float
    closed_at: str | None = None
    days_since_closed: float = Field(
        description="Days from its closing to this ticket's creation; negative while "
        "it was still open."
    )


class WordReason(BaseModel):
    token: str
    weight: float = Field(description="Drop in the top class's probability without the word.")


class MetadataReason(BaseModel):
    field: str
    value: str
    weight: float = Field(description="Drop in the top class's probability without the value.")


class Reasons(BaseModel):
    """The inputs that moved the top category most; positive weights pushed towards it."""

    target: str
    code: str
    probability: float
    words: list[WordReason] = Field(default_factory=list)
    metadata: list[MetadataReason] = Field(default_factory=list)


class RootCause(Label):
    measures: list[str] = Field(
        default_factory=list, description="Recommended measures."
    )
    score: float | None = Field(
        None, description="Combined score of the model and similar tickets (with similar)."
    )
    neighbour_support: float | None = Field(
        None, description="Summed similarity of the similar tickets with this cause, "
        "over their count (0 to 1)."
    )
    evidence: list[SimilarTicket] = Field(
        default_factory=list, description="Similar closed tickets with this cause."
    )


class Escalation(BaseModel):
    probability: float
    threshold: float
    flag: bool = Field(description="Whether the probability reaches the threshold.")


class ModelRef(BaseModel):
    """The model that scored a ticket."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str | None = None
    alias: str | None = None
    trained_at: str | None = None


class ScoreResponse(BaseModel):
    request_id: str
    ticket_id: str | None = None
    category: Label | None = None
    alternatives: list[Label] = Field(
        default_factory=list, description="The other categories, most probable first."
    )
    root_causes: list[RootCause] = Field(
        default_factory=list, description="The three most probable root causes."
    )
    escalation: Escalation | None = None
    needs_review: bool = Field(
        description="The category's probability is below its review threshold."
    )
    targets: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Every target the model declares."
    )
    similar: list[SimilarTicket] | None = Field(
        None, description="Most similar closed tickets (include similar)."
    )
    possible_recurrence: Recurrence | None = Field(
        None, description="Set when the ticket repeats a recent one (include similar)."
    )
    reasons: Reasons | None = Field(None, description="Reasons (include reasons).")
    model: ModelRef


class FieldError(BaseModel):
    field: str = Field(
        description="Dotted path of the field, e.g. tickets.3.description."
    )
    message: str
    type: str | None = None


class ErrorResponse(BaseModel):
    detail: str
    request_id: str | None = None
    errors: list[FieldError] | None = Field(
        None,
        description=f"On 422, one entry per invalid field. At most {MAX_ERROR_ENTRIES} "
        f"entries are listed. When there are more, one last entry of type "
        f"{TOO_MANY_ERRORS} gives their count.",
    )


class BatchItem(BaseModel):
    """The answer for one ticket of a batch: scored, or invalid with its errors."""

    index: int = Field(description="Position of the ticket in the request.")
    status: Literal["scored", "invalid"]
    answer: ScoreResponse | None = None
    errors: list[FieldError] | None = None


class BatchResponse(BaseModel):
    request_id: str
    model: ModelRef
    scored: int
    invalid: int
    items: list[BatchItem]


class TargetInfo(BaseModel):
    """One target of the model as its manifest declares it."""

    model_config = ConfigDict(extra="allow")

    name: str
    kind: str
    field: str
    mode: str = "intake"
    labels: list[Any] = Field(default_factory=list)
    threshold: float | None = None
    class_thresholds: dict[str, float] = Field(default_factory=dict)
    temperature: float = 1.0


class FeatureFields(BaseModel):
    text_fields: list[str]
    categorical: list[str]
    numeric: list[str]
    mode: str = "intake"


class CheckReport(BaseModel):
    """The latest check for a new model."""

    outcome: Literal["loaded", "unchanged", "rejected", "failed"]
    checked_at: float
    version: str | None = None
    error: str | None = None


class ModelInfo(ModelRef):
    source: str
    run_id: str | None = None
    loaded_at: float
    labels: dict[str, list[Any]] = Field(description="Labels per classifier target.")
    thresholds: dict[str, float | None] = Field(
        description="Decision threshold per target."
    )
    targets: list[TargetInfo]
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Evaluation metrics per target."
    )
    feature_fields: FeatureFields
    known_values: dict[str, list[str]] = Field(default_factory=dict)
    last_check: CheckReport | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    model: ModelRef | None = None
    self_test: Literal["passed"] | None = None
    auth: Literal["api_keys", "open"]
    last_check: CheckReport | None = None


class ReloadResponse(BaseModel):
    outcome: Literal["loaded", "unchanged", "rejected", "failed"]
    detail: str
    model: ModelRef | None = Field(
        None, description="The model serving after the check."
    )
    previous: ModelRef | None = Field(
        None, description="The model it replaced, if any."
    )
    error: str | None = None
