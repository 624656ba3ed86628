"""Champion against challenger on the same tickets, and the promotion gate.

Both models are scored through their ONNX graphs on one evaluation set. For
every classification target it judges, the gate checks four rules. The
challenger's macro-F1 must not be lower than the champion's by more than a
tolerance, and no class's recall may fall by more than a set amount. Its
calibration (expected calibration error) must not be worse, and every one of
its graphs must have passed the ONNX parity check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.export import PARITY_TOLERANCE

from .evaluate import classification_metrics, regression_metrics

logger = logging.getLogger(__name__)

CALIBRATION_BINS = 10
# Metrics computed from the same tickets can differ by float rounding alone, so
# differences below this count as equal.
EPSILON = 1e-9


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the promotion gate; every rule compares on the same tickets."""

    max_f1_drop: float = 0.01
    """Largest allowed fall of macro-F1, challenger against champion."""
    max_recall_drop: float = 0.10
    """Largest allowed fall of any one class's recall."""
    max_calibration_increase: float = 0.02
    """Largest allowed rise of expected calibration error (0 allows no rise at all)."""
    min_class_support: int = 5
    """Classes with fewer evaluation tickets are not judged by the recall rule."""
    min_rows: int = 10
    """Targets with fewer evaluation tickets both models can score are not judged."""
    targets: tuple[str, ...] | None = None
    """Targets the gate judges; None judges every classification target."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TargetComparison:
    """Champion and challenger metrics for one target on the same evaluation rows."""

    target: str
    kind: str
    rows: int
    unscored_rows: int
    """Labelled evaluation rows left out because their label is missing from one model."""
    champion: dict[str, Any]
    challenger: dict[str, Any]

    @property
    def is_classifier(self) -> bool:
        return self.kind != "regression"

    def recall_deltas(self, min_support: int = 1) -> dict[str, float]:
        """Return challenger recall minus champion recall for classes of both models."""
        ours = self.challenger.get("per_class", {})
        theirs = self.champion.get("per_class", {})
        deltas = {}
        for label, values in ours.items():
            if label in theirs and values["support"] >= min_support:
                deltas[label] = values["recall"] - theirs[label]["recall"]
        return deltas

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "kind": self.kind,
            "rows": self.rows,
            "unscored_rows": self.unscored_rows,
            "champion": self.champion,
            "challenger": self.challenger,
            "recall_deltas": self.recall_deltas() if self.is_classifier else {},
        }


@dataclass
class GateDecision:
    """Verdict of the gate: passed, or rejected with one reason per failed rule."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    """Every rule that was applied, failed or not, in words."""
    notes: list[str] = field(default_factory=list)
    """Rules that could not be applied, such as a target without evaluation rows."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_calibration_error(
    y_true, probabilities: np.ndarray, labels: Sequence, bins: int = CALIBRATION_BINS
) -> float:
    """Return the top-label expected calibration error over equal-width confidence bins.

    The error is the mean, weighted by bin size, of |accuracy - mean confidence|
    in each bin of the highest class probability.
    """
    if len(probabilities) == 0:
        return 0.0
    labels_array = np.asarray(labels)
    predicted = labels_array[probabilities.argmax(axis=1)]
    correct = predicted == np.asarray(y_true).astype(labels_array.dtype)
    confidence = probabilities.max(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            error += in_bin.mean() * gap
    return float(error)


def model_metrics(
    y_true, probabilities: np.ndarray, labels: Sequence
) -> dict[str, Any]:
    """Classification metrics plus expected calibration error and mean confidence."""
    metrics = classification_metrics(y_true, probabilities, list(labels))
    metrics["ece"] = expected_calibration_error(y_true, probabilities, labels)
    metrics["mean_confidence"] = (
        float(probabilities.max(axis=1).mean()) if len(probabilities) else 0.0
    )
    return metrics


def compare_classifier(
    target: str,
    kind: str,
    y_true: np.ndarray,
    champion: tuple[np.ndarray, Sequence],
    challenger: tuple[np.ndarray, Sequence],
) -> TargetComparison:
    """Compute metrics of both models on the rows whose label is in both label sets.

    ``champion`` and ``challenger`` are (probabilities, labels) over the same
    rows as ``y_true``. A model cannot predict a label it was not trained on,
    so such rows would measure label sets rather than models. They are left
    out and counted in ``unscored_rows``.
    """
    champion_probs, champion_labels = champion
    challenger_probs, challenger_labels = challenger
    known = set(map(_key, champion_labels)) & set(map(_key, challenger_labels))
    keep = np.array([_key(v) in known for v in y_true], dtype=bool)
    if not keep.any():
        empty = {"rows": 0}
        return TargetComparison(target, kind, 0, int(len(y_true)), empty, dict(empty))
    truth = y_true[keep]
    return TargetComparison(
        target=target,
        kind=kind,
        rows=int(keep.sum()),
        unscored_rows=int((~keep).sum()),
        champion=model_metrics(truth, champion_probs[keep], champion_labels),
        challenger=model_metrics(truth, challenger_probs[keep], challenger_labels),
    )


def compare_regressor(
    target: str, y_true: np.ndarray, champion: np.ndarray, challenger: np.ndarray
) -> TargetComparison:
    """Compute mean and median absolute error of both models, which the gate only reports."""
    if len(y_true) == 0:
        return TargetComparison(target, "regression", 0, 0, {"rows": 0}, {"rows": 0})
    baseline = float(np.median(y_true))
    return TargetComparison(
        target=target,
        kind="regression",
        rows=int(len(y_true)),
        unscored_rows=0,
        champion=regression_metrics(y_true, champion, baseline),
        challenger=regression_metrics(y_true, challenger, baseline),
    )


def apply_gate(
    comparisons: Sequence[TargetComparison],
    parity: dict[str, float],
    config: GateConfig = GateConfig(),
    champion_only: Sequence[str] = (),
) -> GateDecision:
    """Apply every rule of ``config``, so the challenger passes only if none fails.

    ``parity`` maps each challenger target to the largest probability
    difference its parity check found between the ONNX graph and the fitted
    model. ``champion_only`` names targets the champion serves and the
    challenger has no model for, for example because its window held too few
    labels. Promoting the challenger would drop them, so each one rejects it.
    """
    decision = GateDecision(passed=True)
    for name in champion_only:
        if config.targets is None or name in config.targets:
            decision.reasons.append(
                f"{name}: the challenger has no model for this target, which the "
                "champion serves"
            )
    by_target = {c.target: c for c in comparisons}
    judged = (
        list(config.targets)
        if config.targets is not None
        else [c.target for c in comparisons if c.is_classifier]
    )
    for name in judged:
        comparison = by_target.get(name)
        if comparison is None and name in champion_only:
            continue
        if comparison is None:
            decision.reasons.append(
                f"{name}: the challenger or the champion has no model for this target"
            )
            continue
        if not comparison.is_classifier:
            decision.notes.append(
                f"{name}: regression targets are reported, not judged"
            )
            continue
        if comparison.rows < config.min_rows:
            decision.notes.append(
                f"{name}: {comparison.rows} evaluation tickets with a label both models "
                f"know, fewer than {config.min_rows}; not judged"
            )
            continue
        _check_f1(comparison, config, decision)
        _check_recall(comparison, config, decision)
        _check_calibration(comparison, config, decision)
    _check_parity(parity, decision)
    decision.passed = not decision.reasons
    return decision


def _check_f1(
    comparison: TargetComparison, config: GateConfig, decision: GateDecision
) -> None:
    old = comparison.champion["macro_f1"]
    new = comparison.challenger["macro_f1"]
    decision.checks.append(
        f"{comparison.target}: macro-F1 {new:.3f} against {old:.3f} "
        f"(may fall by {config.max_f1_drop:g})"
    )
    if old - new > config.max_f1_drop + EPSILON:
        decision.reasons.append(
            f"{comparison.target}: macro-F1 fell from {old:.3f} to {new:.3f}, "
            f"by {old - new:.3f}; the gate allows {config.max_f1_drop:g}"
        )


def _check_recall(
    comparison: TargetComparison, config: GateConfig, decision: GateDecision
) -> None:
    deltas = comparison.recall_deltas(min_support=config.min_class_support)
    decision.checks.append(
        f"{comparison.target}: recall of {len(deltas)} classes with at least "
        f"{config.min_class_support} tickets (may fall by {config.max_recall_drop:g})"
    )
    for label, delta in sorted(deltas.items(), key=lambda item: item[1]):
        if -delta > config.max_recall_drop + EPSILON:
            old = comparison.champion["per_class"][label]["recall"]
            new = comparison.challenger["per_class"][label]["recall"]
            support = comparison.challenger["per_class"][label]["support"]
            decision.reasons.append(
                f"{comparison.target}: recall of class {label} fell from {old:.3f} to "
                f"{new:.3f} on {support} tickets; the gate allows a fall of "
                f"{config.max_recall_drop:g}"
            )


def _check_calibration(
    comparison: TargetComparison, config: GateConfig, decision: GateDecision
) -> None:
    old = comparison.champion["ece"]
    new = comparison.challenger["ece"]
    decision.checks.append(
        f"{comparison.target}: expected calibration error {new:.3f} against {old:.3f} "
        f"(may rise by {config.max_calibration_increase:g})"
    )
    if new - old > config.max_calibration_increase + EPSILON:
        decision.reasons.append(
            f"{comparison.target}: calibration is worse, expected calibration error rose "
            f"from {old:.3f} to {new:.3f}; the gate allows a rise of "
            f"{config.max_calibration_increase:g}"
        )


def _check_parity(parity: dict[str, float], decision: GateDecision) -> None:
    decision.checks.append(
        f"ONNX parity of {len(parity)} targets (limit {PARITY_TOLERANCE:.0e})"
    )
    for name, difference in sorted(parity.items()):
        if difference is None or not difference <= PARITY_TOLERANCE:
            decision.reasons.append(
                f"{name}: ONNX parity failed, max |dp| {difference} is above "
                f"{PARITY_TOLERANCE:.0e}"
            )


def _key(label: Any) -> str:
    """Return a label as text, because manifests store binary labels as JSON booleans."""
    return str(label)


def plot_comparison(comparisons: Sequence[TargetComparison], path: Path) -> Path:
    """Save per-class recall of champion and challenger, one panel per classifier target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fonts import use_cjk_font

    use_cjk_font()
    shown = [c for c in comparisons if c.is_classifier and c.rows]
    fig, axes = plt.subplots(
        len(shown) or 1, 1, figsize=(9, 2.8 * max(1, len(shown))), squeeze=False
    )
    for ax, comparison in zip(axes[:, 0], shown):
        per_class = comparison.challenger["per_class"]
        labels = [label for label, v in per_class.items() if v["support"] > 0]
        old = [
            comparison.champion["per_class"].get(label, {}).get("recall", 0.0)
            for label in labels
        ]
        new = [per_class[label]["recall"] for label in labels]
        x = np.arange(len(labels))
        ax.bar(x - 0.2, old, width=0.4, label="champion")
        ax.bar(x + 0.2, new, width=0.4, label="challenger")
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("recall")
        ax.set_title(
            f"{comparison.target}: macro-F1 {comparison.champion['macro_f1']:.3f} (champion) vs "
            f"{comparison.challenger['macro_f1']:.3f} (challenger), {comparison.rows} tickets",
            fontsize=9,
        )
        ax.legend(fontsize=7)
    if not shown:
        axes[0, 0].text(
            0.5, 0.5, "no classifier target had evaluation rows", ha="center"
        )
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "GateConfig",
    "GateDecision",
    "TargetComparison",
    "apply_gate",
    "compare_classifier",
    "compare_regressor",
    "expected_calibration_error",
    "model_metrics",
    "plot_comparison",
]
