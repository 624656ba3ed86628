"""The monthly abnormal-closure analysis report, as HTML, Markdown and CSV tables.

:func:`build_report` selects the tickets of a period, computes each section's
numbers (:mod:`training.report_sections`), words them in Chinese
(:mod:`training.report_content`) and writes the files
(:mod:`training.report_render`). Predictions are optional: sections that need
them state which model output is missing.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from features.inputs import month_period
from features.loading import LoadResult
from features.mapping import Mapping, TargetSpec, fold
from features.taxonomy import Taxonomy, load_taxonomy

from . import report_content as content
from . import report_sections as sections
from .report_charts import find_cjk_font
from .report_render import (
    Section,
    number_captions,
    render_html,
    render_markdown,
    write_figures,
    write_tables,
)

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("category", "root_cause", "category_probability")
RECURRENCE_WINDOW_DAYS = 30
REPORT_TITLE = "工单异常结案分析报告"
_MONTH = r"\d{4}-(?:0[1-9]|1[0-2])"
_PERIOD = re.compile(
    rf"^(?P<start>{_MONTH}|\d{{4}})(?:\.\.(?P<end>{_MONTH}|\d{{4}}))?$"
)


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the files one report run writes."""

    html: Path
    markdown: Path
    tables: tuple[Path, ...]
    figures: tuple[Path, ...]


def parse_period(text: str | None) -> tuple[pd.Period, pd.Period] | None:
    """Parse a reporting period into its first and last month, both included.

    Accepted forms are ``YYYY-MM`` (one month), ``YYYY`` (a year) and
    ``START..END`` with either form at both ends, such as ``2017-01..2017-06``.
    None or an empty string means every month in the data.

    Raises
    ------
    ValueError
        If the text has none of these forms or the range ends before it starts.
    """
    if text is None or not text.strip():
        return None
    match = _PERIOD.match(text.strip())
    if match is None:
        raise ValueError(
            f"period {text!r} is invalid; expected YYYY-MM, YYYY or START..END, "
            "for example 2017-03 or 2017-01..2017-12"
        )
    start_text, end_text = match["start"], match["end"] or match["start"]
    start = pd.Period(start_text if "-" in start_text else f"{start_text}-01", freq="M")
    end = pd.Period(end_text if "-" in end_text else f"{end_text}-12", freq="M")
    if end < start:
        raise ValueError(
            f"period {text!r} ends before it starts; write the earlier month first"
        )
    return start, end


def period_label(
    bounds: tuple[pd.Period, pd.Period] | None, tickets: pd.DataFrame
) -> str:
    if bounds is None:
        if tickets.empty:
            return "全部数据"
        months = tickets["created_at"].dt.to_period("M")
        bounds, whole = (months.min(), months.max()), "（全部数据）"
    else:
        whole = ""
    start, end = bounds
    first = content.month_label(start)
    return (first if start == end else f"{first}至{content.month_label(end)}") + whole


def align_predictions(
    predictions: pd.DataFrame | None, tickets: pd.DataFrame
) -> pd.DataFrame | None:
    """Reindex predictions (indexed by ticket id) onto the tickets' row index.

    Raises
    ------
    ValueError
        If a required prediction column is missing.
    """
    if predictions is None:
        return None
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        found = ", ".join(map(str, predictions.columns))
        raise ValueError(
            f"predictions lack columns {', '.join(missing)}; expected a DataFrame "
            f"indexed by ticket_id with columns {', '.join(PREDICTION_COLUMNS)} "
            "(optionally closure_category, closure_probability), "
            f"got columns {found}"
        )
    keyed = predictions.copy()
    keyed.index = keyed.index.astype(str)
    keyed = keyed[~keyed.index.duplicated(keep="first")]
    aligned = keyed.reindex(tickets["ticket_id"].astype(str).to_numpy())
    aligned.index = tickets.index
    matched = int(aligned["category"].notna().sum())
    if len(tickets) and matched == 0:
        logger.warning(
            "no prediction matches a ticket id of the report; "
            "predictions are indexed by %s",
            ", ".join(map(str, predictions.index[:3])),
        )
    return aligned


