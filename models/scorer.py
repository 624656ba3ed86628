"""Score tickets with a bundle on onnxruntime.

This module is the serving path: it imports neither scikit-learn nor LightGBM.
Python does text normalisation and jieba tokenisation; the vectorisers,
encoders and trees run inside the ONNX graphs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping as MappingType
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.inputs import TOKENS, FeatureSpec, ticket_feeds
from features.mapping import fold
from features.taxonomy import Taxonomy, load_taxonomy
from features.text import PLACEHOLDERS, use_dictionary

from .bundle import TargetEntry, find_bundle, read_manifest
from .graphs import merge_graphs
from .similar import load_index

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

CORE_TARGETS = ("category", "root_cause", "escalation")
TOP_K = 3
# Rows per onnxruntime call. The text vectorisers return dense rows of the whole
# vocabulary, so a call on thousands of rows is slower per row than several
# calls on a few dozen.
RUN_ROWS = 64


def run_in_parts(
    session,
    feeds: dict[str, np.ndarray],
    fetch: list[str] | None = None,
    inputs: list[str] | None = None,
) -> list[np.ndarray]:
    """Run ``session`` on ``feeds`` in calls of at most :data:`RUN_ROWS` rows; join the outputs.

    ``inputs`` are the session's input names. Without them they are read from
    the session, which took about 12 µs a call on the 2-core development machine.
    """
    names = inputs if inputs is not None else [i.name for i in session.get_inputs()]
    rows = len(next(iter(feeds.values())))
    if rows <= RUN_ROWS:
        return session.run(fetch, {n: feeds[n] for n in names})
    parts = [
        session.run(fetch, {n: feeds[n][start : start + RUN_ROWS] for n in names})
        for start in range(0, rows, RUN_ROWS)
    ]
    return [np.concatenate([part[k] for part in parts]) for k in range(len(parts[0]))]


def has_words(token_string: str) -> bool:
    """Return True when a vectoriser token string contains a token other than a placeholder."""
    return any(t not in PLACEHOLDERS for t in token_string.split(" ")[1:])


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale class probabilities by a temperature (1.0 leaves them unchanged)."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


class Scorer:
    """A loaded bundle: one onnxruntime session per target."""

    def __init__(
        self,
        folder: str | Path,
        threads: int = 1,
        verify: bool = True,
        load_similar: bool = True,
    ):
        """Load the bundle in ``folder``.

        ``load_similar=False`` skips the similar-ticket index, which only
        ``include=["similar"]`` reads. Batch scoring passes it, because the index
        of a large export took about a second to load per process.
        """
        import onnxruntime as ort

        self.folder = find_bundle(folder)
        self.manifest = read_manifest(self.folder, verify=verify)
        self.spec = FeatureSpec.from_dict(self.manifest["feature_spec"])
        self.closure_spec = (
            FeatureSpec.from_dict(self.manifest["closure_feature_spec"])
            if self.manifest.get("closure_feature_spec")
            else None
        )
        self.targets = [TargetEntry.from_dict(t) for t in self.manifest["targets"]]
        dictionary = self.folder / self.manifest.get("dictionary", "it_ops.txt")
        if dictionary.is_file():
            use_dictionary(dictionary)
        taxonomy_file = self.folder / "taxonomy.toml"
        self.taxonomy: Taxonomy = (
            load_taxonomy(taxonomy_file) if taxonomy_file.is_file() else load_taxonomy()
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.sessions = {
            t.name: ort.InferenceSession(
                str(self.folder / t.file), sess_options=options, providers=["CPUExecutionProvider"]
            )
            for t in self.targets
        }
        self.entries = {t.name: t for t in self.targets}
        # Per target, for building answers: label codes as text, and for binary
        # targets the column of the positive class (the True label, else the last).
        self._label_codes = {t.name: [str(label) for label in t.labels] for t in self.targets}
        self._positive_index = {
            t.name: list(t.labels).index(True) if True in t.labels else len(t.labels) - 1
            for t in self.targets
            if t.kind == "binary"
        }
        # Taxonomy look-ups by code, filled as answers need them.
        self._category_names: dict[str, str] = {}
        self._cause_names: dict[str, str] = {}
        self._measures_by_codes: dict[tuple[str, str | None], list[str]] = {}
        self._intake = [t for t in self.targets if t.mode == "intake"]
        self._intake_session, self._merged_outputs = self._merged_session(options)
        # Bundles with fewer than two intake targets have no merged session.
        self._merged_fetch = [o for outputs in self._merged_outputs.values() for o in outputs]
        self._merged_inputs = (
            [i.name for i in self._intake_session.get_inputs()]
            if self._intake_session is not None
            else None
        )
        # The similar-ticket index; None for bundles built without one, or
        # when it was not loaded.
        self.similar = load_index(self.folder, self.manifest) if load_similar else None
        self._similar_skipped = not load_similar and bool(self.manifest.get("similar"))

    def _merged_session(self, options):
        """Build one session for all intake targets, with each target's output names.

        Returns ``(None, {})`` when there are fewer than two intake targets.
        """
        import onnx
        import onnxruntime as ort

        if len(self._intake) < 2:
            return None, {}
        graphs = {t.name: onnx.load(str(self.folder / t.file)) for t in self._intake}
        outputs = {
            name: [f"{name}/{o.name}" for o in graph.graph.output]
            for name, graph in graphs.items()
        }
        session = ort.InferenceSession(
            merge_graphs(graphs).SerializeToString(),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        return session, outputs

    @property
    def name(self) -> str:
        return self.manifest.get("name", "")

    def target(self, name: str) -> TargetEntry | None:
        return self.entries.get(name)

    def _spec_for(self, entry: TargetEntry) -> FeatureSpec:
        if entry.mode == "closure" and self.closure_spec is not None:
            return self.closure_spec
        return self.spec

    def predict(
        self, tickets: Sequence[MappingType[str, Any]], modes: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Return per target the calibrated probabilities, or predicted values.

        ``modes`` limits the targets to those modes (``intake``, ``closure``).
        """
        chosen = [t for t in self.targets if modes is None or t.mode in modes]
        if not tickets:
            return {t.name: np.zeros((0, max(1, len(t.labels)))) for t in chosen}
        feeds_by_mode: dict[str, dict[str, np.ndarray]] = {}
        results: dict[str, np.ndarray] = {}
        intake = [t for t in chosen if t.mode == "intake"]
        if intake and self._intake_session is not None:
            feeds_by_mode["intake"] = ticket_feeds(tickets, self.spec)
            results.update(self.predict_feeds(feeds_by_mode["intake"]))
        for entry in chosen:
            if entry.name in results:
                continue
            spec = self._spec_for(entry)
            if spec.mode not in feeds_by_mode:
                feeds_by_mode[spec.mode] = ticket_feeds(tickets, spec)
            results[entry.name] = self._run(entry, feeds_by_mode[spec.mode])
        return results

    def predict_feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every intake target on prepared intake feeds."""
        if self._intake_session is None:
            return {t.name: self._run(t, feeds) for t in self._intake}
        outputs = run_in_parts(
            self._intake_session, feeds, self._merged_fetch, self._merged_inputs
        )
        results: dict[str, np.ndarray] = {}
        position = 0
        for entry in self._intake:
            count = len(self._merged_outputs[entry.name])
            results[entry.name] = self._outputs(entry, outputs[position : position + count])
            position += count
        return results

    def _run(self, entry: TargetEntry, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one target's own graph, in calls of at most :data:`RUN_ROWS` rows."""
        return self._outputs(entry, run_in_parts(self.sessions[entry.name], feeds))

    @staticmethod
    def _outputs(entry: TargetEntry, outputs: list[np.ndarray]) -> np.ndarray:
        if entry.kind == "regression":
            raw = outputs[0].reshape(-1).astype(np.float64)
            return np.expm1(raw) if entry.transform == "log1p" else raw
        probabilities = outputs[1].astype(np.float64)
        return apply_temperature(probabilities, entry.temperature)

    def score(
        self, tickets: Sequence[MappingType[str, Any]], include: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Score tickets and build one answer per ticket, in input order.

        ``include`` adds parts to each answer: ``similar`` the nearest closed
        tickets, ``possible_recurrence`` and root causes recommended with their
        evidence (bundles with a similar-ticket index only); ``reasons`` the
        words and metadata values behind the top category.
        """
        from .recommend import add_context, check_include

        include = check_include(include)
        if "similar" in include and self._similar_skipped:
            raise ValueError(
                f"the scorer of {self.folder} was loaded without its similar-ticket "
                "index; load it with load_similar=True to include similar tickets"
            )
        # Closure-mode models read the closure notes, which a ticket at intake does not have.
        if not tickets:
            return []
        feeds = ticket_feeds(tickets, self.spec)
        predictions = self.predict_feeds(feeds)
        worded = [has_words(text) for text in feeds[TOKENS][:, 0]]
        # Python floats once per call, instead of a numpy scalar per value.
        rows = {name: values.tolist() for name, values in predictions.items()}
        answers = [
            self._answer(rows, i, tickets[i], worded[i]) for i in range(len(tickets))
        ]
        if include:
            add_context(self, tickets, predictions, answers, include)
        return answers

    def score_frame(self, tickets) -> pd.DataFrame:
        """Top labels of a DataFrame of canonical tickets, indexed like the input.

        Columns: ``category``, ``category_probability``, ``root_cause``, and
        ``closure_category`` with ``closure_probability`` when the bundle has a
        closure-mode category model.
        """
        import pandas as pd

        records = tickets.to_dict("records")
        predictions = self.predict(records) if records else {}
        out = pd.DataFrame(index=tickets.index)
        for entry in self.targets:
            if entry.kind == "regression" or entry.name not in predictions:
                continue
            values = predictions[entry.name]
            labels = np.asarray(entry.labels, dtype=object)
            top = labels[values.argmax(axis=1)] if len(values) else []
            probability = values.max(axis=1) if len(values) else []
            if entry.field == "category" and entry.mode == "closure":
                out["closure_category"] = top
                out["closure_probability"] = probability
            elif entry.mode == "intake" and entry.field in ("category", "root_cause"):
                out[entry.field] = top
                if entry.field == "category":
                    out["category_probability"] = probability
        return out

    # Answers -----------------------------------------------------------------

    def _category_name(self, code: str) -> str:
        name = self._category_names.get(code)
        if name is None:
            category = self.taxonomy.category(code)
            name = self._category_names[code] = category.name if category else code
        return name

    def _cause_name(self, code: str) -> str:
        name = self._cause_names.get(code)
        if name is None:
            cause = self.taxonomy.cause(code)
            name = self._cause_names[code] = cause.name if cause else code
        return name

    def _measures(self, cause_code: str, category_code: str | None) -> list[str]:
        key = (cause_code, category_code)
        measures = self._measures_by_codes.get(key)
        if measures is None:
            measures = self.taxonomy.measures_for(cause_code, category_code)
            self._measures_by_codes[key] = measures
        return list(measures)  # a copy, so that no answer shares the cached list

    def _ranked(self, entry: TargetEntry, row: list[float]) -> list[tuple[str, float]]:
        """Return labels with their probabilities, most probable first and ties in label order."""
        labels = self._label_codes[entry.name]
        if not math.isnan(sum(row)):
            # Stable, and reverse=True keeps equal values in label order.
            order = sorted(range(len(row)), key=row.__getitem__, reverse=True)
        else:  # NaN sorts last, as in numpy's argsort
            order = sorted(
                range(len(row)), key=lambda j: -row[j] if row[j] == row[j] else math.inf
            )
        return [(labels[j], row[j]) for j in order]

    def _answer(
        self,
        predictions: dict[str, list],
        i: int,
        ticket: MappingType[str, Any],
        worded: bool,
    ) -> dict[str, Any]:
        """Build the answer of ticket ``i`` from predictions converted to lists."""
        answer: dict[str, Any] = {"targets": {}}
        category_code = None
        # A ticket without a single word is answered from its metadata alone,
        # which is never enough to skip review.
        wordless = not worded
        for entry in self.targets:
            if entry.name not in predictions:
                continue
            values = predictions[entry.name][i]
            if entry.kind == "regression":
                continue
            if entry.kind == "binary":
                probability = values[self._positive_index[entry.name]]
                threshold = entry.threshold if entry.threshold is not None else 0.5
                answer["targets"][entry.name] = {
                    "probability": probability,
                    "threshold": threshold,
                    "flag": probability >= threshold,
                }
                continue
            ranked = self._ranked(entry, values)
            answer["targets"][entry.name] = {
                "top": [{"code": c, "probability": p} for c, p in ranked[:TOP_K]],
                "needs_review": wordless or self._needs_review(entry, ranked[0]),
            }
            if entry.name == "category":
                category_code = ranked[0][0]
                answer["category"] = {
                    "code": category_code,
                    "name": self._category_name(category_code),
                    "probability": ranked[0][1],
                }
                answer["alternatives"] = [
                    {"code": c, "name": self._category_name(c), "probability": p}
                    for c, p in ranked[1:]
                ]
                answer["probabilities"] = {c: p for c, p in ranked}
                answer["needs_review"] = answer["targets"]["category"]["needs_review"]
        if "root_cause" in self.entries:
            ranked = answer["targets"]["root_cause"]["top"]
            answer["root_causes"] = [
                {
                    "code": item["code"],
                    "name": self._cause_name(item["code"]),
                    "probability": item["probability"],
                    "measures": self._measures(item["code"], category_code),
                }
                for item in ranked
            ]
        if "escalation" in self.entries:
            answer["escalation"] = answer["targets"]["escalation"]
        for entry in self.targets:
            if entry.kind == "regression" and entry.name in predictions:
                value = float(predictions[entry.name][i])
                answer["targets"][entry.name] = self._regression_answer(
                    entry, value, ticket, answer
                )
        answer.setdefault("needs_review", False)
        return answer

    def _needs_review(self, entry: TargetEntry, top: tuple[str, float]) -> bool:
        code, probability = top
        threshold = entry.class_thresholds.get(code, entry.threshold)
        return threshold is not None and probability < threshold

    def _regression_answer(
        self, entry: TargetEntry, value: float, ticket: MappingType[str, Any], answer: dict
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"value": max(0.0, value)}
        limit = self._limit_for(entry, ticket, answer)
        if limit is not None:
            result["limit_hours"] = limit
            result["breach_probability"] = breach_probability(
                value, limit, entry.residual_scale
            )
        return result

    def _limit_for(self, entry: TargetEntry, ticket, answer: dict) -> float | None:
        """The time limit for a ticket: fixed, or by its given or predicted priority."""
        if entry.limits and entry.limit_by:
            given = ticket.get(entry.limit_by) if ticket else None
            if not given:
                top = answer["targets"].get(entry.limit_by, {}).get("top")
                given = top[0]["code"] if top else None
            return entry.limits.get(fold(str(given))) if given else None
        return entry.limit_hours


def breach_probability(predicted_hours: float, limit_hours: float, scale: float | None) -> float:
    """Probability that handling takes longer than ``limit_hours``.

    The regression predicts the median of log1p(hours); residuals in that space
    are taken as normal with standard deviation ``scale``, measured on held-out
    tickets at training time. Without a scale the answer is 0 or 1.
    """
    centre = math.log1p(max(0.0, predicted_hours))
    bound = math.log1p(limit_hours)
    if not scale or scale <= 0:
        return 1.0 if centre > bound else 0.0
    z = (bound - centre) / scale
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def load_scorer(uri: str | Path, threads: int = 1) -> Scorer:
    """Load a bundle from a folder, or from the registry (``models:/<name>@<alias>``)."""
    text = str(uri)
    if text.startswith(("models:/", "runs:/")):
        from .registry_io import download_bundle

        return Scorer(download_bundle(text), threads=threads)
    return Scorer(text, threads=threads)


__all__ = [
    "CORE_TARGETS",
    "Scorer",
    "apply_temperature",
    "has_words",
    "load_scorer",
    "merge_graphs",
]
