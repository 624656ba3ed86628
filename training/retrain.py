"""``triage retrain``: a challenger for the newest month, compared with the champion.

One retrain is one MLflow run with the challenger's training run as its
child. Its steps:

1. load the export, with the labels operators chose in the feedback store;
2. split it into the newest month and the rolling window before it;
3. skip the month if a version for it is registered already;
4. train the challenger on the window;
5. score champion and challenger through their ONNX graphs on the newest month;
6. apply the promotion gate, measure drift and write the model card;
7. move ``champion`` when the gate passes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.loading import LoadResult, load_tickets
from features.mapping import Mapping, TargetSpec
from features.schema import SOURCE_LINE
from models.export import ParityError
from models.scorer import Scorer, load_scorer

from .drift import DriftReport, drift_report, write_drift_page
from .feedback import FeedbackMerge, merge_feedback
from .gate import (
    GateConfig,
    GateDecision,
    TargetComparison,
    apply_gate,
    compare_classifier,
    compare_regressor,
    plot_comparison,
)
from .model_card import CardFacts, build_model_card

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_MONTHS = 12
MAX_TAG_CHARS = 5000

# Version tags that make a rerun for the same month recognisable.
MONTH_TAG = "data_month"
WINDOW_TAG = "data_window"
HASH_TAG = "data_sha256"


@dataclass(frozen=True)
class MonthSplit:
    """The evaluation month, the newest one used, and the rolling window before it."""

    month: pd.Period
    window_start: pd.Period
    window_end: pd.Period
    window: np.ndarray
    """One boolean per ticket: inside the training window."""
    newest: np.ndarray
    """One boolean per ticket: inside the newest month."""

    @property
    def window_label(self) -> str:
        return f"{self.window_start}..{self.window_end}"


@dataclass
class RetrainResult:
    """Outcome of one retrain; ``status`` is one of the ``STATUS_*`` values."""

    model_name: str
    month: str
    window: str
    data_sha256: str
    status: str
    run_id: str | None = None
    challenger_version: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    existing_version: str | None = None
    decision: GateDecision | None = None
    comparisons: list[TargetComparison] = field(default_factory=list)
    drift: DriftReport | None = None
    card: str | None = None

    @property
    def rejected(self) -> bool:
        """Whether the gate rejected the challenger, in a real or a dry run."""
        return self.decision is not None and not self.decision.passed


STATUS_SKIPPED = "skipped"
STATUS_FIRST = "first version"
STATUS_PROMOTED = "promoted"
STATUS_REJECTED = "rejected"
STATUS_DRY_RUN = "dry run"


def split_months(
    tickets: pd.DataFrame, window_months: int, month: str | None = None
) -> MonthSplit:
    """Take the evaluation month and the ``window_months`` months before it.

    The evaluation month is ``month`` (``YYYY-MM``) or else the newest month by
    creation time. Tickets after the evaluation month are left out.
    """
    if window_months < 1:
        raise ValueError(f"the window must span at least 1 month, got {window_months}")
    months = tickets["created_at"].dt.to_period("M")
    if months.isna().all():
        raise ValueError(
            "no ticket has a creation time; a monthly retrain needs created_at"
        )
    if month is None:
        month = months.max()
    else:
        month = _parse_month(month)
        if not (months == month).any():
            raise ValueError(
                f"no tickets created in the evaluation month {month}; the data spans "
                f"{months.min()} to {months.max()}"
            )
    start = month - window_months
    end = month - 1
    window = ((months >= start) & (months <= end)).to_numpy()
    newest = (months == month).to_numpy()
    if not window.any():
        present = ", ".join(str(m) for m in sorted(months.dropna().unique())[-6:])
        raise ValueError(
            f"no tickets in the training window {start}..{end} before the evaluation month "
            f"{month}; the newest months in the data are {present}; widen --window-months "
            "or export more history"
        )
    return MonthSplit(month, start, end, window, newest)


def _parse_month(text: str) -> pd.Period:
    if not re.fullmatch(r"\d{4}-\d{2}", text):
        raise ValueError(
            f"invalid month {text!r}; expected YYYY-MM, for example 2016-08"
        )
    return pd.Period(text, freq="M")


def data_fingerprint(tickets: pd.DataFrame) -> str:
    """Return the SHA-256 of the canonical tickets, independent of row order."""
    columns = sorted(c for c in tickets.columns if c != SOURCE_LINE)
    ordered = tickets[columns].sort_values("ticket_id", kind="stable")
    text = ordered.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hold_out_feedback(
    load: LoadResult, merged: FeedbackMerge, newest: np.ndarray
) -> tuple[LoadResult, dict[str, int]]:
    """Unlabel newest-month rows whose only label is feedback on this model.

    An operator may have accepted the champion's suggestion, so such a label
    would grade the champion on its own prediction. ``train`` would move those rows
    into training, which must not see the newest month, so they are dropped
    from both instead. Returns the new load and the rows dropped per target.
    """
    tickets = merged.load.tickets.copy()
    dropped = {}
    for name, only in merged.feedback_only.items():
        rows = only & newest
        if rows.any():
            field_name = load.mapping.targets[name].field
            tickets[field_name] = tickets[field_name].astype(object)
            tickets.loc[rows, field_name] = None
            dropped[name] = int(rows.sum())
    return replace(merged.load, tickets=tickets), dropped


def find_month_version(client, model_name: str, month: str):
    """Return the newest registered version tagged with ``month``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(
            f"name = '{model_name}' and tags.{MONTH_TAG} = '{month}'"
        )
    except MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def retrain(
    data: str | Path,
    mapping: Mapping | str | Path | None = None,
    *,
    model_name: str = "ticket-triage",
    window_months: int = DEFAULT_WINDOW_MONTHS,
    month: str | None = None,
    feedback_url: str | None = None,
    gate: GateConfig = GateConfig(),
    dry_run: bool = False,
    force: bool = False,
    seed: int = 0,
    n_jobs: int = 2,
    params: dict | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: bool = True,
    load: LoadResult | None = None,
) -> RetrainResult:
    """Retrain on the window before the evaluation month; promote if the gate passes.

    The evaluation month is ``month`` (``YYYY-MM``), by default the newest month
    of the export. ``dry_run`` trains, compares and logs the run but registers
    no version and moves no alias. Without ``force``, a month that already has
    a registered version is skipped.
    """
    import mlflow
    from mlflow import MlflowClient

    from . import registry
    from .train import train

    load = load or load_tickets(data, mapping)
    split = split_months(load.tickets, window_months, month)
    merged, held_out = None, {}
    if feedback_url:
        merged = merge_feedback(load, feedback_url, model_name)
        load, held_out = hold_out_feedback(load, merged, split.newest)
    used = split.window | split.newest
    subset = _subset(load, used)
    newest = split.newest[used]
    fingerprint = data_fingerprint(subset.tickets)
    result = RetrainResult(
        model_name, str(split.month), split.window_label, fingerprint, STATUS_DRY_RUN
    )

    registry.setup_tracking(tracking_uri, experiment or registry.DEFAULT_EXPERIMENT)
    client = MlflowClient()
    if not dry_run and not force and _skip_month(client, result):
        return result
    result.champion_before = registry.alias_version(
        client, model_name, registry.CHAMPION
    )

    with mlflow.start_run(run_name=f"retrain {result.month}") as run:
        result.run_id = run.info.run_id
        _log_retrain_inputs(
            result, split, subset, newest, gate, window_months, data, dry_run
        )
        if merged is not None:
            merged.log_to_mlflow()
            for name, count in held_out.items():
                mlflow.log_metric(f"feedback.{name}.held_out_of_month", count)
        try:
            trained = train(
                data,
                model_name=model_name,
                seed=seed,
                n_jobs=n_jobs,
                params=params,
                tracking_uri=tracking_uri,
                experiment=experiment,
                register=not dry_run,
                progress=progress,
                load=subset,
                eval_mask=newest,
            )
        except ParityError as exc:
            result.decision = GateDecision(passed=False, reasons=[str(exc)])
            result.status = STATUS_REJECTED
            _tag_decision(client, result)
            return result
        result.challenger_version = trained.version
        if trained.version:
            _tag_version(client, result, trained.version)

        challenger = Scorer(trained.bundle_dir)
        champion = (
            load_scorer(f"models:/{model_name}@{registry.CHAMPION}")
            if result.champion_before
            else None
        )
        month_tickets = subset.tickets[newest].reset_index(drop=True)
        window_tickets = subset.tickets[~newest].reset_index(drop=True)
        if champion is not None:
            _judge_challenger(
                result, champion, challenger, month_tickets, load.mapping, trained, gate
            )
        result.drift = _measure_drift(
            champion or challenger,
            window_tickets,
            month_tickets,
            load.mapping,
            split,
            "the champion" if champion is not None else "the challenger",
        )
        result.card = _write_card(
            client, result, trained, champion, window_tickets, load.mapping, gate
        )
        _decide(client, result, dry_run)
    return result