def _with_calendar(tickets: pd.DataFrame) -> pd.DataFrame:
    tickets = tickets.copy()
    tickets["month_period"] = tickets["created_at"].dt.day.map(month_period).astype(int)
    tickets["month"] = tickets["created_at"].dt.to_period("M")
    return tickets


def time_limits(
    mapping: Mapping, tickets: pd.DataFrame
) -> tuple[pd.Series | None, sections.TimeLimitRule | None]:
    """Return each ticket's handling time limit in hours and the rule that set it.

    A target's ``limit_hours`` applies to every ticket. Its ``limits`` with
    ``limit_by`` give hours per value of another target, and a ticket whose
    value has no entry gets NaN. Returns (None, None) when no target sets limits.
    """
    # NOTE: only the first target that sets limits is read, because a mapping
    # is expected to time-limit one field (handling hours).
    for target in mapping.targets.values():
        if target.limit_hours is not None:
            limits = pd.Series(target.limit_hours, index=tickets.index, dtype="float64")
            return limits, sections.TimeLimitRule(fixed_hours=target.limit_hours)
        if target.limits:
            by = mapping.targets[target.limit_by]
            values = tickets[by.field].astype("string").fillna("").map(fold)
            limits = values.map(target.limits).astype("float64")
            rule = sections.TimeLimitRule(
                by_column=by.column, hours_by_value=target.limits
            )
            return limits, rule
    return None, None


def _target_for(mapping: Mapping, field: str) -> TargetSpec | None:
    return next((t for t in mapping.targets.values() if t.field == field), None)


def select_period(
    tickets: pd.DataFrame, bounds: tuple[pd.Period, pd.Period] | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.PeriodIndex | None]:
    """Return the period's tickets, the abnormal tickets just before it and its months.

    The tickets before the period are those created up to the recurrence window
    ahead of its first month, so a repeat early in the period finds its first ticket.
    """
    if bounds is None:
        months = None
        if len(tickets):
            months = pd.period_range(
                tickets["month"].min(), tickets["month"].max(), freq="M"
            )
        return tickets, tickets.iloc[0:0], months
    start, end = bounds
    in_period = tickets[(tickets["month"] >= start) & (tickets["month"] <= end)]
    window_start = start.start_time - pd.Timedelta(days=RECURRENCE_WINDOW_DAYS)
    before = (tickets["created_at"] >= window_start) & (tickets["month"] < start)
    lookback = tickets[before & tickets["category"].notna()]
    return in_period, lookback, pd.period_range(start, end, freq="M")


def prepare_data(
    result: LoadResult,
    period: str | None = None,
    predictions: pd.DataFrame | None = None,
    taxonomy: Taxonomy | None = None,
    source_name: str | None = None,
) -> sections.ReportData:
    """Select the tickets of a period and gather what every section needs."""
    taxonomy = taxonomy or load_taxonomy()
    bounds = parse_period(period)
    everything = _with_calendar(result.tickets)
    in_period, lookback, months = select_period(everything, bounds)
    abnormal = in_period[in_period["category"].notna()]

    category = _target_for(result.mapping, "category")
    escalation = _target_for(result.mapping, "escalated")
    empty = (
        category.empty if category is not None and category.empty is not None else ""
    )
    limits, rule = time_limits(result.mapping, abnormal)
    created = everything["created_at"]
    return sections.ReportData(
        tickets=abnormal,
        all_tickets=in_period,
        taxonomy=taxonomy,
        period_label=period_label(bounds, everything),
        source_name=source_name or f"按映射 {result.mapping.name} 读取的导出文件",
        rows_read=result.rows_read,
        rows_rejected=len(result.rejected),
        data_start=created.min() if len(created) else None,
        data_end=created.max() if len(created) else None,
        has_durations=bool(everything["handling_hours"].notna().any()),
        time_limits=limits,
        limit_rule=rule,
        category_column=category.column if category is not None else "",
        category_empty_label=sections.category_name(taxonomy, empty) if empty else "",
        escalation_column=escalation.column if escalation is not None else "",
        predictions=align_predictions(predictions, abnormal),
        lookback=lookback,
        months=months,
    )


