"""End-to-end training: MLflow run, registration, aliases, reproducibility, leakage."""

import hashlib

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from features.loading import load_tickets
from models.scorer import Scorer
from training.cli import main
from training.train import intake_spec, train


def test_demo_training_registers_champion(demo_trained):
    client = MlflowClient()
    version = client.get_model_version_by_alias("demo-test", "champion")
    assert str(version.version) == demo_trained.version
    run = client.get_run(demo_trained.run_id)
    assert run.data.metrics["rows_read"] == 1200
    for target in ("category", "root_cause", "escalation"):
        assert f"{target}.macro_f1" in run.data.metrics
    assert "escalation.roc_auc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(demo_trained.run_id, "plots")}
    assert "plots/confusion_category.png" in artifacts


def test_demo_category_beats_chance(demo_trained):
    metrics = demo_trained.metrics["category"]
    assert metrics["macro_f1"] > 0.5
    assert metrics["accuracy"] > 0.6


def test_same_seed_same_model(demo_csv, demo_trained, tmp_path):
    again = train(demo_csv, None, model_name="demo-repeat", progress=False, register=False)
    for target in ("category", "root_cause", "escalation"):
        first = (demo_trained.bundle_dir / "targets" / f"{target}.onnx").read_bytes()
        second = (again.bundle_dir / "targets" / f"{target}.onnx").read_bytes()
        assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest(), target


def test_closure_notes_never_reach_intake_models(demo_csv, tracking_dir, tmp_path):
    """A closure-note token that gives the label away must not be learnt at intake."""
    tickets = pd.read_csv(demo_csv)
    tickets["closure_notes"] = "泄漏标记" + tickets["category"]
    path = tmp_path / "leaky.csv"
    tickets.to_csv(path, index=False)
    result = train(path, None, model_name="leak-test", progress=False, register=False)
    assert "closure_notes" not in result.spec.text_fields
    for name, model in result.models.items():
        vocabulary = model.pipeline.named_steps["features"].named_transformers_["tokens"].vocabulary_
        assert not [t for t in vocabulary if "泄漏" in t], name
    scorer = Scorer(result.bundle_dir)
    ticket = {"description": "系统无法登录", "closure_notes": "泄漏标记human"}
    changed = dict(ticket, closure_notes="泄漏标记system")
    np.testing.assert_array_equal(
        scorer.predict([ticket])["category"], scorer.predict([changed])["category"]
    )


def test_intake_spec_uses_mapping_stages(ict_path, ict_mapping):
    load = load_tickets(ict_path, ict_mapping)
    spec = intake_spec(load.mapping)
    assert spec.text_fields == ("description",)
    assert "anomaly_detail" in spec.categorical
    assert "closure_notes" not in spec.text_fields


@pytest.mark.slow
def test_train_command_on_ict_records(ict_path, ict_mapping, tracking_dir, tmp_path, monkeypatch):
    import tempfile

    temporary = tmp_path / "temp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    result = CliRunner().invoke(
        main, ["train", "--data", str(ict_path), "--mapping", str(ict_mapping), "--model-name", "ict-test"]
    )
    assert result.exit_code == 0, result.output
    assert not list(temporary.glob("triage-train-*")), "the command leaves its work folder"
    assert "rows: 829 read" in result.output
    assert "rejected" in result.output
    for target in ("category", "root_cause", "escalation"):
        assert f"{target}: macro-F1" in result.output
    client = MlflowClient()
    version = client.get_model_version_by_alias("ict-test", "champion")
    run = client.get_run(version.run_id)
    assert run.data.metrics["rows_read"] == 829
    assert mlflow.get_tracking_uri().startswith("sqlite:///")


def test_unexpected_error_is_one_line(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    result = CliRunner().invoke(main, ["train", "--data", str(broken)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    assert "--verbose" in lines[0]


@pytest.mark.parametrize("source", ["ict", "demo"])
def test_closure_tokens_match_whole_texts(source, ict_path, ict_mapping, demo_csv):
    from features.inputs import ticket_text
    from features.text import token_string
    from training.train import closure_tokens

    load = load_tickets(ict_path, ict_mapping) if source == "ict" else load_tickets(demo_csv, None)
    tickets = load.tickets
    intake = intake_spec(load.mapping)
    closure = intake_spec(load.mapping, mode="closure")
    records = tickets[list(closure.text_fields)].to_dict("records")
    intake_tokens = [token_string(ticket_text(r, intake)) for r in records]
    expected = [token_string(ticket_text(r, closure)) for r in records]
    assert closure_tokens(tickets, intake, closure, intake_tokens, progress=False) == expected


def test_closure_tokens_across_a_date():
    from features.inputs import ticket_text
    from features.text import token_string
    from training.train import closure_tokens

    tickets = pd.DataFrame(
        {
            "title": ["", "", "数据库"],
            "description": ["故障发生于2017年", "14", "服务器宕机。"],
            "closure_notes": ["3月12日恢复", ":30重启完成", None],
        }
    )
    intake = intake_spec_for(("title", "description"))
    closure = intake_spec_for(("title", "description", "closure_notes"))
    records = tickets.to_dict("records")
    intake_tokens = [token_string(ticket_text(r, intake)) for r in records]
    expected = [token_string(ticket_text(r, closure)) for r in records]
    # The first two tickets join a date and a time across the line break, so
    # their tokens differ from the tokens of the two parts put together.
    parts = [t + token_string(r["closure_notes"])[len("<doc>") :] for t, r in zip(intake_tokens, records)]
    assert parts[0] != expected[0]
    assert parts[1] != expected[1]
    assert closure_tokens(tickets, intake, closure, intake_tokens, progress=False) == expected


def intake_spec_for(text_fields):
    from features.inputs import FeatureSpec

    return FeatureSpec(text_fields=text_fields, categorical=())