def _judge_challenger(
    result, champion, challenger, month_tickets, mapping, trained, gate
):
    """Compare both models on the month, apply the gate and log both to the run."""
    result.comparisons = compare_models(champion, challenger, month_tickets, mapping)
    champion_only = [
        name
        for name in mapping.targets
        if champion.target(name) is not None and challenger.target(name) is None
    ]
    result.decision = apply_gate(
        result.comparisons, trained.parity, gate, champion_only
    )
    _log_comparison(result, champion_only)


def _subset(load: LoadResult, rows: np.ndarray) -> LoadResult:
    return LoadResult(
        tickets=load.tickets[rows].reset_index(drop=True),
        mapping=load.mapping,
        rows_read=load.rows_read,
        rejected=load.rejected,
        label_issues=load.label_issues,
    )


def _skip_month(client, result: RetrainResult) -> bool:
    existing = find_month_version(client, result.model_name, result.month)
    if existing is None:
        return False
    result.status = STATUS_SKIPPED
    result.existing_version = str(existing.version)
    same = existing.tags.get(HASH_TAG) == result.data_sha256
    logger.info(
        "%s: month %s already has version %s (%s); nothing registered, pass --force to retrain",
        result.model_name,
        result.month,
        existing.version,
        "same data" if same else "trained on different data",
    )
    return True


