"""Shared fixtures: the real ICT export, demo data and a trained demo bundle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ICT_DATA = Path(
    os.environ.get("TRIAGE_ICT_DATA", REPO.parent / "shared" / "data" / "ict" / "ict_fault_records.csv")
)
ICT_MAPPING = REPO / "features" / "mappings" / "ict.toml"


@pytest.fixture(scope="session", autouse=True)
def feedback_store_in_tmp(tmp_path_factory):
    """Keep the default feedback store out of the working directory."""
    if "TRIAGE_FEEDBACK_DB_URL" not in os.environ:
        folder = tmp_path_factory.mktemp("feedback")
        os.environ["TRIAGE_FEEDBACK_DB_URL"] = f"sqlite:///{folder / 'feedback.db'}"
    yield


@pytest.fixture(scope="session")
def ict_path() -> Path:
    if not ICT_DATA.is_file():
        pytest.skip(f"ICT records not found at {ICT_DATA}; set TRIAGE_ICT_DATA")
    return ICT_DATA


@pytest.fixture(scope="session")
def ict_mapping() -> Path:
    return ICT_MAPPING


@pytest.fixture(scope="session")
def tracking_dir(tmp_path_factory) -> Path:
    """One embedded MLflow store for the whole session, outside the repository."""
    folder = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return folder


@pytest.fixture(scope="session")
def demo_csv(tmp_path_factory) -> Path:
    from training.demo_data import write_demo_data

    return write_demo_data(1200, tmp_path_factory.mktemp("demo") / "tickets.csv", seed=0)


@pytest.fixture(scope="session")
def demo_trained(demo_csv, tracking_dir):
    """A demo model trained, exported, parity-checked and registered once per session."""
    from training.train import train

    return train(demo_csv, None, model_name="demo-test", progress=False)


@pytest.fixture(scope="session")
def demo_bundle(demo_trained) -> Path:
    return demo_trained.bundle_dir
