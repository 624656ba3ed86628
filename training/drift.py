"""Data drift between a training window and a new month.

The report contains the population stability index (PSI) of each metadata
field, of the most frequent tokens, of each target's labels and of each
classifier's top-class confidence. It renders as an HTML page with plots.

PSI over bins with shares ``r`` (reference) and ``c`` (current) is
``sum((c - r) * ln(c / r))``. Every bin's count gets 0.5 added before the
shares are taken, so a category absent on one side gives a large but finite
term. Common reading: below 0.1 stable, 0.1 to 0.2 a moderate shift, above
0.2 a shift worth a look.
"""

from __future__ import annotations

import base64
import html
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.inputs import (
    MISSING,
    MONTH_PERIODS,
    FeatureSpec,
    categorical_value,
    month_period,
    ticket_text,
)
from features.mapping import TargetSpec
from features.text import token_string

logger = logging.getLogger(__name__)

PSI_WARNING = 0.2
PSI_MODERATE = 0.1
SMOOTHING = 0.5
MAX_CATEGORIES = 10
TOP_TOKENS = 50
CONFIDENCE_BINS = 10
NUMERIC_BINS = 10
OTHER = "(other)"


@dataclass
class DriftItem:
    """The shift of one distribution between the reference and the current tickets."""

    name: str
    kind: str
    """One of metadata, tokens, label, confidence."""
    psi: float
    reference_rows: int
    current_rows: int
    bins: list[str]
    reference_share: list[float]
    current_share: list[float]
    sampling_psi: float
    """Estimate of the PSI that sampling alone gives two samples of these sizes."""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftReport:
    """Drift of every checked distribution, and which ones pass the warning level."""

    reference_label: str
    current_label: str
    items: list[DriftItem]
    threshold: float = PSI_WARNING
    confidence_model: str | None = None
    """Model whose probabilities the confidence shift was computed from."""

    @property
    def flagged(self) -> list[DriftItem]:
        return [item for item in self.items if item.psi > self.threshold]

    def item(self, name: str) -> DriftItem:
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(
            f"no drift item named {name!r}; items: {[i.name for i in self.items]}"
        )

    def warning_line(self) -> str | None:
        """Return one line naming every distribution whose PSI is above the threshold."""
        if not self.flagged:
            return None
        listed = ", ".join(f"{item.name} {item.psi:.2f}" for item in self.flagged)
        return (
            f"drift: PSI above {self.threshold:g} between {self.reference_label} and "
            f"{self.current_label}: {listed}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference_label,
            "current": self.current_label,
            "threshold": self.threshold,
            "confidence_model": self.confidence_model,
            "flagged": [item.name for item in self.flagged],
            "items": [item.to_dict() for item in self.items],
        }


def population_stability_index(reference_counts, current_counts) -> float:
    """Return the PSI of two count vectors over the same bins (0.5 added to every count)."""
    reference = np.asarray(reference_counts, dtype=float) + SMOOTHING
    current = np.asarray(current_counts, dtype=float) + SMOOTHING
    r = reference / reference.sum()
    c = current / current.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def sampling_psi(bins: int, reference_rows: int, current_rows: int) -> float:
    """Estimate the PSI expected without any drift: (bins - 1) * (1/n_ref + 1/n_cur).

    PSI is close to a chi-square divergence, and between two samples of one
    distribution that divergence averages about this value. It is an estimate:
    read a PSI near it as noise.
    """
    if reference_rows == 0 or current_rows == 0:
        return float("inf")
    return (bins - 1) * (1.0 / reference_rows + 1.0 / current_rows)


def _item_from_counts(
    name: str,
    kind: str,
    bins: list[str],
    reference: Counter,
    current: Counter,
    reference_rows: int,
    current_rows: int,
    details: dict | None = None,
) -> DriftItem:
    r = np.array([reference.get(b, 0) for b in bins], dtype=float)
    c = np.array([current.get(b, 0) for b in bins], dtype=float)
    return DriftItem(
        name=name,
        kind=kind,
        psi=population_stability_index(r, c),
        reference_rows=reference_rows,
        current_rows=current_rows,
        bins=bins,
        reference_share=(r / r.sum()).tolist() if r.sum() else [0.0] * len(bins),
        current_share=(c / c.sum()).tolist() if c.sum() else [0.0] * len(bins),
        sampling_psi=sampling_psi(len(bins), reference_rows, current_rows),
        details=details or {},
    )


