"""Model cards: one Markdown page per registered version.

A card states the data window, rows per class, metrics per class on the
evaluation month, the decision thresholds, what changed against the champion
the version was compared with, and the known limits of those figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .gate import GateDecision, TargetComparison

# Recall changes smaller than this are left out of "what changed".
NOTABLE_RECALL_CHANGE = 0.05
SMALL_EVALUATION = 100


@dataclass
class CardFacts:
    """Facts a model card states about one version."""

    model_name: str
    version: str | None
    manifest: dict[str, Any]
    window: str
    """Training window, for example ``2015-09..2016-07``."""
    month: str
    """Evaluation month, never seen in training."""
    rows_per_class: dict[str, dict[str, int]]
    """Training rows per label, per classification target, after rare labels were merged."""
    metrics: dict[str, dict[str, Any]]
    """Metrics per target on the evaluation month."""
    evaluation_source: str
    """Description of how the metrics were computed."""
    comparisons: Sequence[TargetComparison] = ()
    champion_version: str | None = None
    champion_data: str | None = None
    """The champion's data in words, for example its window and evaluation month."""
    decision: GateDecision | None = None
    drift_warning: str | None = None
    skipped_targets: Sequence[str] = ()
    min_class_support: int = 5
    extra_limits: list[str] = field(default_factory=list)


def build_model_card(facts: CardFacts) -> str:
    """Return the model card as Markdown."""
    sections = [
        _header(facts),
        _data_section(facts),
        _metrics_section(facts),
        _thresholds_section(facts),
        _changes_section(facts),
        _limits_section(facts),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _header(facts: CardFacts) -> str:
    version = f"version {facts.version}" if facts.version else "unregistered (dry run)"
    manifest = facts.manifest
    window = manifest.get("data_window", {})
    spec = manifest.get("feature_spec", {})
    lines = [
        f"# Model card: {facts.model_name} {version}",
        "",
        f"- Built: {manifest.get('created_at', 'unknown')}",
        f"- Training window: {facts.window} ({window.get('rows', '?')} tickets loaded, "
        f"including the evaluation month)",
        f"- Evaluation month: {facts.month}, never seen in training",
        f"- Metrics: {facts.evaluation_source}",
        f"- Inputs: text fields {', '.join(spec.get('text_fields', []))}; "
        f"metadata {', '.join(spec.get('categorical', []))}",
    ]
    return "\n".join(lines)


def _data_section(facts: CardFacts) -> str:
    lines = ["## Rows per class in the training window"]
    for target, counts in facts.rows_per_class.items():
        total = sum(counts.values())
        lines += [
            "",
            f"### {target} ({total} labelled tickets)",
            "",
            "| class | rows | share |",
            "| --- | ---: | ---: |",
        ]
        for label, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"| {label} | {count} | {count / max(1, total):.1%} |")
    return "\n".join(lines)


def _metrics_section(facts: CardFacts) -> str:
    lines = [f"## Metrics per class on {facts.month}"]
    for target, metrics in facts.metrics.items():
        rows = metrics.get("rows", 0)
        lines += ["", f"### {target} ({_tickets(rows)})"]
        if not rows:
            lines += ["", "No labelled ticket of this target in the evaluation month."]
            continue
        if "mae" in metrics:
            lines += [
                "",
                f"Mean absolute error {metrics['mae']:.3f}, median {metrics['median_ae']:.3f}; "
                f"predicting the training median gives {metrics['baseline_mae']:.3f}.",
            ]
            continue
        summary = (
            f"Macro-F1 {metrics['macro_f1']:.3f}, accuracy {metrics['accuracy']:.3f}"
        )
        if "ece" in metrics:
            summary += f", expected calibration error {metrics['ece']:.3f}"
        if "roc_auc" in metrics:
            summary += f", ROC-AUC {metrics['roc_auc']:.3f}"
        lines += [
            "",
            summary + ".",
            "",
            "| class | precision | recall | F1 | tickets |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        per_class = metrics.get("per_class", {})
        for label, values in sorted(
            per_class.items(), key=lambda kv: -kv[1]["support"]
        ):
            lines.append(
                f"| {label} | {values['precision']:.3f} | {values['recall']:.3f} | "
                f"{values['f1']:.3f} | {values['support']} |"
            )
    return "\n".join(lines)


def _thresholds_section(facts: CardFacts) -> str:
    lines = [
        "## Thresholds",
        "",
        "| target | kind | threshold | per-class review thresholds | temperature |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for entry in facts.manifest.get("targets", []):
        per_class = entry.get("class_thresholds") or {}
        listed = (
            ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_class.items())) or "none"
        )
        threshold = entry.get("threshold")
        lines.append(
            f"| {entry['name']} | {entry['kind']} | "
            f"{'none' if threshold is None else format(threshold, '.2f')} | {listed} | "
            f"{entry.get('temperature', 1.0):.2f} |"
        )
    lines += [
        "",
        "A binary target flags a ticket when its probability reaches the threshold; a "
        "classifier asks for review when its top probability is below the threshold.",
    ]
    return "\n".join(lines)


