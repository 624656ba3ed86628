"""MLflow tracking set-up, model registration and aliases."""

from __future__ import annotations

import getpass
import logging
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from models.registry_io import DEFAULT_TRACKING_URI, tracking_uri

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "ticket-triage"
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"

BUNDLE_REQUIREMENTS = [
    "mlflow>=3.1",
    "onnxruntime>=1.18",
    "jieba>=0.42.1",
    "numpy>=1.26",
    "pandas>=2.2",
]


def setup_tracking(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at ``uri`` (the embedded SQLite store by default) and pick the experiment.

    With the embedded store, artifacts go under ``mlruns/artifacts`` next to the database.
    """
    uri = uri or tracking_uri()
    if uri == DEFAULT_TRACKING_URI:
        Path("mlruns").mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///") :]).resolve()
            location = (db.parent / "artifacts").as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return uri


def log_bundle(bundle_dir: Path, model_name: str) -> str:
    """Log the bundle as a pyfunc model, register it and return the new version."""
    from models.pyfunc import BundleModel

    info = mlflow.pyfunc.log_model(
        name="bundle",
        python_model=BundleModel(),
        artifacts={"bundle": str(bundle_dir)},
        registered_model_name=model_name,
        pip_requirements=BUNDLE_REQUIREMENTS,
    )
    version = str(info.registered_model_version)
    logger.info("registered %s version %s", model_name, version)
    return version


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def record_alias(client: MlflowClient, name: str, alias: str, version: str, action: str) -> None:
    """Move ``alias`` to ``version`` and tag the version with who did it and when."""
    client.set_registered_model_alias(name, alias, version)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    client.set_model_version_tag(name, version, f"{alias}.set_by", getpass.getuser())
    client.set_model_version_tag(name, version, f"{alias}.set_at", stamp)
    client.set_model_version_tag(name, version, f"{alias}.action", action)


def assign_new_version(name: str, version: str) -> list[str]:
    """Give a new version ``challenger``, and ``champion`` when there is none yet."""
    client = MlflowClient()
    record_alias(client, name, CHALLENGER, version, "train")
    aliases = [CHALLENGER]
    if alias_version(client, name, CHAMPION) is None:
        record_alias(client, name, CHAMPION, version, "train: first version")
        aliases.append(CHAMPION)
    return aliases


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_EXPERIMENT",
    "PREVIOUS",
    "alias_version",
    "assign_new_version",
    "log_bundle",
    "record_alias",
    "setup_tracking",
]
