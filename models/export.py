"""ONNX export of fitted target pipelines, and the parity check against them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from lightgbm import LGBMClassifier, LGBMRegressor
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes,
    calculate_linear_regressor_output_shapes,
)
from skl2onnx.operator_converters.text_vectoriser import convert_sklearn_text_vectorizer
from skl2onnx.shape_calculators.text_vectorizer import (
    calculate_sklearn_text_vectorizer_output_shapes,
)
from sklearn.feature_extraction.text import CountVectorizer

from features.inputs import TOKENS, FeatureSpec, frame_feeds
from features.pipeline import WordVectorizer

from .estimators import TargetModel

logger = logging.getLogger(__name__)

# onnxruntime's StringNormalizer fails to start when the locale it is given is
# not installed; C.UTF-8 exists on every glibc system, en_US.UTF-8 often does not.
STRING_LOCALE = "C.UTF-8"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
PARITY_TOLERANCE = 1e-4

update_registered_converter(
    LGBMClassifier,
    "LightGbmLGBMClassifier",
    calculate_linear_classifier_output_shapes,
    convert_lightgbm,
    options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
)
update_registered_converter(
    LGBMRegressor,
    "LightGbmLGBMRegressor",
    calculate_linear_regressor_output_shapes,
    convert_lightgbm,
    options={"split": None},
)
update_registered_converter(
    WordVectorizer,
    "TriageWordVectorizer",
    calculate_sklearn_text_vectorizer_output_shapes,
    convert_sklearn_text_vectorizer,
    options={
        "tokenexp": None,
        "separators": None,
        "nan": [True, False],
        "keep_empty_string": [True, False],
        "locale": None,
    },
)


class ParityError(RuntimeError):
    """The ONNX graph disagrees with the fitted model it was exported from."""


def initial_types(spec: FeatureSpec) -> list:
    types = [(TOKENS, StringTensorType([None, 1]))]
    types += [(name, StringTensorType([None, 1])) for name in spec.categorical]
    types += [(name, FloatTensorType([None, 1])) for name in spec.numeric]
    return types


def to_onnx(model: TargetModel, spec: FeatureSpec) -> onnx.ModelProto:
    """Convert a fitted target pipeline into one ONNX graph.

    Classifiers output ``label`` and ``probabilities`` (ZipMap off, columns in
    the order of ``model.labels``); regressors output ``variable``.
    """
    pipeline = model.pipeline
    options: dict = {
        id(transformer): {"separators": [" "], "locale": STRING_LOCALE}
        for transformer in pipeline.named_steps["features"].named_transformers_.values()
        if isinstance(transformer, CountVectorizer)
    }
    if model.kind != "regression":
        options[id(pipeline.named_steps["model"])] = {"zipmap": False}
    graph = convert_sklearn(
        pipeline,
        name=f"triage_{model.name}",
        initial_types=initial_types(spec),
        options=options,
        target_opset=TARGET_OPSET,
    )
    return graph


def onnx_scores(session, feeds: dict[str, np.ndarray], model: TargetModel) -> np.ndarray:
    outputs = session.run(None, feeds)
    if model.kind == "regression":
        raw = outputs[0].reshape(-1).astype(np.float64)
        return np.expm1(raw) if model.transform == "log1p" else raw
    return outputs[1].astype(np.float64)


@dataclass
class ParityReport:
    target: str
    rows: int
    max_abs_diff: float
    argmax_mismatches: int
    worst_rows: list[tuple[int, float]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.argmax_mismatches == 0 and self.max_abs_diff <= PARITY_TOLERANCE


def check_parity(
    model: TargetModel, graph: onnx.ModelProto, frame, row_ids=None
) -> ParityReport:
    """Compare onnxruntime with the fitted pipeline on every row of ``frame``.

    Classifiers must agree on the argmax and within 1e-4 on every probability;
    regressors within 1e-4 relative to max(1, |prediction|), on the target scale.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = model.predict_scores(frame)
    actual = onnx_scores(session, frame_feeds(frame), model)
    ids = list(row_ids) if row_ids is not None else list(range(len(frame)))
    if model.kind == "regression":
        diff = np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))
        mismatches = 0
    else:
        diff = np.abs(actual - expected).max(axis=1)
        mismatches = int((actual.argmax(axis=1) != expected.argmax(axis=1)).sum())
    order = np.argsort(-diff)[:5]
    report = ParityReport(
        target=model.name,
        rows=len(frame),
        max_abs_diff=float(diff.max()) if len(diff) else 0.0,
        argmax_mismatches=mismatches,
        worst_rows=[(ids[i], float(diff[i])) for i in order],
    )
    logger.info(
        "parity %s: %d rows, max |dp| %.2e, %d argmax mismatches",
        model.name, report.rows, report.max_abs_diff, report.argmax_mismatches,
    )
    return report


def require_parity(report: ParityReport) -> None:
    if not report.passed:
        worst = ", ".join(f"{rid} ({d:.2e})" for rid, d in report.worst_rows)
        raise ParityError(
            f"ONNX export of target {report.target} disagrees with the fitted model: "
            f"max |dp| {report.max_abs_diff:.2e} (limit {PARITY_TOLERANCE:.0e}), "
            f"{report.argmax_mismatches} argmax mismatches over {report.rows} rows; "
            f"worst rows: {worst}"
        )


__all__ = [
    "PARITY_TOLERANCE",
    "ParityError",
    "ParityReport",
    "check_parity",
    "onnx_scores",
    "require_parity",
    "to_onnx",
]