def categorical_drift(
    name: str,
    reference: Iterable[str],
    current: Iterable[str],
    kind: str = "metadata",
    max_categories: int = MAX_CATEGORIES,
) -> DriftItem:
    """Measure the PSI of a field over the reference's most common values, the rest pooled.

    The bins come from the reference alone, which is PSI's expected
    distribution. Choosing them from the current tickets as well would favour
    values that are common in a small month by chance. Values never seen in the
    reference fall into the pooled bin and are listed in ``details["new_values"]``.
    """
    reference_counts = Counter(str(v) for v in reference)
    current_counts = Counter(str(v) for v in current)
    ranked = sorted(
        reference_counts, key=lambda value: (-reference_counts[value], value)
    )
    kept = ranked[:max_categories]
    leftover = set(current_counts) - set(kept)
    if len(ranked) > max_categories or leftover:
        pooled = set(ranked[max_categories:]) | leftover
        kept.append(OTHER)
    else:
        pooled = set()
    new_values = [
        {"value": value, "current_rows": count}
        for value, count in current_counts.most_common()
        if value not in reference_counts
    ]
    return _item_from_counts(
        name,
        kind,
        kept,
        _pool(reference_counts, pooled),
        _pool(current_counts, pooled),
        sum(reference_counts.values()),
        sum(current_counts.values()),
        details={"new_values": new_values[:5]} if new_values else None,
    )


def _pool(counts: Counter, pooled: set) -> Counter:
    out: Counter = Counter()
    for value, count in counts.items():
        out[OTHER if value in pooled else value] += count
    return out


def token_drift(
    reference_tokens: Sequence[str],
    current_tokens: Sequence[str],
    top: int = TOP_TOKENS,
) -> DriftItem:
    """Measure the PSI of token occurrences over the ``top`` most frequent tokens.

    The sampling estimate takes token occurrences as the sample size, while the
    row counts of the item are tickets.
    """
    reference = Counter(t for text in reference_tokens for t in text.split())
    current = Counter(t for text in current_tokens for t in text.split())
    item = categorical_drift(
        "tokens",
        reference.elements(),
        current.elements(),
        kind="tokens",
        max_categories=top,
    )
    item.reference_rows = len(reference_tokens)
    item.current_rows = len(current_tokens)
    # Changes are ranked over every token, so a token that is rare in the
    # reference but common in the new month is listed too.
    total_reference = max(1, sum(reference.values()))
    total_current = max(1, sum(current.values()))
    changes = [
        {
            "token": token,
            "reference_share": reference[token] / total_reference,
            "current_share": current[token] / total_current,
        }
        for token in set(reference) | set(current)
    ]
    changes.sort(
        key=lambda c: (-abs(c["current_share"] - c["reference_share"]), c["token"])
    )
    item.details["largest_changes"] = changes[:10]
    return item


