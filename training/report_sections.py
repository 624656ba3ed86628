"""Numbers for each section of the abnormal-closure report.

Every function here takes canonical tickets and returns plain numbers and
DataFrames, with no wording and no formatting, so tests can check each figure
against a direct computation. :mod:`training.report_content` turns the results
into Chinese text, tables and charts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from features.inputs import MONTH_PERIODS
from features.mapping import fold
from features.taxonomy import Taxonomy
from features.text import PLACEHOLDERS, normalize_text

# Label for an empty department, channel or system cell.
UNFILLED = "未填写"
# Label of the row that merges everything outside the top rows of a table.
OTHER_GROUP = "其他"
TOP_DEPARTMENTS = 10
TOP_CAUSES = 10
# Extra fields a mapping can add so that the quality section covers them:
# a numeric customer satisfaction score and a flag for an error made in handling.
SATISFACTION_FIELD = "satisfaction"
HANDLING_ERROR_FIELD = "handling_error"
HANDLING_ERROR_TRUE = frozenset({"是", "有", "true", "1", "yes", "y"})
HANDLING_ERROR_FALSE = frozenset({"否", "无", "false", "0", "no", "n"})
# A closure prediction below this probability counts as low confidence.
LOW_CONFIDENCE = 0.5
# Interquartile-range multiple beyond which a log handling time is unusual.
OUTLIER_IQR_FACTOR = 1.5
CODED = "coded"
PREDICTED = "predicted"


@dataclass(frozen=True)
class TimeLimitRule:
    """Handling time limits of a mapping: fixed hours, or hours per value of a field."""

    fixed_hours: float | None = None
    by_column: str = ""
    hours_by_value: dict[str, float] | None = None


@dataclass
class ReportData:
    """The tickets a report covers and the context every section needs.

    ``tickets`` contains the abnormal tickets created in the period, with the
    extra columns ``month_period`` (0, 1, 2) and ``month`` (a monthly
    ``pandas.Period``). ``predictions`` is aligned with ``tickets.index``.
    ``lookback`` contains the abnormal tickets created shortly before the period,
    so that a repeat at the start of the period still finds its first ticket.
    ``time_limits`` gives each ticket's handling time limit in hours (NaN when
    no limit applies) and is None when the mapping sets no limits.
    """

    tickets: pd.DataFrame
    all_tickets: pd.DataFrame
    taxonomy: Taxonomy
    period_label: str
    source_name: str
    rows_read: int
    rows_rejected: int
    data_start: pd.Timestamp | None
    data_end: pd.Timestamp | None
    has_durations: bool
    time_limits: pd.Series | None = None
    limit_rule: TimeLimitRule | None = None
    category_column: str = ""
    category_empty_label: str = ""
    escalation_column: str = ""
    predictions: pd.DataFrame | None = None
    lookback: pd.DataFrame | None = None
    months: pd.PeriodIndex | None = None


def category_order(tickets: pd.DataFrame, taxonomy: Taxonomy) -> list[str]:
    """Return the taxonomy's category codes, then any other codes the tickets carry."""
    codes = taxonomy.category_codes
    found = tickets["category"].dropna().astype(str).unique()
    return codes + sorted(set(found) - set(codes))


def category_name(taxonomy: Taxonomy, code: str) -> str:
    category = taxonomy.category(code)
    return category.name if category is not None else str(code)


def cause_name(taxonomy: Taxonomy, code: str) -> str:
    """Return the taxonomy's Chinese name of a cause, or the export's own label."""
    cause = taxonomy.cause(code)
    return cause.name if cause is not None else str(code)


def labels(series: pd.Series) -> pd.Series:
    """Return metadata values as strings, with empty cells as ``未填写``."""
    text = series.astype("string").fillna("").str.strip()
    return text.where(text != "", UNFILLED).astype(object)


def top_labels(values: pd.Series, n: int) -> list[str]:
    """Return the n most frequent labels, breaking ties by label order."""
    counts = values.value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    return [label for label, _ in ranked[:n]]


def collapse_to_top(values: pd.Series, n: int) -> pd.Series:
    """Keep the n most frequent labels and merge the rest into ``其他``."""
    keep = set(top_labels(values, n))
    return values.where(values.isin(keep), OTHER_GROUP)


