"""Model inputs derived from canonical tickets, identical for training and serving.

This module needs neither scikit-learn nor LightGBM, so the serving path can
import it. :func:`feature_frame` builds the inputs for a table of tickets during
training; :func:`ticket_feeds` builds the same values as the ONNX feeds for
tickets arriving one by one or in batches at serving time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping as MappingType
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .mapping import fold
from .text import token_string

TOKENS = "tokens"
MISSING = "<missing>"
TIME_FEATURES = ("hour", "weekday", "month_period")
MONTH_PERIODS = ("月初", "月中", "月末")


@dataclass(frozen=True)
class FeatureSpec:
    """Which ticket fields feed a model: text, categorical metadata and time features."""

    text_fields: tuple[str, ...] = ("title", "description")
    categorical: tuple[str, ...] = ("department", "channel", "system")
    numeric: tuple[str, ...] = TIME_FEATURES
    mode: str = "intake"

    @property
    def input_names(self) -> list[str]:
        return [TOKENS, *self.categorical, *self.numeric]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: MappingType[str, Any]) -> "FeatureSpec":
        return cls(
            text_fields=tuple(data["text_fields"]),
            categorical=tuple(data["categorical"]),
            numeric=tuple(data["numeric"]),
            mode=data.get("mode", "intake"),
        )


def month_period(day: int) -> int:
    """Return 0 for days 1-10 (月初), 1 for 11-20 (月中), 2 for 21 to the end (月末)."""
    return 0 if day <= 10 else 1 if day <= 20 else 2


def categorical_value(value: Any) -> str:
    """Normalise a metadata value; empty values become the ``<missing>`` category."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return MISSING
    text = fold(str(value))
    return text if text else MISSING


def time_values(created_at: datetime | None) -> tuple[float, float, float]:
    """Hour, weekday (Monday 0) and period of the month; -1 for each when unknown."""
    if created_at is None or created_at != created_at:  # None or NaT
        return (-1.0, -1.0, -1.0)
    return (
        float(created_at.hour),
        float(created_at.weekday()),
        float(month_period(created_at.day)),
    )


def ticket_text(ticket: MappingType[str, Any], spec: FeatureSpec) -> str:
    parts = [ticket.get(name) for name in spec.text_fields]
    return "\n".join(str(p) for p in parts if p is not None and p == p and str(p))


def ticket_feeds(
    tickets: Iterable[MappingType[str, Any]], spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """Build ONNX feeds (one ``[n, 1]`` array per input) for a list of tickets."""
    tickets = list(tickets)
    feeds: dict[str, np.ndarray] = {
        TOKENS: np.array(
            [[token_string(ticket_text(t, spec))] for t in tickets], dtype=object
        ).reshape(-1, 1)
    }
    for name in spec.categorical:
        feeds[name] = np.array(
            [[categorical_value(t.get(name))] for t in tickets], dtype=object
        ).reshape(-1, 1)
    times = np.array(
        [time_values(t.get("created_at")) for t in tickets], dtype=np.float32
    ).reshape(-1, len(TIME_FEATURES))
    for index, name in enumerate(TIME_FEATURES):
        if name in spec.numeric:
            feeds[name] = times[:, index : index + 1].copy()
    return feeds


def feature_frame(tickets, spec: FeatureSpec, tokens=None):
    """Build the model input table for a DataFrame of canonical tickets.

    ``tokens`` may hold precomputed token strings (one per row), for example
    from a process pool; otherwise they are computed here.
    """
    import pandas as pd

    frame = pd.DataFrame(index=tickets.index)
    if tokens is None:
        texts = [ticket_text(row, spec) for row in tickets[list(spec.text_fields)].to_dict("records")]
        tokens = [token_string(t) for t in texts]
    frame[TOKENS] = np.asarray(tokens, dtype=object)
    for name in spec.categorical:
        frame[name] = [categorical_value(v) for v in tickets[name].tolist()]
    created = pd.to_datetime(tickets["created_at"])
    known = created.notna()
    values = {
        "hour": created.dt.hour,
        "weekday": created.dt.weekday,
        "month_period": created.dt.day.map(lambda d: month_period(int(d)) if d == d else -1),
    }
    for name in spec.numeric:
        frame[name] = values[name].where(known, -1).astype(np.float32)
    return frame


def frame_feeds(frame) -> dict[str, np.ndarray]:
    """Turn a :func:`feature_frame` table into ONNX feeds."""
    feeds = {}
    for column in frame.columns:
        values = frame[column].to_numpy()
        if values.dtype == object:
            feeds[column] = values.reshape(-1, 1)
        else:
            feeds[column] = values.astype(np.float32).reshape(-1, 1)
    return feeds


__all__ = [
    "MISSING",
    "MONTH_PERIODS",
    "TIME_FEATURES",
    "TOKENS",
    "FeatureSpec",
    "categorical_value",
    "feature_frame",
    "frame_feeds",
    "month_period",
    "ticket_feeds",
    "ticket_text",
    "time_values",
]
