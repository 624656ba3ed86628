"""Metrics and plots for fitted targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    median_absolute_error,
    precision_recall_fscore_support,
    roc_auc_score,
)


def classification_metrics(y_true, probabilities: np.ndarray, labels: list) -> dict[str, Any]:
    """Accuracy, macro-F1, top-2 accuracy and per-class precision, recall, F1 and support."""
    labels_array = np.asarray(labels)
    y_true = np.asarray(y_true).astype(labels_array.dtype)
    predicted = labels_array[probabilities.argmax(axis=1)]
    index = {label: i for i, label in enumerate(labels)}
    true_index = np.array([index.get(v, -1) for v in y_true])
    order = np.argsort(-probabilities, axis=1)
    top2 = np.mean([t in row[:2] for t, row in zip(true_index, order)]) if len(y_true) else 0.0
    present = [label for label in labels if label in set(y_true.tolist())]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=labels, zero_division=0
    )
    metrics: dict[str, Any] = {
        "rows": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, predicted)) if len(y_true) else 0.0,
        "macro_f1": float(
            f1_score(y_true, predicted, labels=present, average="macro", zero_division=0)
        )
        if present
        else 0.0,
        "top2_accuracy": float(top2),
        "per_class": {
            str(label): {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }
    if len(labels) == 2 and len(set(y_true.tolist())) == 2:
        positive = labels[1]
        scores = probabilities[:, 1]
        truth = (y_true == positive).astype(int)
        metrics["roc_auc"] = float(roc_auc_score(truth, scores))
        metrics["pr_auc"] = float(average_precision_score(truth, scores))
    return metrics


def regression_metrics(y_true, predicted, baseline: float) -> dict[str, Any]:
    y_true = np.asarray(y_true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    return {
        "rows": int(len(y_true)),
        "mae": float(mean_absolute_error(y_true, predicted)),
        "median_ae": float(median_absolute_error(y_true, predicted)),
        "baseline_mae": float(mean_absolute_error(y_true, np.full_like(y_true, baseline))),
        "baseline_median_ae": float(
            median_absolute_error(y_true, np.full_like(y_true, baseline))
        ),
    }


def plot_confusion(y_true, probabilities: np.ndarray, labels: list, title: str, path: Path) -> Path:
    """Save a confusion-matrix heat map (rows true, columns predicted) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fonts import use_cjk_font

    use_cjk_font()
    labels_array = np.asarray(labels)
    predicted = labels_array[probabilities.argmax(axis=1)]
    y_true = np.asarray(y_true).astype(labels_array.dtype)
    matrix = confusion_matrix(y_true, predicted, labels=labels)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(x) for x in labels], rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), [str(x) for x in labels], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["classification_metrics", "plot_confusion", "regression_metrics"]
