"""The loaded model, swapped atomically when a new bundle passes its self-test."""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import BundleError
from models.scorer import Scorer

logger = logging.getLogger(__name__)

# Tickets every new bundle must score before it may serve: a plain one, one with
# metadata no model has seen, and the inputs that stress normalisation and the
# ONNX tokenizer (full-width digits, emoji, an empty text).
SELF_TEST_TICKETS: tuple[dict[str, Any], ...] = (
    {
        "ticket_id": "self-test-1",
        "description": "核心交换机端口频繁up/down，多个业务系统访问超时",
    },
    {
        "ticket_id": "self-test-2",
        "title": "ＥＲＰ无法登录",
        "description": "２０１７年３月１２日１０：３０ 用户反馈登录报错😀，IP 10.1.2.3",
        "department": "自检未知部门",
        "channel": "自检未知渠道",
        "system": "自检未知系统",
    },
    {"ticket_id": "self-test-3", "description": ""},
)


@dataclass(frozen=True)
class LoadedModel:
    """A bundle that passed its self-test, with where it came from."""

    scorer: Scorer
    name: str
    version: str | None
    alias: str | None
    trained_at: str | None
    source: str
    loaded_at: float
    identity: str | None = None
    """The key a check compares to find a new model: the registry version, or for
    a bundle folder the SHA-256 of its manifest."""
    run_id: str | None = None
    download_root: Path | None = field(default=None, compare=False)
    """Temporary folder the bundle was downloaded to, deleted when the model retires."""

    def ref(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "trained_at": self.trained_at,
        }

    def discard_download(self) -> None:
        """Delete the downloaded bundle files; the ONNX sessions stay in memory."""
        if self.download_root is not None:
            shutil.rmtree(self.download_root, ignore_errors=True)


def self_test(scorer: Scorer) -> None:
    """Score the self-test tickets and raise BundleError unless every answer is sound.

    Each classifier must return one finite probability per declared label, summing
    to 1, and every intake-mode target must appear in every answer.
    """
    tickets = list(SELF_TEST_TICKETS)
    try:
        predictions = scorer.predict(tickets)
        answers = scorer.score(tickets)
    except BundleError:
        raise
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise BundleError(
            f"self-test: scoring failed with {type(exc).__name__}: {exc}"
        ) from exc

    for entry in scorer.targets:
        values = np.asarray(predictions.get(entry.name))
        if entry.kind == "regression":
            expected_shape: tuple[int, ...] = (len(tickets),)
        else:
            expected_shape = (len(tickets), len(entry.labels))
        if values.shape != expected_shape:
            raise BundleError(
                f"self-test: target {entry.name} returned shape {values.shape}; "
                f"expected {expected_shape} from its {len(entry.labels)} labels"
            )
        if not np.all(np.isfinite(values)):
            raise BundleError(
                f"self-test: target {entry.name} returned a NaN or infinite value"
            )
        if entry.kind != "regression":
            sums = values.sum(axis=1)
            if not np.allclose(sums, 1.0, atol=1e-3):
                raise BundleError(
                    f"self-test: target {entry.name} probabilities sum to "
                    f"{sums.min():.4f}..{sums.max():.4f}; expected 1"
                )
    # An answer at intake leaves out closure-mode targets, which need closure notes.
    intake = [t.name for t in scorer.targets if t.mode == "intake"]
    for answer in answers:
        missing = [name for name in intake if name not in answer.get("targets", {})]
        if missing:
            raise BundleError(f"self-test: targets {missing} missing from the answer")
        category = answer.get("category")
        if category is not None and not math.isfinite(category["probability"]):
            raise BundleError("self-test: category probability is not finite")


def load_bundle(
    folder: str | Path,
    threads: int,
    *,
    name: str | None = None,
    version: str | None = None,
    alias: str | None = None,
    source: str | None = None,
    identity: str | None = None,
    run_id: str | None = None,
    download_root: Path | None = None,
) -> LoadedModel:
    """Load a bundle folder (verifying its hashes), self-test it and return the model.

    ``name`` defaults to the name in the manifest, which is the name the model was
    trained under; a registry source passes the registered name instead.

    Raises BundleError when a file does not match the manifest, the ONNX graphs do
    not load or the self-test fails.
    """
    started = time.perf_counter()
    try:
        scorer = Scorer(Path(folder), threads=threads)
    except BundleError:
        raise
    except Exception as exc:  # a graph that onnxruntime cannot load
        raise BundleError(
            f"bundle {folder} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    self_test(scorer)
    model = LoadedModel(
        scorer=scorer,
        name=name or scorer.name,
        version=version if version is not None else scorer.manifest.get("version"),
        alias=alias,
        trained_at=scorer.manifest.get("created_at"),
        source=source or str(folder),
        loaded_at=time.time(),
        identity=identity,
        run_id=run_id,
        download_root=download_root,
    )
    logger.info(
        "loaded model %s version %s from %s and passed the self-test in %.2f s",
        model.name,
        model.version,
        model.source,
        time.perf_counter() - started,
    )
    return model


@dataclass(frozen=True)
class ReloadReport:
    """Outcome of one check for a new model, for ``/readyz`` and the admin endpoint."""

    outcome: str
    """``loaded``, ``unchanged``, ``rejected`` (a new bundle failed verification or
    its self-test, or the files of the loaded one changed on disk) or ``failed``
    (the registry or the download failed)."""
    checked_at: float
    version: str | None = None
    """Version the check found, whether or not it was loaded."""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "checked_at": self.checked_at,
            "version": self.version,
            "error": self.error,
        }


class ModelState:
    """The current model. Readers take one reference per request; a reload swaps it.

    A request that took the old reference finishes on the old model, because the
    swap replaces the reference and never changes a loaded model.
    """

    def __init__(self) -> None:
        self._model: LoadedModel | None = None
        self._lock = threading.Lock()
        self.last_report: ReloadReport | None = None

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Make ``model`` current and return the one it replaces."""
        with self._lock:
            previous, self._model = self._model, model
        return previous