def _section_steps(
    data: sections.ReportData,
) -> list[tuple[str, Callable[[], Section]]]:
    # The measures step ranks the causes counted by the causes step.
    causes: list[sections.Causes] = []

    def causes_step() -> Section:
        causes.append(sections.compute_causes(data))
        return content.causes_section(data, causes[0])

    return [
        ("scope", lambda: content.scope_section(data)),
        (
            "overview",
            lambda: content.overview_section(data, sections.compute_overview(data)),
        ),
        (
            "handling",
            lambda: content.handling_section(
                data, sections.compute_handling_time(data)
            ),
        ),
        ("causes", causes_step),
        (
            "process",
            lambda: content.process_section(data, sections.compute_process(data)),
        ),
        (
            "quality",
            lambda: content.quality_section(
                data, sections.compute_quality(data, window_days=RECURRENCE_WINDOW_DAYS)
            ),
        ),
        (
            "measures",
            lambda: content.measures_section(
                data, sections.compute_measures(data, causes[0])
            ),
        ),
    ]


def build_report(
    result: LoadResult,
    out: Path,
    period: str | None = None,
    predictions: pd.DataFrame | None = None,
    progress: bool = True,
    *,
    source_name: str | None = None,
) -> ReportFiles:
    """Write the abnormal-closure analysis report of the tickets in ``result``.

    Parameters
    ----------
    result
        Canonical tickets from :func:`features.loading.load_tickets`.
    out
        Path of the HTML file. ``<stem>.md``, ``<stem>_tables/*.csv`` and
        ``<stem>_figures/*.png`` are written beside it.
    period
        Months to report on by creation time: ``YYYY-MM``, ``YYYY`` or
        ``START..END``; all months when None.
    predictions
        Model output indexed by ticket id with columns ``category``,
        ``root_cause`` and ``category_probability``, and optionally
        ``closure_category`` and ``closure_probability``. Without it the
        sections that need predictions state which model output is missing.
    progress
        Show a progress bar over the sections on standard error.
    source_name
        Name of the export shown in the report, such as its file name.

    Returns
    -------
    ReportFiles
        The paths written.

    Raises
    ------
    training.report_charts.MissingFontError
        If no installed font covers Chinese.
    ValueError
        If the period is invalid or predictions lack a required column.
    """
    started = time.perf_counter()
    out = Path(out)
    find_cjk_font()
    data = prepare_data(result, period, predictions, source_name=source_name)
    steps = _section_steps(data)
    built = []
    with tqdm(
        steps, desc="report", unit="section", file=sys.stderr, disable=not progress
    ) as bar:
        for name, step in bar:
            bar.set_postfix_str(name)
            built.append(step())
    files = write_report(built, out, data)
    logger.info(
        "wrote report %s: %d abnormal tickets in %s, %d tables, %d figures, %.1f s",
        files.html,
        len(data.tickets),
        data.period_label,
        len(files.tables),
        len(files.figures),
        time.perf_counter() - started,
    )
    return files


def write_report(
    built: list[Section], out: Path, data: sections.ReportData
) -> ReportFiles:
    """Write the HTML, Markdown, CSV and PNG files of the built sections."""
    out.parent.mkdir(parents=True, exist_ok=True)
    built = number_captions(built)
    subtitle = f"分析期间：{data.period_label}；数据来源：{data.source_name}"
    out.write_text(render_html(REPORT_TITLE, subtitle, built), encoding="utf-8")
    figure_folder = out.parent / f"{out.stem}_figures"
    markdown = out.with_suffix(".md")
    markdown.write_text(
        render_markdown(REPORT_TITLE, subtitle, built, figure_folder.name),
        encoding="utf-8",
    )
    tables = write_tables(built, out.parent / f"{out.stem}_tables")
    figures = write_figures(built, figure_folder)
    return ReportFiles(
        html=out, markdown=markdown, tables=tuple(tables), figures=tuple(figures)
    )


__all__ = [
    "ReportFiles",
    "align_predictions",
    "build_report",
    "parse_period",
    "prepare_data",
]
