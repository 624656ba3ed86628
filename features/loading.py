"""Read an export (CSV, Excel, Parquet) and turn it into canonical tickets."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .mapping import Mapping, MappingError, TargetSpec, fold, load_mapping
from .schema import CANONICAL_FIELDS, SOURCE_LINE

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".xlsx", ".xls", ".parquet")


class RowError(ValueError):
    """A row cannot be used; raised at the first such row in strict mode."""


@dataclass(frozen=True)
class RejectedRow:
    line: int
    ticket_id: str | None
    reason: str


@dataclass
class LoadResult:
    """Canonical tickets plus an account of the rows that could not be used."""

    tickets: pd.DataFrame
    mapping: Mapping
    rows_read: int
    rejected: list[RejectedRow] = field(default_factory=list)
    label_issues: dict[str, Counter] = field(default_factory=dict)

    @property
    def rows_used(self) -> int:
        return len(self.tickets)

    def rejected_reasons(self) -> Counter:
        return Counter(r.reason.split(":")[0] for r in self.rejected)


def read_export(path: str | Path) -> pd.DataFrame:
    """Read an export as it is, with a ``source_line`` column for error reports.

    CSV cells stay strings; the line is where the record starts, counting the
    header as line 1, so records with quoted line breaks are located correctly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"export {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".xlsx", ".xls"):
        frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        frame.columns = [str(c).strip() for c in frame.columns]
        frame[SOURCE_LINE] = np.arange(2, len(frame) + 2)
        return frame
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
        frame[SOURCE_LINE] = np.arange(1, len(frame) + 1)
        return frame
    raise ValueError(
        f"export {path} has suffix {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _read_csv(path: Path) -> pd.DataFrame:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"export {path} is empty; expected a header row") from None
        rows: list[list[str]] = []
        lines: list[int] = []
        bad: list[tuple[int, int]] = []
        start = reader.line_num + 1
        for row in reader:
            if len(row) == len(header):
                rows.append(row)
                lines.append(start)
            elif any(cell.strip() for cell in row):
                bad.append((start, len(row)))
            start = reader.line_num + 1
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame[SOURCE_LINE] = np.asarray(lines, dtype=np.int64)
    frame.attrs["malformed"] = [
        RejectedRow(line, None, f"malformed row: {n} fields, header has {len(header)}")
        for line, n in bad
    ]
    return frame


def _check_columns(frame: pd.DataFrame, mapping: Mapping, source: str) -> None:
    found = [c for c in frame.columns if c != SOURCE_LINE]
    for name, columns in mapping.fields.items():
        for column in columns:
            if column not in frame.columns:
                raise MappingError(
                    f"column `{column}` (field {name}) is missing from {source}; "
                    f"columns found: {', '.join(found)}"
                )
    for name, column in mapping.extra.items():
        if column not in frame.columns:
            raise MappingError(
                f"column `{column}` (extra feature {name}) is missing from {source}; "
                f"columns found: {', '.join(found)}"
            )
    for target in mapping.targets.values():
        if target.column not in frame.columns:
            raise MappingError(
                f"column `{target.column}` (target {target.name}) is missing from "
                f"{source}; columns found: {', '.join(found)}"
            )


def _as_text(series: pd.Series, nulls: frozenset[str]) -> pd.Series:
    """Strings with nulls as empty strings; the export's null markers count as empty."""
    text = series.astype("string").fillna("").str.strip()
    return text.where(~text.isin(nulls), "")


def _join_columns(frame: pd.DataFrame, columns: list[str], nulls: frozenset[str]) -> pd.Series:
    parts = [_as_text(frame[c], nulls) for c in columns]
    if not parts:
        return pd.Series([""] * len(frame), index=frame.index, dtype="string")
    joined = parts[0]
    for part in parts[1:]:
        joined = (joined + "\n" + part).str.strip("\n")
    return joined


def _timestamps(series: pd.Series, nulls: frozenset[str]) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.tz_localize(None) if series.dt.tz is not None else series
    text = _as_text(series, nulls)
    return pd.to_datetime(text.where(text != "", None), errors="coerce", format="mixed")


def _map_label(values: pd.Series, target: TargetSpec, nulls: frozenset[str]) -> tuple[pd.Series, Counter]:
    """Map raw values to labels; unmapped values become missing and are counted."""
    if target.kind == "regression":
        numbers = pd.to_numeric(_as_text(values, nulls).replace("", None), errors="coerce")
        return numbers.astype("float64"), Counter()
    text = _as_text(values, nulls)
    folded = text.map(fold)
    if target.ignore:
        folded = folded.where(~folded.isin(target.ignore), "")
        text = text.where(folded != "", "")
    issues: Counter = Counter()
    if target.values is None:
        labels = folded.astype(object).where(folded != "", None)
    else:
        mapped = folded.map(lambda v: target.values.get(v, None) if v else None)
        unmapped = (folded != "") & mapped.isna()
        issues.update(text[unmapped].tolist())
        labels = mapped.astype(object)
    if target.empty is not None:
        labels = labels.where(folded != "", target.empty)
    if target.kind == "binary":
        labels = labels.map(lambda v: None if v is None or pd.isna(v) else bool(v))
    return labels, issues


def apply_mapping(
    frame: pd.DataFrame, mapping: Mapping, source: str = "export", strict: bool = False
) -> LoadResult:
    """Turn a raw export into canonical tickets; rows that cannot be used are reported."""
    _check_columns(frame, mapping, source)
    nulls = mapping.null_values
    rejected: list[RejectedRow] = list(frame.attrs.get("malformed", []))
    if strict and rejected:
        raise RowError(f"{source} line {rejected[0].line}: {rejected[0].reason}")

    out = pd.DataFrame(index=frame.index)
    for name in CANONICAL_FIELDS:
        columns = mapping.fields.get(name, [])
        if name in ("created_at", "closed_at"):
            out[name] = (
                _timestamps(frame[columns[0]], nulls) if columns else pd.NaT
            )
        elif name == "handling_hours":
            out[name] = (
                pd.to_numeric(
                    _as_text(frame[columns[0]], nulls).replace("", None), errors="coerce"
                ).astype("float64")
                if columns
                else np.nan
            )
        elif name in ("category", "root_cause", "escalated"):
            out[name] = None
        else:
            out[name] = _join_columns(frame, columns, nulls).astype(object)
    for name, column in mapping.extra.items():
        out[name] = _as_text(frame[column], nulls).astype(object)

    label_issues: dict[str, Counter] = {}
    for target in mapping.targets.values():
        out[target.field], label_issues[target.name] = _map_label(
            frame[target.column], target, nulls
        )

    missing_hours = out["handling_hours"].isna() & out["closed_at"].notna()
    out.loc[missing_hours, "handling_hours"] = (
        (out["closed_at"] - out["created_at"]).dt.total_seconds() / 3600.0
    )[missing_hours]
    out[SOURCE_LINE] = frame[SOURCE_LINE].to_numpy()

    keep = np.ones(len(out), dtype=bool)
    reasons = _row_problems(frame, out, mapping)
    for position, reason in reasons:
        row = out.iloc[position]
        item = RejectedRow(int(row[SOURCE_LINE]), row["ticket_id"] or None, reason)
        if strict:
            raise RowError(f"{source} line {item.line}: {item.reason}")
        rejected.append(item)
        keep[position] = False

    tickets = out[keep].reset_index(drop=True)
    for target, counter in label_issues.items():
        if counter:
            logger.warning(
                "target %s: %d values not in the mapping, left unlabelled: %s",
                target,
                sum(counter.values()),
                ", ".join(f"{k} ({v})" for k, v in counter.most_common(5)),
            )
    rejected.sort(key=lambda r: r.line)
    return LoadResult(
        tickets=tickets,
        mapping=mapping,
        rows_read=len(frame) + len(frame.attrs.get("malformed", [])),
        rejected=rejected,
        label_issues=label_issues,
    )


def _row_problems(frame: pd.DataFrame, out: pd.DataFrame, mapping: Mapping) -> list[tuple[int, str]]:
    """Return (position, reason) for each row that cannot be used, first reason only."""
    problems: dict[int, str] = {}
    id_column = mapping.fields["ticket_id"][0]
    created_column = mapping.fields["created_at"][0]

    no_id = np.flatnonzero((out["ticket_id"] == "").to_numpy())
    for pos in no_id:
        problems.setdefault(int(pos), f"missing ticket id: column `{id_column}` is empty")

    bad_time = np.flatnonzero(out["created_at"].isna().to_numpy())
    raw_created = _as_text(frame[created_column], mapping.null_values) if not pd.api.types.is_datetime64_any_dtype(frame[created_column]) else None
    for pos in bad_time:
        raw = raw_created.iloc[pos] if raw_created is not None else ""
        reason = (
            f"invalid created_at: column `{created_column}` value {raw!r} is not a date and time"
            if raw
            else f"missing created_at: column `{created_column}` is empty"
        )
        problems.setdefault(int(pos), reason)

    ids = out["ticket_id"]
    duplicated = np.flatnonzero((ids.duplicated(keep="first") & (ids != "")).to_numpy())
    first_line = dict(zip(ids[~ids.duplicated(keep="first")], out[SOURCE_LINE][~ids.duplicated(keep="first")]))
    for pos in duplicated:
        problems.setdefault(
            int(pos),
            f"duplicate ticket id: {ids.iloc[pos]!r} already read at line {first_line[ids.iloc[pos]]}",
        )
    return sorted(problems.items())


def load_tickets(
    path: str | Path, mapping: Mapping | str | Path | None = None, strict: bool = False
) -> LoadResult:
    """Read an export through a mapping (the canonical one by default)."""
    if not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    frame = read_export(path)
    result = apply_mapping(frame, mapping, source=Path(path).name, strict=strict)
    logger.info(
        "read %d rows from %s: %d used, %d rejected",
        result.rows_read,
        path,
        result.rows_used,
        len(result.rejected),
    )
    return result


__all__ = [
    "LoadResult",
    "RejectedRow",
    "RowError",
    "apply_mapping",
    "load_tickets",
    "read_export",
]