def _group_order(groups: pd.Series, n: int) -> list[str]:
    order = top_labels(groups[groups != OTHER_GROUP], n)
    return order + ([OTHER_GROUP] if (groups == OTHER_GROUP).any() else [])


def _share(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole else float("nan")


# Overview -----------------------------------------------------------------


@dataclass
class Overview:
    total_tickets: int
    abnormal_tickets: int
    abnormal_share: float
    by_period: pd.DataFrame
    peak_periods: list[str]
    by_department: pd.DataFrame
    department_count: int
    by_category: pd.DataFrame
    monthly: pd.Series


def compute_overview(data: ReportData, top: int = TOP_DEPARTMENTS) -> Overview:
    """Count abnormal tickets overall, by period of month, department and category."""
    tickets = data.tickets
    total = len(data.all_tickets)
    abnormal = len(tickets)
    return Overview(
        total_tickets=total,
        abnormal_tickets=abnormal,
        abnormal_share=_share(abnormal, total),
        by_period=counts_by_period(tickets),
        peak_periods=peak_periods(tickets),
        by_department=counts_by_department(data, top),
        department_count=int(labels(tickets["department"]).nunique()),
        by_category=counts_by_category(tickets, data.taxonomy),
        monthly=monthly_counts(tickets, data.months),
    )


def counts_by_period(tickets: pd.DataFrame) -> pd.DataFrame:
    """Tickets and share per period of the month, indexed by 月初, 月中, 月末."""
    counts = tickets["month_period"].value_counts().reindex(range(3), fill_value=0)
    frame = pd.DataFrame({"tickets": counts.to_numpy()}, index=list(MONTH_PERIODS))
    frame["share"] = frame["tickets"] / len(tickets) if len(tickets) else np.nan
    return frame


def peak_periods(tickets: pd.DataFrame) -> list[str]:
    """Return the period (or tied periods) of the month with the most tickets."""
    counts = counts_by_period(tickets)["tickets"]
    if counts.max() == 0:
        return []
    return [name for name, count in counts.items() if count == counts.max()]


def counts_by_department(data: ReportData, top: int) -> pd.DataFrame:
    """Tickets and share of the top departments, the rest merged into ``其他``.

    When the file also contains tickets that are not abnormal, the column
    ``abnormal_rate`` gives the abnormal share within each department.
    """
    departments = collapse_to_top(labels(data.tickets["department"]), top)
    counts = departments.value_counts()
    order = _group_order(departments, top)
    frame = pd.DataFrame({"tickets": counts.reindex(order).to_numpy()}, index=order)
    frame["share"] = (
        frame["tickets"] / len(data.tickets) if len(data.tickets) else np.nan
    )
    if len(data.all_tickets) > len(data.tickets):
        everyone = labels(data.all_tickets["department"])
        everyone = everyone.where(everyone.isin(order), OTHER_GROUP).value_counts()
        frame["abnormal_rate"] = frame["tickets"] / everyone.reindex(order).to_numpy()
    frame.index.name = "department"
    return frame


def counts_by_category(tickets: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """Tickets, share, main root causes and one example ticket per category.

    ``main_causes`` lists up to three (cause label, tickets) pairs. The example
    is the most recent ticket with the category's most frequent root cause,
    or the most recent ticket of the category when none has a root cause.
    """
    rows = []
    for code in category_order(tickets, taxonomy):
        members = tickets[tickets["category"] == code]
        causes = members["root_cause"].dropna()
        causes = causes[causes.astype(str).str.strip() != ""]
        ranked = top_labels(causes, 3)
        counts = causes.value_counts()
        pool = members[members["root_cause"] == ranked[0]] if ranked else members
        pool = pool[pool["description"].astype("string").fillna("").str.strip() != ""]
        example = pool.sort_values("created_at").iloc[-1] if len(pool) else None
        rows.append(
            {
                "category": code,
                "name": category_name(taxonomy, code),
                "tickets": len(members),
                "share": _share(len(members), len(tickets)),
                "main_causes": [
                    (cause_name(taxonomy, c), int(counts[c])) for c in ranked
                ],
                "example_id": None if example is None else example["ticket_id"],
                "example": None if example is None else str(example["description"]),
            }
        )
    return pd.DataFrame(rows).set_index("category")


def monthly_counts(tickets: pd.DataFrame, months: pd.PeriodIndex | None) -> pd.Series:
    counts = tickets["month"].value_counts()
    if months is None:
        months = pd.PeriodIndex(sorted(counts.index), freq="M")
    return counts.reindex(months, fill_value=0).rename("tickets")


# Handling time ------------------------------------------------------------


@dataclass
class HandlingTime:
    known: int
    missing: int
    overall: dict[str, float]
    by_category: pd.DataFrame
    by_department: pd.DataFrame
    longest_department: str | None
    shortest_department: str | None
    bounds: tuple[float, float] | None
    long_tickets: pd.DataFrame
    short_tickets: pd.DataFrame
    monthly: pd.DataFrame
    hours: pd.Series = field(repr=False, default_factory=pd.Series)


def _hour_stats(hours: pd.Series) -> dict[str, float]:
    hours = hours.dropna()
    if hours.empty:
        return {
            "tickets": 0,
            "mean": np.nan,
            "median": np.nan,
            "max": np.nan,
            "min": np.nan,
        }
    return {
        "tickets": int(hours.size),
        "mean": float(hours.mean()),
        "median": float(hours.median()),
        "max": float(hours.max()),
        "min": float(hours.min()),
    }


HOUR_STATS = ["tickets", "mean", "median", "max", "min"]


def _stats_by(hours: pd.Series, groups: pd.Series, order: list[str]) -> pd.DataFrame:
    rows = {name: _hour_stats(hours[groups == name]) for name in order}
    return pd.DataFrame.from_dict(rows, orient="index", columns=HOUR_STATS)


def compute_handling_time(data: ReportData, top: int = TOP_DEPARTMENTS) -> HandlingTime:
    """Summarise handling hours overall, by category and department, with outliers."""
    tickets = data.tickets
    hours = tickets["handling_hours"].astype("float64")
    known = hours.notna()

    codes = category_order(tickets, data.taxonomy)
    by_category = _stats_by(hours, tickets["category"], codes)
    by_category.insert(
        0, "name", [category_name(data.taxonomy, c) for c in by_category.index]
    )
    departments = collapse_to_top(labels(tickets["department"]), top)
    by_department = _stats_by(hours, departments, _group_order(departments, top))
    ranked = by_department.drop(index=OTHER_GROUP, errors="ignore")["mean"].dropna()

    bounds = outlier_bounds(hours)
    long_tickets, short_tickets = unusual_tickets(tickets, bounds)
    return HandlingTime(
        known=int(known.sum()),
        missing=int((~known).sum()),
        overall=_hour_stats(hours),
        by_category=by_category,
        by_department=by_department,
        longest_department=ranked.idxmax() if len(ranked) else None,
        shortest_department=ranked.idxmin() if len(ranked) else None,
        bounds=bounds,
        long_tickets=long_tickets,
        short_tickets=short_tickets,
        monthly=monthly_hours(tickets, data.months),
        hours=hours[known],
    )


def outlier_bounds(hours: pd.Series) -> tuple[float, float] | None:
    """Return (low, high) hours outside which a handling time is unusual.

    The rule is 1.5 interquartile ranges beyond the quartiles of log10 hours,
    because handling times are heavily right-skewed. Zero hours have no log, so
    they are left out of the quartiles, and :func:`unusual_tickets` counts them
    as short. Fewer than four positive hours give None.
    """
    positive = hours[hours > 0]
    if len(positive) < 4:
        return None
    logs = np.log10(positive)
    q1, q3 = logs.quantile(0.25), logs.quantile(0.75)
    spread = OUTLIER_IQR_FACTOR * (q3 - q1)
    return float(10 ** (q1 - spread)), float(10 ** (q3 + spread))


def unusual_tickets(
    tickets: pd.DataFrame, bounds: tuple[float, float] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the tickets above and below the bounds, most extreme first."""
    columns = ["ticket_id", "created_at", "department", "category", "handling_hours"]
    hours = tickets["handling_hours"]
    if bounds is None:
        empty = tickets.iloc[0:0][columns]
        return empty, empty
    low, high = bounds
    long_tickets = tickets[hours > high].sort_values("handling_hours", ascending=False)
    short_tickets = tickets[hours < low].sort_values("handling_hours")
    return long_tickets[columns], short_tickets[columns]


def monthly_hours(tickets: pd.DataFrame, months: pd.PeriodIndex | None) -> pd.DataFrame:
    """Tickets with known hours, mean and median handling hours per month."""
    known = tickets[tickets["handling_hours"].notna()]
    grouped = known.groupby("month")["handling_hours"]
    frame = pd.DataFrame(
        {"tickets": grouped.size(), "mean": grouped.mean(), "median": grouped.median()}
    )
    if months is None:
        months = pd.PeriodIndex(sorted(tickets["month"].unique()), freq="M")
    frame = frame.reindex(months)
    frame["tickets"] = frame["tickets"].fillna(0).astype(int)
    frame.index.name = "month"
    return frame


# Causes -------------------------------------------------------------------


@dataclass
class Causes:
    counts: pd.DataFrame
    coded: int
    uncoded: int
    predicted: int
    predictions_given: bool


def compute_causes(data: ReportData) -> Causes:
    """Count root causes per category, using a predicted cause where none is recorded.

    Rows of ``counts`` carry ``source`` ``coded`` or ``predicted``, so that a
    reader never mistakes a model's guess for a recorded cause.
    """
    tickets = data.tickets
    cause = tickets["root_cause"].astype("string").fillna("").str.strip()
    has_cause = cause != ""
    frames = [_cause_counts(tickets[has_cause], cause[has_cause], CODED, data.taxonomy)]
    predicted = 0
    if data.predictions is not None:
        guess = data.predictions.loc[~has_cause, "root_cause"].astype("string")
        guess = guess.fillna("").str.strip()
        guess = guess[guess != ""]
        predicted = len(guess)
        frames.append(
            _cause_counts(tickets.loc[guess.index], guess, PREDICTED, data.taxonomy)
        )
    counts = pd.concat(frames, ignore_index=True)
    counts = counts.sort_values(
        ["tickets", "cause"], ascending=[False, True], kind="stable"
    )
    return Causes(
        counts=counts.reset_index(drop=True),
        coded=int(has_cause.sum()),
        uncoded=int((~has_cause).sum()),
        predicted=predicted,
        predictions_given=data.predictions is not None,
    )


def _cause_counts(
    tickets: pd.DataFrame, causes: pd.Series, source: str, taxonomy: Taxonomy
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "category": tickets["category"],
            "cause": causes,
            "hours": tickets["handling_hours"],
        }
    )
    grouped = frame.groupby(["category", "cause"], dropna=False)["hours"]
    counts = pd.DataFrame(
        {"tickets": grouped.size(), "hours": grouped.sum(min_count=1)}
    ).reset_index()
    counts.insert(
        1, "category_name", counts["category"].map(lambda c: category_name(taxonomy, c))
    )
    counts.insert(
        3, "cause_name", counts["cause"].map(lambda c: cause_name(taxonomy, c))
    )
    counts.insert(4, "source", source)
    return counts


# Process ------------------------------------------------------------------


@dataclass
class Process:
    escalation_known: int
    escalated: int
    escalation_rate: float
    limits_given: bool
    limit_checked: int
    breaches: int
    breach_rate: float
    by_channel: pd.DataFrame
    by_department: pd.DataFrame


def escalation_flags(tickets: pd.DataFrame) -> pd.Series:
    """Return escalation as a nullable boolean series in which unknown stays missing."""
    return tickets["escalated"].astype("boolean")


def _process_rates(tickets: pd.DataFrame, limits: pd.Series | None) -> dict[str, float]:
    flags = escalation_flags(tickets)
    known = int(flags.notna().sum())
    escalated = int(flags.fillna(False).sum())
    row = {
        "tickets": len(tickets),
        "escalation_known": known,
        "escalated": escalated,
        "escalation_rate": _share(escalated, known),
    }
    if limits is not None:
        hours = tickets["handling_hours"]
        limit = limits.reindex(tickets.index)
        checked = hours.notna() & limit.notna()
        row["limit_checked"] = int(checked.sum())
        row["breaches"] = int((hours[checked] > limit[checked]).sum())
        row["breach_rate"] = _share(row["breaches"], row["limit_checked"])
    return row


def _process_by(
    tickets: pd.DataFrame, groups: pd.Series, order: list[str], limits: pd.Series | None
) -> pd.DataFrame:
    rows = {name: _process_rates(tickets[groups == name], limits) for name in order}
    columns = list(_process_rates(tickets.iloc[0:0], limits))
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def compute_process(data: ReportData, top: int = TOP_DEPARTMENTS) -> Process:
    """Compute escalation and time-limit breach rates, overall and by group.

    Groups are the detection channels and the top departments.

    A breach is a handling time above the ticket's limit. Only tickets with
    both a handling time and a limit are checked. Without limits in the
    mapping the breach figures are zero and ``limits_given`` is False.
    """
    tickets = data.tickets
    limits = data.time_limits
    overall = _process_rates(tickets, limits)
    channels = labels(tickets["channel"])
    departments = collapse_to_top(labels(tickets["department"]), top)
    return Process(
        escalation_known=overall["escalation_known"],
        escalated=overall["escalated"],
        escalation_rate=overall["escalation_rate"],
        limits_given=limits is not None,
        limit_checked=overall.get("limit_checked", 0),
        breaches=overall.get("breaches", 0),
        breach_rate=overall.get("breach_rate", float("nan")),
        by_channel=_process_by(
            tickets, channels, top_labels(channels, len(channels)), limits
        ),
        by_department=_process_by(
            tickets, departments, _group_order(departments, top), limits
        ),
    )


# Quality ------------------------------------------------------------------


def _bigram_text(text: object) -> str:
    """Normalise a description and drop placeholders and whitespace before bigrams."""
    normal = normalize_text(text if isinstance(text, str) else "")
    for placeholder in PLACEHOLDERS:
        normal = normal.replace(placeholder, "")
    return "".join(normal.split())


def bigram_vectors(texts: list[str]) -> sparse.csr_matrix:
    """Return L2-normalised character-bigram term-frequency vectors, one row per text.

    A text shorter than two characters gets a zero row, so it matches nothing.
    """
    vocabulary: dict[str, int] = {}
    rows, columns, values = [], [], []
    for row, text in enumerate(texts):
        counts = Counter(text[i : i + 2] for i in range(len(text) - 1))
        for bigram, count in counts.items():
            rows.append(row)
            columns.append(vocabulary.setdefault(bigram, len(vocabulary)))
            values.append(float(count))
    matrix = sparse.csr_matrix(
        (values, (rows, columns)), shape=(len(texts), max(len(vocabulary), 1))
    )
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ matrix)


RECURRENCE_COLUMNS = [
    "first_id",
    "repeat_id",
    "system",
    "days_apart",
    "similarity",
    "after_closure",
]


def find_recurrences(
    tickets: pd.DataFrame, window_days: float = 30, threshold: float = 0.8
) -> pd.DataFrame:
    """Find pairs of tickets in which a later ticket repeats an earlier one.

    Two tickets form a pair when all three conditions hold. They name the same
    system, compared after NFKC normalisation and case folding. The later one
    was created at most ``window_days`` after the earlier one. The cosine
    similarity of their descriptions' character-bigram term-frequency vectors
    is at least ``threshold``. Dates, times, numbers and addresses are masked before
    comparing, so two reports of one fault on different days still match.
    Tickets without a system are never paired.

    Returns a DataFrame with columns ``first_id``, ``repeat_id``, ``system``,
    ``days_apart``, ``similarity`` and ``after_closure``, one row per pair,
    ordered by the repeat's creation time. ``after_closure`` is True when the
    repeat was created after the first ticket closed, and missing when the
    first ticket has no closing time.
    """
    if tickets.empty:
        return pd.DataFrame(columns=RECURRENCE_COLUMNS)
    systems = tickets["system"].astype("string").fillna("").map(fold)
    vectors = bigram_vectors([_bigram_text(t) for t in tickets["description"]])
    created = tickets["created_at"].to_numpy()
    closed = pd.to_datetime(tickets["closed_at"]).to_numpy()
    ids = tickets["ticket_id"].to_numpy()
    window = np.timedelta64(int(window_days * 86400), "s")
    pairs = []
    for system, positions in systems.groupby(systems).indices.items():
        if not system or len(positions) < 2:
            continue
        order = positions[np.argsort(created[positions], kind="stable")]
        times = created[order]
        block = vectors[order]
        # Each ticket is compared only with the later tickets inside the window,
        # so the cost grows with tickets per window, not with the square of the group.
        ends = np.searchsorted(times, times + window, side="right")
        for i in range(len(order) - 1):
            if ends[i] <= i + 1:
                continue
            similarity = (block[i + 1 : ends[i]] @ block[i].T).toarray().ravel()
            first_closed = closed[order[i]]
            for offset in np.flatnonzero(similarity >= threshold - 1e-9):
                j = i + 1 + offset
                pairs.append(
                    (
                        ids[order[i]],
                        ids[order[j]],
                        system,
                        (times[j] - times[i]) / np.timedelta64(1, "D"),
                        float(min(similarity[offset], 1.0)),
                        pd.NA
                        if pd.isna(first_closed)
                        else bool(times[j] >= first_closed),
                        times[j],
                    )
                )
    frame = pd.DataFrame(pairs, columns=RECURRENCE_COLUMNS + ["repeat_created"])
    frame = frame.sort_values(["repeat_created", "first_id"], kind="stable")
    frame["after_closure"] = frame["after_closure"].astype("boolean")
    return frame[RECURRENCE_COLUMNS].reset_index(drop=True)


def closest_first_tickets(pairs: pd.DataFrame) -> pd.DataFrame:
    """Keep one pair per repeat ticket, with the most similar earlier ticket.

    On a tie in similarity the latest earlier ticket is kept. Pairs stay in the
    order of ``pairs``.
    """
    ranked = pairs.sort_values(
        ["similarity", "days_apart"], ascending=[False, True], kind="stable"
    )
    closest = ranked.drop_duplicates("repeat_id")
    return pairs[pairs.index.isin(closest.index)].reset_index(drop=True)


@dataclass
class ClosureAudit:
    compared: int
    agreed: int
    accuracy: float
    low_confidence: int | None
    by_category: pd.DataFrame


@dataclass
class Quality:
    closure: ClosureAudit | None
    closure_missing: str | None
    recurrences: pd.DataFrame
    recurring_tickets: int
    recurrence_rate: float
    repeats_after_closure: int
    window_days: float
    threshold: float
    handling_error: dict[str, float] | None
    satisfaction: dict[str, object] | None


def compute_quality(
    data: ReportData, window_days: float = 30, threshold: float = 0.8
) -> Quality:
    """Compute closure accuracy, recurrence, handling error rate and satisfaction.

    ``closure_missing`` is ``"predictions"`` when no predictions were given and
    ``"closure_category"`` when they lack closure predictions. Handling error
    and satisfaction are None unless the tickets contain those fields.
    """
    closure, missing = audit_closure(data)
    recurrences = _recurrences_in_period(data, window_days, threshold)
    repeats = int(recurrences["repeat_id"].nunique())
    after = recurrences.loc[recurrences["after_closure"].fillna(False), "repeat_id"]
    return Quality(
        closure=closure,
        closure_missing=missing,
        recurrences=recurrences,
        recurring_tickets=repeats,
        recurrence_rate=_share(repeats, len(data.tickets)),
        repeats_after_closure=int(after.nunique()),
        window_days=window_days,
        threshold=threshold,
        handling_error=handling_error_rate(data.tickets),
        satisfaction=satisfaction_scores(data.tickets),
    )


def _recurrences_in_period(
    data: ReportData, window_days: float, threshold: float
) -> pd.DataFrame:
    pool = data.tickets
    if data.lookback is not None and len(data.lookback):
        pool = pd.concat([data.lookback, data.tickets], ignore_index=True)
    pairs = find_recurrences(pool, window_days=window_days, threshold=threshold)
    return pairs[pairs["repeat_id"].isin(set(data.tickets["ticket_id"]))].reset_index(
        drop=True
    )


def audit_closure(data: ReportData) -> tuple[ClosureAudit | None, str | None]:
    """Compare recorded categories with a closure model's reading of closure notes."""
    if data.predictions is None:
        return None, "predictions"
    if "closure_category" not in data.predictions.columns:
        return None, "closure_category"
    predicted = data.predictions["closure_category"]
    both = predicted.notna() & data.tickets["category"].notna()
    agree = both & (predicted == data.tickets["category"])
    rows = {}
    for code in category_order(data.tickets, data.taxonomy):
        members = both & (data.tickets["category"] == code)
        rows[code] = {
            "name": category_name(data.taxonomy, code),
            "compared": int(members.sum()),
            "agreed": int((agree & members).sum()),
            "accuracy": _share((agree & members).sum(), members.sum()),
        }
    low = None
    if "closure_probability" in data.predictions.columns:
        probability = data.predictions.loc[both, "closure_probability"].astype(float)
        low = int((probability < LOW_CONFIDENCE).sum())
    audit = ClosureAudit(
        compared=int(both.sum()),
        agreed=int(agree.sum()),
        accuracy=_share(agree.sum(), both.sum()),
        low_confidence=low,
        by_category=pd.DataFrame.from_dict(rows, orient="index"),
    )
    return audit, None


def handling_error_rate(tickets: pd.DataFrame) -> dict[str, float] | None:
    """Share of tickets flagged with a handling error, among those with a known flag."""
    if HANDLING_ERROR_FIELD not in tickets.columns:
        return None
    values = tickets[HANDLING_ERROR_FIELD].astype("string").fillna("").map(fold)
    errors = int(values.isin(HANDLING_ERROR_TRUE).sum())
    known = errors + int(values.isin(HANDLING_ERROR_FALSE).sum())
    return {"known": known, "errors": errors, "rate": _share(errors, known)}


def satisfaction_scores(tickets: pd.DataFrame) -> dict[str, object] | None:
    """Mean and distribution of the numeric satisfaction scores, if the field exists."""
    if SATISFACTION_FIELD not in tickets.columns:
        return None
    scores = pd.to_numeric(tickets[SATISFACTION_FIELD], errors="coerce").dropna()
    return {
        "known": int(scores.size),
        "mean": float(scores.mean()) if scores.size else float("nan"),
        "distribution": scores.value_counts().sort_index(),
    }


# Measures -----------------------------------------------------------------


@dataclass
class Measures:
    top_causes: pd.DataFrame
    ranking: pd.DataFrame


def compute_measures(
    data: ReportData, causes: Causes, top: int = TOP_CAUSES
) -> Measures:
    """Rank the taxonomy's measures by the tickets and hours of the causes they address.

    Only the ``top`` causes by tickets are considered.

    A cause that the taxonomy does not list (an export's own label) takes the
    measures of its category. Tickets with neither a coded nor a predicted
    cause are not counted.
    """
    top_causes = causes.counts.sort_values(
        ["tickets", "hours", "cause"], ascending=[False, False, True], kind="stable"
    ).head(top)
    rows: dict[str, dict] = {}
    for cause in top_causes.itertuples():
        for measure in data.taxonomy.measures_for(cause.cause, cause.category):
            row = rows.setdefault(
                measure, {"categories": [], "causes": [], "tickets": 0, "hours": np.nan}
            )
            if cause.category_name not in row["categories"]:
                row["categories"].append(cause.category_name)
            row["causes"].append((cause.cause_name, cause.source))
            row["tickets"] += int(cause.tickets)
            if not pd.isna(cause.hours):
                row["hours"] = np.nansum([row["hours"], cause.hours])
    ranking = pd.DataFrame.from_dict(rows, orient="index")
    if ranking.empty:
        ranking = pd.DataFrame(columns=["categories", "causes", "tickets", "hours"])
    ranking.index.name = "measure"
    ranking = ranking.sort_values(["tickets", "hours"], ascending=False, kind="stable")
    return Measures(top_causes=top_causes.reset_index(drop=True), ranking=ranking)


__all__ = [
    "HANDLING_ERROR_FIELD",
    "OTHER_GROUP",
    "SATISFACTION_FIELD",
    "UNFILLED",
    "Causes",
    "HandlingTime",
    "Measures",
    "Overview",
    "Process",
    "Quality",
    "ReportData",
    "TimeLimitRule",
    "closest_first_tickets",
    "compute_causes",
    "compute_handling_time",
    "compute_measures",
    "compute_overview",
    "compute_process",
    "compute_quality",
    "find_recurrences",
]