def numeric_drift(
    name: str, reference: np.ndarray, current: np.ndarray, kind: str
) -> DriftItem:
    """Measure the PSI of a numeric value over the reference's deciles."""
    reference = reference[np.isfinite(reference)]
    current = current[np.isfinite(current)]
    if len(reference) == 0:
        edges = np.array([])
    else:
        edges = np.unique(
            np.quantile(reference, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
        )
    names = _interval_names(edges)
    r = Counter(names[i] for i in np.searchsorted(edges, reference, side="right"))
    c = Counter(names[i] for i in np.searchsorted(edges, current, side="right"))
    return _item_from_counts(name, kind, names, r, c, len(reference), len(current))


def _interval_names(edges: np.ndarray) -> list[str]:
    if len(edges) == 0:
        return ["all"]
    names = [f"< {edges[0]:.3g}"]
    names += [f"{lo:.3g} to {hi:.3g}" for lo, hi in zip(edges[:-1], edges[1:])]
    names.append(f">= {edges[-1]:.3g}")
    return names


def confidence_drift(
    name: str, reference: np.ndarray, current: np.ndarray
) -> DriftItem:
    """Measure the PSI of the top-class probability over ten equal-width bins of [0, 1]."""
    edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    names = [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(edges[:-1], edges[1:])]

    def counts(values: np.ndarray) -> Counter:
        which = np.clip(
            np.digitize(values, edges[1:-1], right=True), 0, CONFIDENCE_BINS - 1
        )
        return Counter(names[i] for i in which)

    item = _item_from_counts(
        name,
        "confidence",
        names,
        counts(reference),
        counts(current),
        len(reference),
        len(current),
    )
    item.details["reference_mean"] = float(reference.mean()) if len(reference) else None
    item.details["current_mean"] = float(current.mean()) if len(current) else None
    return item


def metadata_values(tickets: pd.DataFrame, name: str) -> list[str]:
    """Return a metadata field normalised as model input; ``month_period`` is derived."""
    if name == "month_period":
        return [
            MONTH_PERIODS[month_period(t.day)] if t == t else MISSING
            for t in tickets["created_at"]
        ]
    return [categorical_value(v) for v in tickets[name]]


def ticket_tokens(tickets: pd.DataFrame, spec: FeatureSpec) -> list[str]:
    """Return token strings of the text fields, from the tokenizer the models use."""
    records = tickets[list(spec.text_fields)].to_dict("records")
    return [token_string(ticket_text(r, spec)) for r in records]


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: FeatureSpec,
    targets: Iterable[TargetSpec] = (),
    confidence: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    *,
    reference_label: str = "reference",
    current_label: str = "current",
    confidence_model: str | None = None,
    threshold: float = PSI_WARNING,
) -> DriftReport:
    """Compare canonical tickets of the training window with those of a new month.

    ``confidence`` maps a target name to the top-class probabilities of one
    model on the reference and on the current tickets.
    """
    items = [
        categorical_drift(
            name, metadata_values(reference, name), metadata_values(current, name)
        )
        for name in (*spec.categorical, "month_period")
    ]
    items.append(
        token_drift(ticket_tokens(reference, spec), ticket_tokens(current, spec))
    )
    for target in targets:
        items.append(label_drift(target, reference, current))
    for name, (before, after) in (confidence or {}).items():
        items.append(confidence_drift(f"confidence.{name}", before, after))
    report = DriftReport(
        reference_label=reference_label,
        current_label=current_label,
        items=items,
        threshold=threshold,
        confidence_model=confidence_model,
    )
    line = report.warning_line()
    if line:
        logger.warning("%s", line)
    return report


def label_drift(
    target: TargetSpec, reference: pd.DataFrame, current: pd.DataFrame
) -> DriftItem:
    """Measure the label shift of one target over its labelled tickets."""
    name = f"label.{target.name}"
    if target.kind == "regression":
        return numeric_drift(
            name,
            pd.to_numeric(reference[target.field], errors="coerce").to_numpy(
                dtype=float
            ),
            pd.to_numeric(current[target.field], errors="coerce").to_numpy(dtype=float),
            kind="label",
        )
    before = [str(v) for v in reference[target.field].dropna()]
    after = [str(v) for v in current[target.field].dropna()]
    return categorical_drift(name, before, after, kind="label", max_categories=15)


# HTML page and plots ---------------------------------------------------------


