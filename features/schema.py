"""Canonical ticket schema shared by loading, training, serving and reports."""

from __future__ import annotations

INTAKE_FIELDS = (
    "ticket_id",
    "created_at",
    "title",
    "description",
    "department",
    "channel",
    "system",
)
LABEL_FIELDS = ("category", "root_cause", "escalated")
CLOSURE_FIELDS = ("closed_at", "handling_hours", "closure_notes")
CANONICAL_FIELDS = INTAKE_FIELDS + LABEL_FIELDS + CLOSURE_FIELDS

TEXT_FIELDS = ("title", "description")
METADATA_FIELDS = ("department", "channel", "system")
TIMESTAMP_FIELDS = ("created_at", "closed_at")

# Column added by the loader: the line (CSV) or row (Excel, Parquet) a ticket came
# from, so that problems can be reported against the source file.
SOURCE_LINE = "source_line"

__all__ = [
    "CANONICAL_FIELDS",
    "CLOSURE_FIELDS",
    "INTAKE_FIELDS",
    "LABEL_FIELDS",
    "METADATA_FIELDS",
    "SOURCE_LINE",
    "TEXT_FIELDS",
    "TIMESTAMP_FIELDS",
]