def compare_models(
    champion: Scorer, challenger: Scorer, tickets: pd.DataFrame, mapping: Mapping
) -> list[TargetComparison]:
    """Score both bundles on ``tickets`` and compare them target by target."""
    records = tickets.to_dict("records")
    old = champion.predict(records)
    new = challenger.predict(records)
    comparisons = []
    for target in mapping.targets.values():
        if target.name not in old or target.name not in new:
            continue
        if target.kind == "regression":
            truth = pd.to_numeric(tickets[target.field], errors="coerce").to_numpy(
                dtype=float
            )
            keep = np.isfinite(truth) & (truth >= 0)
            comparisons.append(
                compare_regressor(
                    target.name,
                    truth[keep],
                    old[target.name][keep],
                    new[target.name][keep],
                )
            )
            continue
        labels = challenger.target(target.name).labels
        keep = tickets[target.field].notna().to_numpy()
        truth = np.array(
            [_merge_rare(v, labels, target) for v in tickets[target.field][keep]],
            dtype=object,
        )
        if target.kind == "binary":
            truth = truth.astype(bool)
        comparisons.append(
            compare_classifier(
                target.name,
                target.kind,
                truth,
                (old[target.name][keep], champion.target(target.name).labels),
                (new[target.name][keep], labels),
            )
        )
    return comparisons


def _merge_rare(value: Any, labels: list, target: TargetSpec) -> Any:
    """Return a label as the challenger was trained on it; unknown ones become rare_label."""
    if target.kind == "binary":
        return bool(value)
    known = {str(label) for label in labels}
    text = str(value)
    if text not in known and target.rare_label in known:
        return target.rare_label
    return text


def _measure_drift(
    scorer: Scorer,
    window: pd.DataFrame,
    month: pd.DataFrame,
    mapping: Mapping,
    split: MonthSplit,
    model_label: str,
) -> DriftReport:
    import mlflow

    before = scorer.predict(window.to_dict("records"))
    after = scorer.predict(month.to_dict("records"))
    # Closure-mode models never score at intake, so their confidence is left out.
    confidence = {
        t.name: (before[t.name].max(axis=1), after[t.name].max(axis=1))
        for t in scorer.targets
        if t.kind != "regression" and t.mode == "intake" and len(month)
    }
    report = drift_report(
        window,
        month,
        scorer.spec,
        mapping.targets.values(),
        confidence,
        reference_label=split.window_label,
        current_label=str(split.month),
        confidence_model=f"{model_label} ({scorer.name})",
    )
    with tempfile.TemporaryDirectory(prefix="triage-drift-") as folder:
        page, plots = write_drift_page(report, Path(folder))
        mlflow.log_artifact(str(page), "drift")
        for plot in plots:
            mlflow.log_artifact(str(plot), "drift")
    mlflow.log_dict(report.to_dict(), "drift/drift.json")
    mlflow.log_metrics(
        {_metric_key(f"drift.psi.{item.name}"): item.psi for item in report.items}
    )
    mlflow.set_tag("drift.flagged", ", ".join(i.name for i in report.flagged) or "none")
    return report


