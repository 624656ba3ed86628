"""Temperature scaling by top class, fitted on held-out rows and built into the ONNX graph.

A classifier's probabilities are calibrated per row with the temperature of
the row's top class: ``softmax(log(p) / T[argmax p])``. Class weights make a
model under-confident about the majority class and over-confident about the
rare ones. One shared temperature moves both the same way, and a temperature
per top class can move them apart. Each row is scaled by a single
temperature, so the class that ranks first never changes. A class with
fewer than :data:`MIN_CLASS_ROWS` held-out rows predicted as it takes the
temperature fitted on all held-out rows. Isotonic regression per class was
not chosen: classes with a dozen tickets cannot support it, and it can
reorder the classes.

:func:`add_calibration` appends the scaling to the exported graph, so the
graph returns calibrated probabilities and the ordinary parity check compares
them with :meth:`models.estimators.TargetModel.predict_scores`, which applies
the same temperatures.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import minimize_scalar

from features.inputs import FeatureSpec

from .estimators import (
    PROBABILITY_FLOOR,
    FittedFeatures,
    TargetModel,
    apply_class_temperatures,
    fit_target,
)
from .thresholds import (
    DEFAULT_PRECISION,
    REPORTED_PRECISIONS,
    class_thresholds,
    coverage,
)

logger = logging.getLogger(__name__)

ECE_BINS = 15
# Share of the training rows held out to fit the temperatures and thresholds.
CALIBRATION_FRACTION = 0.2
# Under CROSS_FIT_ROWS training rows the calibration rows are the out-of-fold
# predictions of CROSS_FIT_FOLDS models instead, so that every training row
# calibrates: a fifth of 150 escalation tickets is too few for a temperature.
CROSS_FIT_ROWS = 1000
CROSS_FIT_FOLDS = 5
# A top class needs this many held-out rows for a temperature of its own.
MIN_CLASS_ROWS = 30
# Temperatures are searched over [exp(-3), exp(3)], about 0.05 to 20.
LOG_TEMPERATURE_BOUND = 3.0
PROBABILITIES = "probabilities"


def label_index(y_true, labels) -> np.ndarray:
    """Column of each true label in ``labels``; -1 for a label the model does not know."""
    index = {str(label): i for i, label in enumerate(labels)}
    return np.array([index.get(str(value), -1) for value in y_true], dtype=int)


def negative_log_likelihood(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """Mean negative log probability of the true class (rows with truth -1 are skipped)."""
    known = truth >= 0
    if not known.any():
        return 0.0
    picked = probabilities[np.flatnonzero(known), truth[known]]
    return float(-np.mean(np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0))))


def fit_temperature(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """Fit one temperature that minimises the log loss of ``probabilities``.

    ``truth`` is the column of each row's true class (see :func:`label_index`).
    Returns 1.0 when fewer than two rows have a known class.
    """
    known = truth >= 0
    if known.sum() < 2:
        return 1.0
    rows, labels = probabilities[known], truth[known]
    shared = np.zeros(rows.shape[1])

    def loss(log_temperature: float) -> float:
        scaled = apply_class_temperatures(rows, shared + np.exp(log_temperature))
        return negative_log_likelihood(scaled, labels)

    result = minimize_scalar(
        loss,
        bounds=(-LOG_TEMPERATURE_BOUND, LOG_TEMPERATURE_BOUND),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def fit_class_temperatures(
    probabilities: np.ndarray, truth: np.ndarray, min_rows: int = MIN_CLASS_ROWS
) -> tuple[list[float], float]:
    """Fit a temperature per top class, and the shared one for classes with few rows.

    Returns ``(temperatures, shared)``; ``temperatures[c]`` applies to rows
    whose top class is column ``c``.
    """
    shared = fit_temperature(probabilities, truth)
    top = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    temperatures = []
    for column in range(probabilities.shape[1]):
        rows = top == column
        if rows.sum() >= min_rows:
            temperatures.append(fit_temperature(probabilities[rows], truth[rows]))
        else:
            temperatures.append(shared)
    return temperatures, shared


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label confidence against accuracy in equal-width bins."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return 0.0
        gaps = np.abs(self.accuracy - self.confidence)
        return float(np.sum(self.counts * np.nan_to_num(gaps)) / total)


def reliability_from_confidence(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> ReliabilityBins:
    """Bin rows by top-label confidence; empty bins get NaN confidence and accuracy."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are closed on the right, for example (0.6, 0.6667], and 0.0 joins the first.
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    mean_confidence = np.full(bins, np.nan)
    mean_accuracy = np.full(bins, np.nan)
    for b in np.flatnonzero(counts):
        mean_confidence[b] = confidence[which == b].mean()
        mean_accuracy[b] = correct[which == b].mean()
    return ReliabilityBins(edges, counts, mean_confidence, mean_accuracy)


