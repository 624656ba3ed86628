"""The loaded model, swapped atomically when a new bundle passes its self-test."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from models.bundle import BundleError
from models.scorer import Scorer

logger = logging.getLogger(__name__)

SELF_TEST_TICKET = {
    "ticket_id": "self-test",
    "description": "核心交换机端口频繁up/down，多个业务系统访问超时",
    "department": None,
    "channel": None,
    "system": None,
}


@dataclass(frozen=True)
class LoadedModel:
    scorer: Scorer
    name: str
    version: str | None
    alias: str | None
    trained_at: str | None
    source: str
    loaded_at: float

    def ref(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "trained_at": self.trained_at,
        }


def self_test(scorer: Scorer) -> None:
    """Score a known ticket; raise BundleError unless the answer is well formed."""
    answer = scorer.score([SELF_TEST_TICKET])[0]
    for target in scorer.targets:
        if target.name not in answer["targets"]:
            raise BundleError(f"self-test: target {target.name} missing from the answer")
    probabilities = answer.get("probabilities")
    if probabilities is not None and abs(sum(probabilities.values()) - 1.0) > 1e-3:
        raise BundleError(f"self-test: category probabilities sum to {sum(probabilities.values())}")


def load_model(uri: str | None, bundle_dir: str | None, threads: int) -> LoadedModel:
    """Load a bundle from a folder or the registry and self-test it."""
    if bundle_dir:
        scorer = Scorer(Path(bundle_dir), threads=threads)
        version, alias, source = scorer.manifest.get("version"), None, str(bundle_dir)
    else:
        from models.registry_io import download_bundle, resolve_version

        info = resolve_version(uri)
        scorer = Scorer(download_bundle(f"models:/{info['name']}/{info['version']}"), threads=threads)
        version, alias, source = info["version"], info["alias"], uri
    self_test(scorer)
    model = LoadedModel(
        scorer=scorer,
        name=scorer.name,
        version=version,
        alias=alias,
        trained_at=scorer.manifest.get("created_at"),
        source=source,
        loaded_at=time.time(),
    )
    logger.info("loaded model %s version %s from %s", model.name, model.version, source)
    return model


class ModelState:
    """Holds the current model; readers take a reference, writers swap it under a lock."""

    def __init__(self) -> None:
        self._model: LoadedModel | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def swap(self, model: LoadedModel) -> None:
        with self._lock:
            self._model = model