def _log_retrain_inputs(
    result, split, subset, newest, gate, window_months, data, dry_run
) -> None:
    import mlflow

    mlflow.set_tags(
        {
            "triage.kind": "retrain",
            MONTH_TAG: result.month,
            WINDOW_TAG: result.window,
            HASH_TAG: result.data_sha256,
            "dry_run": str(dry_run).lower(),
            "champion_version": result.champion_before or "none",
        }
    )
    mlflow.log_params(
        {
            "data": str(data),
            "window_months": window_months,
            **{f"gate.{k}": v for k, v in gate.to_dict().items()},
        }
    )
    mlflow.log_metrics(
        {
            "window_rows": int((~newest).sum()),
            "month_rows": int(newest.sum()),
            "rows": len(subset.tickets),
        }
    )
    logger.info(
        "retrain %s: window %s with %d tickets, evaluation month %s with %d tickets",
        result.model_name,
        result.window,
        int((~newest).sum()),
        result.month,
        int(newest.sum()),
    )


def _log_comparison(result: RetrainResult, champion_only: list[str]) -> None:
    import mlflow

    metrics: dict[str, float] = {}
    for comparison in result.comparisons:
        if not comparison.rows:
            continue
        keys = (
            ("mae", "median_ae")
            if not comparison.is_classifier
            else ("macro_f1", "accuracy", "ece")
        )
        for key in keys:
            old = comparison.champion[key]
            new = comparison.challenger[key]
            metrics[f"champion.{comparison.target}.{key}"] = old
            metrics[f"challenger.{comparison.target}.{key}"] = new
            metrics[f"delta.{comparison.target}.{key}"] = new - old
        for label, delta in comparison.recall_deltas().items():
            metrics[_metric_key(f"delta.{comparison.target}.recall.{label}")] = delta
    mlflow.log_metrics(metrics)
    mlflow.log_dict([c.to_dict() for c in result.comparisons], "comparison.json")
    mlflow.log_dict(
        {**result.decision.to_dict(), "champion_only": champion_only}, "gate.json"
    )
    with tempfile.TemporaryDirectory(prefix="triage-compare-") as folder:
        path = plot_comparison(result.comparisons, Path(folder) / "comparison.png")
        mlflow.log_artifact(str(path), "plots")


def _write_card(
    client, result, trained, champion, window_tickets, mapping, gate
) -> str:
    import mlflow

    comparisons = {c.target: c for c in result.comparisons}
    metrics = {
        name: comparisons[name].challenger if name in comparisons else values
        for name, values in trained.metrics.items()
    }
    facts = CardFacts(
        model_name=result.model_name,
        version=result.challenger_version,
        manifest=Scorer(trained.bundle_dir, verify=False).manifest,
        window=result.window,
        month=result.month,
        rows_per_class=_rows_per_class(window_tickets, mapping, trained.metrics),
        metrics=metrics,
        evaluation_source=(
            "served ONNX graphs of champion and challenger on the same tickets"
            if champion is not None
            else "the challenger's ONNX graphs; there was no champion"
        ),
        comparisons=result.comparisons,
        champion_version=result.champion_before,
        champion_data=_champion_data(client, result, champion),
        decision=result.decision,
        drift_warning=result.drift.warning_line() if result.drift else None,
        skipped_targets=[t for t in mapping.targets if t not in trained.metrics],
        min_class_support=gate.min_class_support,
    )
    card = build_model_card(facts)
    mlflow.log_text(card, "model_card.md")
    if result.challenger_version:
        client.log_text(trained.run_id, card, "model_card.md")
        client.update_model_version(
            result.model_name, result.challenger_version, description=card
        )
    return card


def _champion_data(
    client, result: RetrainResult, champion: Scorer | None
) -> str | None:
    """Describe the champion's data from its version tags, else from its manifest."""
    if champion is None:
        return None
    tags = client.get_model_version(result.model_name, result.champion_before).tags
    if WINDOW_TAG in tags:
        return f"the window {tags[WINDOW_TAG]}, evaluated on {tags.get(MONTH_TAG, '?')}"
    window = champion.manifest.get("data_window", {})
    return (
        f"tickets from {str(window.get('start', '?'))[:10]} to "
        f"{str(window.get('end', '?'))[:10]}, training and evaluation rows together"
    )


def _rows_per_class(
    tickets: pd.DataFrame, mapping: Mapping, trained: dict
) -> dict[str, dict[str, int]]:
    from .train import target_labels

    counts = {}
    everything = np.ones(len(tickets), dtype=bool)
    for target in mapping.targets.values():
        if target.kind == "regression" or target.name not in trained:
            continue
        labels, labelled = target_labels(tickets, target, everything)
        values = pd.Series(labels[labelled]).astype(str).value_counts()
        counts[target.name] = {str(k): int(v) for k, v in values.items()}
    return counts


