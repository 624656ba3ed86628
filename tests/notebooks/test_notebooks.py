"""The notebooks run top to bottom on small data and are stored without outputs."""

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from training.demo_data import write_demo_data
from training.evaluate_cv import evaluate

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CANONICAL = REPO / "features" / "mappings" / "canonical.toml"


def _run(name, monkeypatch, env):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return notebook


def _text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def small_tickets(tmp_path_factory):
    return write_demo_data(
        240, tmp_path_factory.mktemp("notebooks") / "tickets.csv", seed=7
    )


@pytest.mark.parametrize("name", ["exploration.ipynb", "error_analysis.ipynb"])
def test_notebook_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == []
        assert cell.execution_count is None


def test_exploration_runs_on_demo_tickets(small_tickets, monkeypatch):
    notebook = _run(
        "exploration.ipynb",
        monkeypatch,
        {"TRIAGE_DATA": small_tickets, "TRIAGE_MAPPING": CANONICAL},
    )
    text = _text(notebook)
    assert "240 rows read, 240 used" in text
    assert "category: " in text
    assert "spellings" in text


def test_exploration_runs_on_ict_sample(ict_path, tmp_path, monkeypatch):
    sample = tmp_path / "ict_sample.csv"
    pd.read_csv(ict_path, dtype=str, keep_default_na=False).head(150).to_csv(
        sample, index=False
    )
    notebook = _run(
        "exploration.ipynb",
        monkeypatch,
        {
            "TRIAGE_DATA": sample,
            "TRIAGE_MAPPING": REPO / "features" / "mappings" / "ict.toml",
        },
    )
    text = _text(notebook)
    assert "150 rows read" in text
    assert "形成原因" in text


def test_error_analysis_runs_on_evaluation(small_tickets, tracking_dir, monkeypatch):
    result = evaluate(
        small_tickets, None, folds=2, repeats=1, targets=["category"], progress=False
    )
    notebook = _run(
        "error_analysis.ipynb", monkeypatch, {"TRIAGE_RUN_ID": result.run_id}
    )
    text = _text(notebook)
    assert result.run_id in text
    assert "240 tickets from" in text
    assert "macro_f1" in text
