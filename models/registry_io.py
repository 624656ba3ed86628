"""Fetch bundles from the MLflow registry; shared by serving and training."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from .bundle import find_bundle

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"


def tracking_uri() -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else the embedded store."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/<name>@<alias>`` or ``models:/<name>/<version>``."""
    if not uri.startswith("models:/"):
        raise ValueError(f"model URI {uri!r} must start with models:/")
    rest = uri[len("models:/") :]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    if "/" in rest:
        name, version = rest.split("/", 1)
        return name, None, version
    raise ValueError(
        f"model URI {uri!r} names no alias or version; expected models:/<name>@champion"
    )


def resolve_version(uri: str) -> dict:
    """Return name, version, alias and creation time of the version ``uri`` points to."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri())
    name, alias, version = parse_model_uri(uri)
    mv = (
        client.get_model_version_by_alias(name, alias)
        if alias
        else client.get_model_version(name, version)
    )
    return {
        "name": name,
        "version": str(mv.version),
        "alias": alias,
        "created_at": int(mv.creation_timestamp or 0),
        "run_id": mv.run_id,
        "source": mv.source,
    }


def download_bundle(uri: str, destination: str | Path | None = None) -> Path:
    """Download the bundle behind a registry or run URI and return its folder."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    destination = Path(destination or tempfile.mkdtemp(prefix="triage-bundle-"))
    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
    folder = find_bundle(local)
    logger.info("downloaded bundle %s to %s", uri, folder)
    return folder


__all__ = [
    "DEFAULT_TRACKING_URI",
    "download_bundle",
    "parse_model_uri",
    "resolve_version",
    "tracking_uri",
]