def _decide(client, result: RetrainResult, dry_run: bool) -> None:
    """Promote the challenger when the gate passed, and tag the run and version with why."""
    from .aliases import promote

    if result.champion_before is None:
        result.status = STATUS_DRY_RUN if dry_run else STATUS_FIRST
        result.champion_after = None if dry_run else result.challenger_version
    elif dry_run:
        result.status = STATUS_DRY_RUN
        result.champion_after = result.champion_before
    elif result.decision.passed:
        promote(
            result.model_name,
            result.challenger_version,
            action=f"retrain {result.month}: gate passed",
            client=client,
        )
        result.status = STATUS_PROMOTED
        result.champion_after = result.challenger_version
    else:
        result.status = STATUS_REJECTED
        result.champion_after = result.champion_before
    _tag_decision(client, result)


def _tag_decision(client, result: RetrainResult) -> None:
    import mlflow

    decision = result.decision
    tags = {"gate.status": result.status}
    if decision is not None:
        tags["gate.decision"] = "passed" if decision.passed else "rejected"
        tags["gate.reasons"] = _clip("; ".join(decision.reasons) or "none")
    mlflow.set_tags(tags)
    if result.challenger_version:
        for key, value in tags.items():
            client.set_model_version_tag(
                result.model_name, result.challenger_version, key, value
            )
    if decision is not None and not decision.passed:
        logger.warning(
            "%s: challenger for %s rejected: %s",
            result.model_name,
            result.month,
            "; ".join(decision.reasons),
        )


def _tag_version(client, result: RetrainResult, version: str) -> None:
    for key, value in (
        (MONTH_TAG, result.month),
        (WINDOW_TAG, result.window),
        (HASH_TAG, result.data_sha256),
        ("retrain_run_id", result.run_id),
    ):
        client.set_model_version_tag(result.model_name, version, key, value)


def summary_lines(result: RetrainResult) -> list[str]:
    """Describe a retrain for the command line: comparison, drift and decision."""
    if result.status == STATUS_SKIPPED:
        return [
            f"{result.model_name}: month {result.month} already has version "
            f"{result.existing_version}; nothing registered (pass --force to retrain)"
        ]
    lines = [
        f"{result.model_name}: challenger trained on {result.window}, evaluated on "
        f"{result.month}; run {result.run_id}"
    ]
    for c in result.comparisons:
        if not c.rows:
            lines.append(
                f"  {c.target}: no evaluation ticket both models can be scored on"
            )
        elif c.is_classifier:
            lines.append(
                f"  {c.target}: macro-F1 {c.champion['macro_f1']:.3f} (champion) vs "
                f"{c.challenger['macro_f1']:.3f} (challenger) on {c.rows} tickets"
            )
        else:
            lines.append(
                f"  {c.target}: MAE {c.champion['mae']:.3f} (champion) vs "
                f"{c.challenger['mae']:.3f} (challenger) on {c.rows} tickets"
            )
    warning = result.drift.warning_line() if result.drift else None
    if warning:
        lines.append(f"warning: {warning}")
    lines.append(_decision_line(result))
    if result.rejected:
        lines += [f"  - {reason}" for reason in result.decision.reasons]
    return lines


def _decision_line(result: RetrainResult) -> str:
    name, version = result.model_name, result.challenger_version
    if result.status == STATUS_FIRST:
        return f"{name}: version {version} is the first version and now the champion"
    if result.status == STATUS_PROMOTED:
        return (
            f"{name}: gate passed; version {version} is now the champion, "
            f"version {result.champion_before} is previous"
        )
    if result.status == STATUS_REJECTED:
        registered = (
            f"version {version} stays challenger" if version else "nothing registered"
        )
        return (
            f"{name}: gate rejected the challenger ({registered}); champion stays "
            f"version {result.champion_before}, because:"
        )
    if result.decision is None:
        return f"{name}: dry run, no champion to compare with; nothing registered"
    verdict = "would promote" if result.decision.passed else "would reject"
    suffix = "" if result.decision.passed else ", because:"
    return f"{name}: dry run, the gate {verdict} the challenger; nothing registered{suffix}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 3] + "..."


def _metric_key(name: str) -> str:
    from .train import _metric_key as clean

    return clean(name)


__all__ = [
    "DEFAULT_WINDOW_MONTHS",
    "MonthSplit",
    "RetrainResult",
    "compare_models",
    "data_fingerprint",
    "find_month_version",
    "hold_out_feedback",
    "retrain",
    "split_months",
    "summary_lines",
]