def _changes_section(facts: CardFacts) -> str:
    if facts.champion_version is None:
        return (
            "## What changed against the previous champion\n\n"
            "There was no champion to compare with; this is the first version."
        )
    lines = [
        f"## What changed against the previous champion (version {facts.champion_version})",
        "",
    ]
    if facts.champion_data:
        lines.append(
            f"- Data: the champion was built on {facts.champion_data}; this version on the "
            f"window {facts.window}, evaluated on {facts.month}."
        )
    for comparison in facts.comparisons:
        lines += _comparison_lines(comparison)
    if facts.decision is not None:
        if facts.decision.passed:
            lines.append("- Promotion gate: passed.")
        else:
            lines.append("- Promotion gate: rejected, because:")
            lines += [f"    - {reason}" for reason in facts.decision.reasons]
    if facts.drift_warning:
        lines.append(f"- Data drift: {facts.drift_warning}")
    return "\n".join(lines)


def _comparison_lines(comparison: TargetComparison) -> list[str]:
    if not comparison.rows:
        return [
            f"- {comparison.target}: no evaluation ticket both models can be scored on."
        ]
    old, new = comparison.champion, comparison.challenger
    if not comparison.is_classifier:
        return [
            f"- {comparison.target}: mean absolute error {old['mae']:.3f} to {new['mae']:.3f} "
            f"on {_tickets(comparison.rows)}."
        ]
    lines = [
        f"- {comparison.target}: macro-F1 {old['macro_f1']:.3f} to {new['macro_f1']:.3f}, "
        f"expected calibration error {old['ece']:.3f} to {new['ece']:.3f}, "
        f"on {_tickets(comparison.rows)}."
    ]
    added = sorted(set(new.get("per_class", {})) - set(old.get("per_class", {})))
    removed = sorted(set(old.get("per_class", {})) - set(new.get("per_class", {})))
    if added:
        lines.append(f"    - new classes: {', '.join(added)}")
    if removed:
        lines.append(f"    - classes no longer predicted: {', '.join(removed)}")
    for label, delta in sorted(
        comparison.recall_deltas().items(), key=lambda kv: kv[1]
    ):
        if abs(delta) >= NOTABLE_RECALL_CHANGE:
            lines.append(f"    - recall of {label}: {delta:+.3f}")
    return lines


def _limits_section(facts: CardFacts) -> str:
    lines = ["## Known limits", ""]
    for target, metrics in facts.metrics.items():
        rows = metrics.get("rows", 0)
        if 0 < rows < SMALL_EVALUATION:
            lines.append(
                f"- {target}: the figures come from {rows} tickets of one month, so one "
                f"ticket moves the recall of a class with n tickets by 1/n."
            )
        small = [
            label
            for label, values in metrics.get("per_class", {}).items()
            if 0 < values["support"] < facts.min_class_support
        ]
        if small:
            lines.append(
                f"- {target}: {len(small)} classes have fewer than {facts.min_class_support} "
                f"evaluation tickets and are not judged by the recall rule of the gate: "
                f"{', '.join(sorted(small))}."
            )
    for target in _merged_targets(facts.manifest):
        lines.append(
            f"- {target['name']}: labels seen fewer than {target['min_count']} times in training "
            f"are merged into {target['rare_label']!r}; such tickets are predicted as that label."
        )
    for comparison in facts.comparisons:
        if comparison.unscored_rows:
            lines.append(
                f"- {comparison.target}: {comparison.unscored_rows} evaluation tickets carry a "
                "label one of the two models does not know and were left out of the comparison."
            )
    if facts.skipped_targets:
        lines.append(
            "- Targets without a model (too few labelled rows): "
            f"{', '.join(facts.skipped_targets)}."
        )
    lines.append(
        "- Intake models read only what is known when a ticket is registered; closure notes "
        "and handling details are not inputs."
    )
    lines += [f"- {limit}" for limit in facts.extra_limits]
    return "\n".join(lines)


def _tickets(count: int) -> str:
    return f"{count} ticket" if count == 1 else f"{count} tickets"


def _merged_targets(manifest: dict[str, Any]) -> Iterable[dict[str, Any]]:
    targets = manifest.get("mapping", {}).get("targets", {})
    trained = {entry["name"] for entry in manifest.get("targets", [])}
    for name, spec in targets.items():
        if (
            name in trained
            and spec.get("kind") == "multiclass"
            and spec.get("min_count", 1) > 1
        ):
            yield {"name": name, **spec}


__all__ = ["CardFacts", "build_model_card"]