def expected_calibration_error(
    probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Expected calibration error of the top label over ``bins`` equal-width bins.

    The count-weighted mean of |accuracy - mean confidence| per bin. On a few
    hundred rows it is biased upwards: a perfectly calibrated model still
    shows a gap in each bin from the finite number of rows in it.
    """
    if not len(probabilities):
        return 0.0
    correct = probabilities.argmax(axis=1) == truth
    return reliability_from_confidence(probabilities.max(axis=1), correct, bins).ece


def ece_floor(
    confidence: np.ndarray, bins: int = ECE_BINS, draws: int = 200, seed: int = 0
) -> float:
    """Estimate the ECE a perfectly calibrated model would show with these confidences.

    Each draw makes every row right with probability equal to its confidence
    and computes the ECE; the mean over ``draws`` is the part of a measured
    ECE that comes from the number of rows alone.
    """
    confidence = np.asarray(confidence, dtype=float)
    if not len(confidence):
        return 0.0
    rng = np.random.default_rng(seed)
    values = [
        reliability_from_confidence(
            confidence, rng.random(len(confidence)) < confidence, bins
        ).ece
        for _ in range(draws)
    ]
    return float(np.mean(values))


@dataclass
class Calibration:
    """Temperatures, thresholds and held-out predictions fitted for one target."""

    temperatures: list[float]
    shared_temperature: float
    class_thresholds: dict[str, float]
    rows: np.ndarray
    probabilities: np.ndarray
    truth: np.ndarray
    log_loss_before: float
    log_loss_after: float


def calibration_split(y, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row positions into fitting and calibration rows, stratified by label.

    Every label keeps at least one fitting row, so that the model still learns
    it, and a label with a single row therefore gets no calibration row.
    """
    if not 0 < fraction < 1:
        raise ValueError(
            f"calibration fraction must be between 0 and 1, got {fraction}"
        )
    y = np.asarray(y).astype(str)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(y), dtype=bool)
    for label in sorted(set(y.tolist())):
        rows = np.flatnonzero(y == label)
        count = min(len(rows) - 1, round(len(rows) * fraction))
        if count > 0:
            held[rng.choice(rows, size=count, replace=False)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _fit_labels(kind: str, y: np.ndarray) -> np.ndarray:
    """Cast labels as :func:`models.estimators.fit_target` fits them."""
    return y.astype(bool) if kind == "binary" else y.astype(str)


def _cross_fitted(name, kind, frame, y, spec, seed, fit_options):
    """Predict every row out of fold: raw probabilities in the columns of all labels.

    A row whose label its fold's model never saw gets truth -1, so that it
    does not enter the temperatures or thresholds.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = list(np.unique(_fit_labels(kind, y)))
    column = {str(label): i for i, label in enumerate(labels)}
    probabilities = np.zeros((len(y), len(labels)))
    truth = np.full(len(y), -1)
    splitter = StratifiedKFold(CROSS_FIT_FOLDS, shuffle=True, random_state=seed)
    for fit_rows, held_rows in splitter.split(np.zeros(len(y)), y.astype(str)):
        model = fit_target(
            name,
            kind,
            frame.iloc[fit_rows],
            y[fit_rows],
            spec,
            seed=seed,
            **fit_options,
        )
        columns = [column[str(label)] for label in model.labels]
        probabilities[np.ix_(held_rows, columns)] = model.predict_raw(
            frame.iloc[held_rows]
        )
        truth[held_rows] = label_index(y[held_rows], model.labels)
        known = truth[held_rows] >= 0
        truth[held_rows[known]] = np.array(columns)[truth[held_rows[known]]]
    return np.arange(len(y)), probabilities, truth


def fit_calibrated(
    name: str,
    kind: str,
    frame,
    y,
    spec: FeatureSpec,
    *,
    fraction: float = CALIBRATION_FRACTION,
    precision: float = DEFAULT_PRECISION,
    cross_fit: bool | None = None,
    seed: int = 0,
    features: FittedFeatures | None = None,
    refit: bool = True,
    **fit_options,
) -> tuple[TargetModel, Calibration | None]:
    """Fit a classifier on all rows, with temperatures and thresholds from held-out predictions.

    The held-out predictions come from one model fitted on all but a
    stratified ``fraction`` of the rows, or with ``cross_fit`` from
    :data:`CROSS_FIT_FOLDS` models, each predicting the rows it was not fitted
    on; by default cross-fitting is used under :data:`CROSS_FIT_ROWS` rows.
    The temperatures and per-class thresholds are fitted on those
    predictions, and the returned model, fitted on all rows, keeps them. The
    tiny classes need every row in the final model. How well the temperatures
    carry over to a model fitted on more rows is what the cross-validated ECE
    of ``training.evaluate_cv`` measures. Regressions are fitted once, without
    calibration. ``fit_options`` go to :func:`models.estimators.fit_target`.

    ``features`` (one matrix row per row of ``frame``) skips the feature
    pipeline's fits. With ``refit=False`` the returned model is the one fitted
    without the held-out rows, which halves the cost on a large export. It
    needs the held-out split, so cross-fitting is not used.
    """
    y = np.asarray(y)
    if kind == "regression":
        return fit_target(name, kind, frame, y, spec, seed=seed, features=features, **fit_options), None
    if cross_fit is None:
        cross_fit = refit and 2 * CROSS_FIT_FOLDS <= len(y) < CROSS_FIT_ROWS
    if cross_fit and (features is not None or not refit):
        raise ValueError(
            "cross-fitting fits the feature pipeline per fold: pass refit=True and no features"
        )
    if cross_fit:
        held_rows, probabilities, truth = _cross_fitted(
            name, kind, frame, y, spec, seed, fit_options
        )
    else:
        fit_rows, held_rows = calibration_split(y, fraction, seed)
        first = fit_target(
            name,
            kind,
            frame.iloc[fit_rows],
            y[fit_rows],
            spec,
            seed=seed,
            features=features.take(fit_rows) if features is not None else None,
            **fit_options,
        )
        held = features.matrix[held_rows] if features is not None else None
        probabilities = first.predict_raw(frame.iloc[held_rows], held)
        truth = label_index(y[held_rows], first.labels)
    if refit:
        model = fit_target(name, kind, frame, y, spec, seed=seed, features=features, **fit_options)
    else:
        model = first
    temperatures, shared = fit_class_temperatures(probabilities, truth)
    calibrated = apply_class_temperatures(probabilities, temperatures)
    thresholds = class_thresholds(calibrated, truth, model.labels, precision)
    calibration = Calibration(
        temperatures=temperatures,
        shared_temperature=shared,
        class_thresholds=thresholds,
        rows=held_rows,
        probabilities=calibrated,
        truth=truth,
        log_loss_before=negative_log_likelihood(probabilities, truth),
        log_loss_after=negative_log_likelihood(calibrated, truth),
    )
    model.temperatures = temperatures
    model.class_thresholds = thresholds
    logger.info(
        "calibrated %s on %d %s rows: temperatures %s, log loss %.3f -> %.3f",
        name,
        len(held_rows),
        "cross-fitted" if cross_fit else "held-out",
        ", ".join(f"{t:.2f}" for t in temperatures),
        calibration.log_loss_before,
        calibration.log_loss_after,
    )
    return model, calibration


def held_out_figures(
    calibration: Calibration | None,
    model: TargetModel,
    probabilities: np.ndarray,
    y_true,
) -> dict[str, float]:
    """ECE, log loss and coverage at each reported precision on evaluation rows.

    ``probabilities`` are the model's calibrated probabilities for the rows
    whose labels are ``y_true``. The thresholds for each precision are chosen
    on the calibration rows, never on the evaluation rows.
    """
    if calibration is None or not len(probabilities):
        return {}
    truth = label_index(y_true, model.labels)
    figures = {
        "ece": expected_calibration_error(probabilities, truth),
        "log_loss": negative_log_likelihood(probabilities, truth),
        "temperature_shared": calibration.shared_temperature,
        "calibration_rows": float(len(calibration.rows)),
    }
    for precision in REPORTED_PRECISIONS:
        thresholds = class_thresholds(
            calibration.probabilities, calibration.truth, model.labels, precision
        )
        result = coverage(probabilities, truth, model.labels, thresholds, precision)
        figures[f"coverage_at_{precision:.2f}"] = result.coverage
        figures[f"precision_at_{precision:.2f}"] = result.precision
    return figures


def add_calibration(graph: onnx.ModelProto, temperatures) -> onnx.ModelProto:
    """Return a copy of a classifier graph whose ``probabilities`` output is calibrated.

    The appended nodes compute ``Softmax(Log(Clip(p)) / Gather(T, ArgMax(p)))``
    in float32, the same as :func:`models.estimators.apply_class_temperatures`.
    The ``label`` output is left as it is, because the top class does not move.
    """
    calibrated = copy.deepcopy(graph)
    body = calibrated.graph
    if PROBABILITIES not in [o.name for o in body.output]:
        raise ValueError(
            f"graph {body.name} has no {PROBABILITIES!r} output to calibrate"
        )
    raw = "probabilities_uncalibrated"
    for node in body.node:
        for i, output in enumerate(node.output):
            if output == PROBABILITIES:
                node.output[i] = raw
    body.initializer.extend(
        [
            numpy_helper.from_array(
                np.asarray(temperatures, dtype=np.float32), "calibration_temperatures"
            ),
            numpy_helper.from_array(
                np.array(PROBABILITY_FLOOR, dtype=np.float32), "calibration_floor"
            ),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "calibration_one"),
        ]
    )
    body.node.extend(
        [
            helper.make_node(
                "Clip",
                [raw, "calibration_floor", "calibration_one"],
                ["calibration_clipped"],
                name="calibration_clip",
            ),
            helper.make_node(
                "Log",
                ["calibration_clipped"],
                ["calibration_log"],
                name="calibration_log",
            ),
            helper.make_node(
                "ArgMax",
                [raw],
                ["calibration_top"],
                axis=1,
                keepdims=1,
                name="calibration_argmax",
            ),
            helper.make_node(
                "Gather",
                ["calibration_temperatures", "calibration_top"],
                ["calibration_temperature"],
                axis=0,
                name="calibration_gather",
            ),
            helper.make_node(
                "Div",
                ["calibration_log", "calibration_temperature"],
                ["calibration_logits"],
                name="calibration_divide",
            ),
            helper.make_node(
                "Softmax",
                ["calibration_logits"],
                [PROBABILITIES],
                axis=1,
                name="calibration_softmax",
            ),
        ]
    )
    for output in body.output:
        if output.name == PROBABILITIES:
            output.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.checker.check_model(calibrated)
    return calibrated


def calibrated_graph(model: TargetModel, graph: onnx.ModelProto) -> onnx.ModelProto:
    """Return the exported graph of ``model`` with its temperatures, or unchanged without them."""
    if model.kind == "regression" or model.temperatures is None:
        return graph
    return add_calibration(graph, model.temperatures)


__all__ = [
    "CALIBRATION_FRACTION",
    "CROSS_FIT_FOLDS",
    "CROSS_FIT_ROWS",
    "ECE_BINS",
    "MIN_CLASS_ROWS",
    "Calibration",
    "ReliabilityBins",
    "add_calibration",
    "calibrated_graph",
    "calibration_split",
    "ece_floor",
    "expected_calibration_error",
    "fit_calibrated",
    "fit_class_temperatures",
    "fit_temperature",
    "held_out_figures",
    "label_index",
    "negative_log_likelihood",
    "reliability_from_confidence",
]