def plot_psi(report: DriftReport, path: Path) -> Path:
    """Save a bar chart of every PSI with the warning level and the sampling estimate."""
    plt = _pyplot()
    names = [item.name for item in report.items]
    values = [item.psi for item in report.items]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1.5))
    colours = ["#c0392b" if v > report.threshold else "#4c72b0" for v in values]
    y = np.arange(len(names))
    ax.barh(y, values, color=colours)
    noise = [
        min(item.sampling_psi, max(values + [report.threshold]) * 1.1)
        for item in report.items
    ]
    ax.scatter(noise, y, marker="|", color="black", s=120, label="sampling estimate")
    ax.axvline(
        report.threshold,
        color="#c0392b",
        linestyle="--",
        label=f"warning {report.threshold:g}",
    )
    ax.axvline(
        PSI_MODERATE, color="grey", linestyle=":", label=f"moderate {PSI_MODERATE:g}"
    )
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("population stability index")
    ax.set_title(
        f"drift: {report.reference_label} vs {report.current_label}", fontsize=10
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_shares(items: Sequence[DriftItem], title: str, path: Path) -> Path:
    """Save reference and current shares per bin, one panel per drift item."""
    plt = _pyplot()
    width = max(9.0, 0.2 * max(len(item.bins) for item in items))
    fig, axes = plt.subplots(
        len(items), 1, figsize=(width, 2.6 * len(items)), squeeze=False
    )
    for ax, item in zip(axes[:, 0], items):
        x = np.arange(len(item.bins))
        ax.bar(x - 0.2, item.reference_share, width=0.4, label="training window")
        ax.bar(x + 0.2, item.current_share, width=0.4, label="new month")
        ax.set_xticks(x, item.bins, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("share")
        ax.set_title(f"{item.name}: PSI {item.psi:.3f}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fonts import use_cjk_font

    use_cjk_font()
    return plt


def write_drift_page(report: DriftReport, folder: Path) -> tuple[Path, list[Path]]:
    """Write ``drift.html`` and its PNG plots into ``folder``; return the page and plots.

    The page embeds the plots as data URIs, so it renders on its own, for
    example in the MLflow artifact viewer.
    """
    folder.mkdir(parents=True, exist_ok=True)
    plots = [plot_psi(report, folder / "drift_psi.png")]
    for kind, title in (
        ("metadata", "metadata fields"),
        ("tokens", "most frequent tokens"),
        ("label", "label shift"),
        ("confidence", "top-class confidence"),
    ):
        items = [item for item in report.items if item.kind == kind]
        if items:
            plots.append(plot_shares(items, title, folder / f"drift_{kind}.png"))
    page = folder / "drift.html"
    page.write_text(_render_page(report, plots), encoding="utf-8")
    return page, plots


def _render_page(report: DriftReport, plots: Sequence[Path]) -> str:
    esc = html.escape
    rows = []
    for item in report.items:
        flag = "above" if item.psi > report.threshold else ""
        rows.append(
            f"<tr class='{flag}'><td>{esc(item.name)}</td><td>{esc(item.kind)}</td>"
            f"<td>{item.psi:.3f}</td><td>{item.sampling_psi:.3f}</td>"
            f"<td>{item.reference_rows}</td><td>{item.current_rows}</td>"
            f"<td>{esc(_largest_shift(item))}</td></tr>"
        )
    warning = report.warning_line()
    images = "\n".join(
        f"<figure><img alt='{esc(p.stem)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'></figure>"
        for p in plots
    )
    confidence = (
        f"<p>Confidence is the top-class probability of {esc(report.confidence_model)}. "
        "The training window includes tickets that model was trained on, so its "
        "confidence there is higher than on unseen tickets.</p>"
        if report.confidence_model
        else ""
    )
    tokens = _token_table(report)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Drift {esc(report.reference_label)} vs {esc(report.current_label)}</title>
<style>
body {{ font-family: "Noto Sans CJK SC", sans-serif; margin: 2em; max-width: 60em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
tr.above td {{ background: #fbe3e0; }}
.warning {{ color: #a02c1c; font-weight: bold; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Drift: training window {esc(report.reference_label)} against {esc(report.current_label)}</h1>
<p class="warning">{esc(warning) if warning else "No PSI is above " + format(report.threshold, "g") + "."}</p>
<p>Population stability index (PSI) below {PSI_MODERATE:g} reads as stable, {PSI_MODERATE:g}
to {report.threshold:g} as a moderate shift, above {report.threshold:g} as a shift worth a look.
The sampling estimate is the PSI two samples of these sizes show without any drift; a PSI
near it is noise.</p>
{confidence}
<table><thead><tr><th>distribution</th><th>kind</th><th>PSI</th><th>sampling estimate</th>
<th>window rows</th><th>month rows</th><th>largest change of share</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
{tokens}
{images}
</body></html>
"""


def _largest_shift(item: DriftItem) -> str:
    if not item.bins:
        return ""
    changes = np.array(item.current_share) - np.array(item.reference_share)
    i = int(np.argmax(np.abs(changes)))
    return (
        f"{item.bins[i]}: {item.reference_share[i]:.1%} to {item.current_share[i]:.1%}"
    )


def _token_table(report: DriftReport) -> str:
    try:
        changes = report.item("tokens").details.get("largest_changes", [])
    except KeyError:
        return ""
    if not changes:
        return ""
    rows = "\n".join(
        f"<tr><td>{html.escape(c['token'])}</td><td>{c['reference_share']:.2%}</td>"
        f"<td>{c['current_share']:.2%}</td></tr>"
        for c in changes
    )
    return (
        "<h2>Tokens whose share changed most</h2><table><thead><tr><th>token</th>"
        "<th>window share</th><th>month share</th></tr></thead><tbody>"
        f"{rows}</tbody></table>"
    )


__all__ = [
    "PSI_WARNING",
    "DriftItem",
    "DriftReport",
    "categorical_drift",
    "confidence_drift",
    "drift_report",
    "label_drift",
    "numeric_drift",
    "population_stability_index",
    "sampling_psi",
    "token_drift",
    "write_drift_page",
]
