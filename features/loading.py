"""Read an export (CSV, Excel, Parquet) and turn it into canonical tickets."""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .mapping import Mapping, MappingError, TargetSpec, fold, load_mapping
from .schema import CANONICAL_FIELDS, SOURCE_LINE

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".xlsx", ".xls", ".parquet")
# Rows per chunk when an export is read in pieces (training and batch scoring).
DEFAULT_CHUNK_ROWS = 100_000


# Cells up to this many characters are read; the csv module's default of 131,072
# would abort the whole file on one long handling note.
CSV_FIELD_LIMIT = 64 * 1024 * 1024


class ExportError(ValueError):
    """An export cannot be read at all: wrong suffix, empty, or not UTF-8."""


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
    raise ExportError(
        f"export {path} has suffix {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _read_csv(path: Path) -> pd.DataFrame:
    return next(_iter_csv(path, chunk_rows=None))


def _iter_csv(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """Yield frames of ``chunk_rows`` records (all records when None).

    The first frame is yielded even when the file has no records, so a caller
    always sees the header.
    """
    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        yield from _iter_csv_records(path, chunk_rows)
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"export {path} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} {exc.reason}); "
            f"save it as UTF-8 (for example `iconv -f GBK -t UTF-8 {path.name}`) and retry"
        ) from None
    except csv.Error as exc:
        raise ExportError(f"export {path} is not valid CSV: {exc}") from None


def _iter_csv_records(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    # Bytes that are not UTF-8 are read as lone surrogates, so that one bad
    # record is rejected with its line number instead of failing the file. A
    # header or first record that is not UTF-8 fails the file, because then
    # the whole file is most likely in another encoding.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ExportError(f"export {path} is empty; expected a header row") from None
        undecoded = _undecoded_byte(header)
        if undecoded is not None:
            raise UnicodeDecodeError("utf-8", bytes([undecoded]), 0, 1, "on line 1")
        rows: list[list[str]] = []
        lines: list[int] = []
        bad: list[tuple[int, str]] = []
        yielded = False
        start = reader.line_num + 1
        for row in reader:
            undecoded = _undecoded_byte(row)
            if undecoded is not None and start == 2:
                raise UnicodeDecodeError("utf-8", bytes([undecoded]), 0, 1, "on line 2")
            if undecoded is not None:
                bad.append((start, f"not UTF-8: byte 0x{undecoded:02x}; save the export as UTF-8"))
            elif len(row) == len(header):
                rows.append(row)
                lines.append(start)
            elif any(cell.strip() for cell in row):
                bad.append((start, f"malformed row: {len(row)} fields, header has {len(header)}"))
            start = reader.line_num + 1
            if chunk_rows is not None and len(rows) >= chunk_rows:
                yield _csv_frame(header, rows, lines, bad)
                rows, lines, bad = [], [], []
                yielded = True
        if rows or bad or not yielded:
            yield _csv_frame(header, rows, lines, bad)


# The lone surrogates that errors="surrogateescape" reads bytes 0x80 to 0xff as.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _undecoded_byte(cells: list[str]) -> int | None:
    """Return the first byte that UTF-8 decoding escaped in ``cells``, or None."""
    for cell in cells:
        match = _ESCAPED_BYTE.search(cell)
        if match is not None:
            return ord(match.group()) - 0xDC00
    return None


def _csv_frame(
    header: list[str], rows: list[list[str]], lines: list[int], bad: list[tuple[int, str]]
) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame[SOURCE_LINE] = np.asarray(lines, dtype=np.int64)
    frame.attrs["malformed"] = [RejectedRow(line, None, reason) for line, reason in bad]
    return frame


def iter_export(path: str | Path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Read an export in frames of ``chunk_rows`` rows, each with ``source_line``.

    Parquet is read batch by batch across row groups and CSV record by record, so
    memory holds one chunk at a time. Line numbers are those :func:`read_export`
    gives. Excel files are read whole and then cut, because openpyxl has no
    streaming reader that pandas uses. A CSV chunk counts well-formed records,
    and its malformed ones are in ``frame.attrs["malformed"]``.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"export {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _iter_csv(path, chunk_rows)
    elif suffix == ".parquet":
        yield from _iter_parquet(path, chunk_rows)
    else:
        frame = read_export(path)
        for begin in range(0, max(len(frame), 1), chunk_rows):
            yield frame.iloc[begin : begin + chunk_rows].reset_index(drop=True)


def _iter_parquet(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    pending: list = []
    pending_rows = 0
    first_line = 1
    # Batches are regrouped so that every chunk but the last has exactly
    # chunk_rows rows whatever the file's row groups are; a rerun then reads the
    # same chunks.
    for batch in source.iter_batches(batch_size=chunk_rows):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending)
            chunk, rest = table.slice(0, chunk_rows), table.slice(chunk_rows)
            yield _parquet_frame(chunk, first_line)
            first_line += chunk_rows
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows or first_line == 1:
        table = pa.Table.from_batches(pending, schema=source.schema_arrow)
        yield _parquet_frame(table, first_line)


def _parquet_frame(table, first_line: int) -> pd.DataFrame:
    frame = table.to_pandas()
    frame[SOURCE_LINE] = np.arange(first_line, first_line + len(frame), dtype=np.int64)
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


# A UTC offset after a clock time ("10:30+08:00", "10:30:00Z"). Times are read
# as the local clock time of registration, as the API reads them, so the offset
# is dropped rather than converted. A file may mix times with and without one.
_UTC_OFFSET = re.compile(
    r"^(.*\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)$",
    re.IGNORECASE,
)
# Times outside this range are read as unknown (pandas stores nanoseconds from
# 1677 to 2262, and no ticket is older than the telephone).
EARLIEST_TIME = pd.Timestamp("1900-01-01")
LATEST_TIME = pd.Timestamp("2200-01-01")


# Handling times above this many hours (about eleven years) are read as unknown.
MAX_HOURS = 100_000.0


def _hours(numbers: pd.Series) -> pd.Series:
    """Keep finite handling times from 0 to :data:`MAX_HOURS`; others become unknown."""
    numbers = numbers.astype("float64")
    return numbers.where((numbers >= 0) & (numbers <= MAX_HOURS))


def _timestamps(series: pd.Series, nulls: frozenset[str]) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        parsed = series.dt.tz_localize(None) if series.dt.tz is not None else series
    else:
        text = _as_text(series, nulls).str.replace(_UTC_OFFSET, r"\1", regex=True)
        parsed = pd.to_datetime(text.where(text != "", None), errors="coerce", format="mixed")
    parsed = parsed.where((parsed >= EARLIEST_TIME) & (parsed < LATEST_TIME))
    return parsed.astype("datetime64[ns]")


def _map_label(values: pd.Series, target: TargetSpec, nulls: frozenset[str]) -> tuple[pd.Series, Counter]:
    """Map raw values to labels; unmapped values become missing and are counted."""
    if target.kind == "regression":
        numbers = pd.to_numeric(_as_text(values, nulls).replace("", None), errors="coerce")
        valid = _hours(numbers) if target.field == "handling_hours" else numbers.astype("float64")
        issues = Counter({"not a number of hours from 0 to 100000": int((valid.isna() & numbers.notna()).sum())})
        return valid, +issues
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
    frame: pd.DataFrame,
    mapping: Mapping,
    source: str = "export",
    strict: bool = False,
    unique_ids: bool = True,
) -> LoadResult:
    """Turn a raw export into canonical tickets; rows that cannot be used are reported.

    With ``unique_ids`` a repeated ticket id rejects every row after the first;
    batch scoring turns it off, because it scores each row on its own.
    """
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
                _hours(
                    pd.to_numeric(
                        _as_text(frame[columns[0]], nulls).replace("", None), errors="coerce"
                    )
                )
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
    out.loc[missing_hours, "handling_hours"] = _hours(
        (out["closed_at"] - out["created_at"]).dt.total_seconds() / 3600.0
    )[missing_hours]
    out[SOURCE_LINE] = frame[SOURCE_LINE].to_numpy()

    keep = np.ones(len(out), dtype=bool)
    reasons = _row_problems(frame, out, mapping, unique_ids)
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


def _row_problems(
    frame: pd.DataFrame, out: pd.DataFrame, mapping: Mapping, unique_ids: bool = True
) -> list[tuple[int, str]]:
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

    if not unique_ids:
        return sorted(problems.items())
    ids = out["ticket_id"]
    duplicated = np.flatnonzero((ids.duplicated(keep="first") & (ids != "")).to_numpy())
    first_line = dict(zip(ids[~ids.duplicated(keep="first")], out[SOURCE_LINE][~ids.duplicated(keep="first")]))
    for pos in duplicated:
        problems.setdefault(
            int(pos),
            f"duplicate ticket id: {ids.iloc[pos]!r} already read at line {first_line[ids.iloc[pos]]}",
        )
    return sorted(problems.items())


def iter_tickets(
    path: str | Path,
    mapping: Mapping | str | Path | None = None,
    strict: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    unique_ids: bool = True,
) -> Iterator[LoadResult]:
    """Read an export through a mapping one chunk at a time (see :func:`iter_export`).

    With ``unique_ids`` a ticket id already read in an earlier chunk rejects the
    row, with the same reason as a repeat inside one chunk, so the chunks
    together reject what :func:`load_tickets` rejects.
    """
    if not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    source = Path(path).name
    first_lines: dict[str, int] = {}
    for frame in iter_export(path, chunk_rows):
        result = apply_mapping(frame, mapping, source=source, strict=strict, unique_ids=unique_ids)
        if unique_ids:
            result = _reject_seen_ids(result, first_lines, source, strict)
        yield result


def _reject_seen_ids(
    result: LoadResult, first_lines: dict[str, int], source: str, strict: bool
) -> LoadResult:
    """Drop tickets whose id an earlier chunk had, then remember this chunk's ids."""
    tickets = result.tickets
    ids = tickets["ticket_id"].to_numpy(dtype=object)
    lines = tickets[SOURCE_LINE].to_numpy()
    seen = np.fromiter((i in first_lines for i in ids), dtype=bool, count=len(ids))
    for position in np.flatnonzero(seen):
        item = RejectedRow(
            int(lines[position]),
            ids[position],
            f"duplicate ticket id: {ids[position]!r} already read at line "
            f"{first_lines[ids[position]]}",
        )
        if strict:
            raise RowError(f"{source} line {item.line}: {item.reason}")
        result.rejected.append(item)
    if seen.any():
        result.tickets = tickets[~seen].reset_index(drop=True)
        result.rejected.sort(key=lambda r: r.line)
    first_lines.update(zip(ids[~seen].tolist(), lines[~seen].tolist()))
    return result


def load_tickets(
    path: str | Path,
    mapping: Mapping | str | Path | None = None,
    strict: bool = False,
    chunk_rows: int | None = None,
) -> LoadResult:
    """Read an export through a mapping (the canonical one by default).

    With ``chunk_rows`` the export is read and mapped in chunks of that many rows
    (:func:`iter_tickets`), so the raw export is never in memory whole.
    """
    if not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    if chunk_rows is None:
        frame = read_export(path)
        result = apply_mapping(frame, mapping, source=Path(path).name, strict=strict)
    else:
        result = _merge_results(list(iter_tickets(path, mapping, strict, chunk_rows)))
    logger.info(
        "read %d rows from %s: %d used, %d rejected",
        result.rows_read,
        path,
        result.rows_used,
        len(result.rejected),
    )
    return result


def _merge_results(parts: list[LoadResult]) -> LoadResult:
    label_issues: dict[str, Counter] = {}
    for part in parts:
        for name, counter in part.label_issues.items():
            label_issues.setdefault(name, Counter()).update(counter)
    tickets = pd.concat([part.tickets for part in parts], ignore_index=True)
    return LoadResult(
        tickets=tickets,
        mapping=parts[0].mapping,
        rows_read=sum(part.rows_read for part in parts),
        rejected=[row for part in parts for row in part.rejected],
        label_issues=label_issues,
    )


__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "ExportError",
    "LoadResult",
    "RejectedRow",
    "RowError",
    "apply_mapping",
    "iter_export",
    "iter_tickets",
    "load_tickets",
    "read_export",
]
