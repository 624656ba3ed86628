"""Feedback labels merged into training data: which label wins, what is counted, which
rows stay out of evaluation, and ``triage train --feedback`` on the real ICT records."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.loading import load_tickets
from features.mapping import fold
from training.feedback import merge_feedback, merge_feedback_rows

MODEL = "triage-under-test"


@pytest.fixture(scope="module")
def demo_load(demo_csv):
    return load_tickets(demo_csv)


def feedback_row(ticket_id: str, row_id: int = 1, minutes: int = 0, **chosen) -> dict:
    """A row as ``FeedbackStore.feedback_rows`` returns it."""
    values = {
        "id": row_id,
        "ticket_id": ticket_id,
        "model_name": MODEL,
        "model_version": "1",
        "recorded_at": datetime(2025, 1, 1) + timedelta(minutes=minutes),
        "chosen_category": None,
        "chosen_root_cause": None,
        "chosen_escalation": None,
    }
    values.update({f"chosen_{k}": v for k, v in chosen.items()})
    return values


def other_category(code: str) -> str:
    codes = ["system", "human", "third_party", "other"]
    return codes[(codes.index(code) + 1) % len(codes)]


def test_merge_correction_replaces_export_label(demo_load):
    ticket = demo_load.tickets.iloc[0]
    corrected = other_category(ticket["category"])

    merged = merge_feedback_rows(
        demo_load, [feedback_row(ticket["ticket_id"], category=corrected)], MODEL
    )

    assert merged.load.tickets.loc[0, "category"] == corrected
    assert merged.counts["category"] == {"confirmed": 0, "corrected": 1, "added": 0}
    assert demo_load.tickets.loc[0, "category"] == ticket["category"]  # input unchanged
    change = merged.changes.iloc[0]
    assert change["export_label"] == ticket["category"]
    assert change["feedback_label"] == corrected
    assert change["outcome"] == "corrected"


def test_merge_newest_feedback_wins(demo_load):
    ticket_id = demo_load.tickets.loc[1, "ticket_id"]
    rows = [
        feedback_row(ticket_id, row_id=2, minutes=10, category="human"),
        feedback_row(ticket_id, row_id=1, minutes=0, category="system"),
        feedback_row(ticket_id, row_id=3, minutes=20, root_cause="crash"),
    ]

    merged = merge_feedback_rows(demo_load, rows, MODEL)

    assert merged.load.tickets.loc[1, "category"] == "human"
    assert merged.load.tickets.loc[1, "root_cause"] == "crash"
    assert len(merged.changes) == 2


def test_merge_counts_each_outcome(demo_load):
    tickets = demo_load.tickets.copy()
    tickets["escalated"] = tickets["escalated"].astype(object)
    tickets.loc[2, "escalated"] = None
    load = replace(demo_load, tickets=tickets)
    first, second, third = (tickets.loc[i, "ticket_id"] for i in range(3))
    rows = [
        feedback_row(first, category=tickets.loc[0, "category"]),
        feedback_row(second, category=other_category(tickets.loc[1, "category"])),
        feedback_row(third, escalation=True),
        feedback_row("not-in-export", category="human"),
    ]

    merged = merge_feedback_rows(load, rows, MODEL)

    assert merged.counts["category"] == {"confirmed": 1, "corrected": 1, "added": 0}
    assert merged.counts["escalation"] == {"confirmed": 0, "corrected": 0, "added": 1}
    assert merged.totals() == {"confirmed": 1, "corrected": 1, "added": 1}
    assert merged.unmatched_tickets == 1
    assert merged.feedback_rows == 4
    assert merged.load.tickets.loc[2, "escalated"] is True


def test_merge_folds_unmapped_labels(demo_load):
    """The loader folds labels without a value map (NFKC, case); feedback must match."""
    ticket_id = demo_load.tickets.loc[3, "ticket_id"]

    merged = merge_feedback_rows(
        demo_load, [feedback_row(ticket_id, root_cause=" CRASH ")], MODEL
    )

    assert merged.load.tickets.loc[3, "root_cause"] == fold(" CRASH ") == "crash"


def test_feedback_only_rows_leave_evaluation(demo_load, tracking_dir):
    import mlflow

    tickets = demo_load.tickets.copy()
    tickets.loc[[4, 5, 6], "root_cause"] = None
    load = replace(demo_load, tickets=tickets)
    rows = [
        feedback_row(tickets.loc[4, "ticket_id"], row_id=1, root_cause="crash"),
        feedback_row(tickets.loc[5, "ticket_id"], row_id=2, root_cause="crash"),
        {
            **feedback_row(tickets.loc[6, "ticket_id"], row_id=3, root_cause="crash"),
            "model_name": "another-model",
        },
        feedback_row(tickets.loc[7, "ticket_id"], row_id=4, root_cause="crash"),
    ]
    merged = merge_feedback_rows(load, rows, MODEL)
    only = merged.feedback_only["root_cause"]
    assert np.flatnonzero(only).tolist() == [4, 5]

    eval_rows = np.zeros(len(tickets), dtype=bool)
    eval_rows[[5, 6, 7, 8]] = True
    mlflow.set_experiment("feedback-merge-tests")
    with mlflow.start_run() as run:
        kept = merged.keep_out_of_evaluation("root_cause", eval_rows)
        unchanged = merged.keep_out_of_evaluation("category", eval_rows)
    assert np.flatnonzero(kept).tolist() == [6, 7, 8]
    assert unchanged.tolist() == eval_rows.tolist()
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged["feedback.root_cause.excluded_from_evaluation"] == 1
    assert "feedback.category.excluded_from_evaluation" not in logged


def test_merge_feedback_reads_store(demo_load, tmp_path):
    from serving.feedback import FeedbackEntry, FeedbackStore

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(url)
    ticket = demo_load.tickets.iloc[0]
    corrected = other_category(ticket["category"])
    store.record_feedback(
        FeedbackEntry(
            request_id="r-1",
            ticket_id=ticket["ticket_id"],
            model_name=MODEL,
            model_version="1",
            operator_id="op",
            suggested={"category": ticket["category"]},
            chosen={"category": corrected},
        )
    )
    store.close()

    merged = merge_feedback(demo_load, url, MODEL)

    assert merged.load.tickets.loc[0, "category"] == corrected
    assert merged.source == url
    assert merged.counts["category"]["corrected"] == 1


def test_merge_feedback_rejects_missing_database(demo_load, tmp_path):
    with pytest.raises(FileNotFoundError, match="feedback database .* not found"):
        merge_feedback(demo_load, f"sqlite:///{tmp_path / 'missing.db'}", MODEL)


# The real ICT records --------------------------------------------------------


ICT_MODEL = "ict-feedback"
CATEGORIES = ["system", "human", "third_party", "other"]


def plan_feedback(tickets: pd.DataFrame) -> tuple[list[dict], dict]:
    """Feedback bodies for the ICT records and the counts the merge must report.

    The plan has 20 corrections of category and root cause on old tickets, which are
    training rows. All of them name one rare cause, so that the cause can become a
    class of the model only through them. Two entries confirm a category. Four add an
    escalation label to the newest unlabelled tickets, three of them on suggestions of
    the model being trained. One names a ticket the export lacks.
    """
    by_age = tickets.sort_values("created_at", kind="stable")
    counts = tickets["root_cause"].value_counts()
    rare = next(
        label for label, n in counts.sort_values().items() if n <= 2 and label != "其他"
    )
    old = by_age.iloc[: int(len(by_age) * 0.4)]
    corrected = old[old["root_cause"].notna() & (old["root_cause"] != rare)].head(20)
    confirmed = old.drop(corrected.index).head(2)
    unlabelled = by_age[by_age["escalated"].isna()].tail(4)

    def body(index: int, ticket, chosen: dict, model: str = ICT_MODEL) -> dict:
        return {
            "request_id": f"ict-{index}",
            "ticket_id": str(ticket["ticket_id"]),
            "model": {"name": model, "version": "1"},
            "suggested": {"category": ticket["category"]},
            "chosen": chosen,
            "operator_id": "op-ict",
        }

    bodies = []
    for _, ticket in corrected.iterrows():
        chosen = {"category": other_category(ticket["category"]), "root_cause": rare}
        bodies.append(body(len(bodies), ticket, chosen))
    for _, ticket in confirmed.iterrows():
        bodies.append(body(len(bodies), ticket, {"category": ticket["category"]}))
    for position, (_, ticket) in enumerate(unlabelled.iterrows()):
        model = ICT_MODEL if position < 3 else "another-model"
        bodies.append(body(len(bodies), ticket, {"escalation": True}, model))
    missing = {**bodies[0], "request_id": "ict-missing", "ticket_id": "no-such-ticket"}
    bodies.append(missing)

    expected = {
        "rare_cause": rare,
        "corrected": corrected,
        "added": unlabelled,
        "own_added": unlabelled.head(3),
        "metrics": {
            "feedback.rows": len(bodies),
            "feedback.unmatched_tickets": 1,
            "feedback.category.corrected": 20,
            "feedback.category.confirmed": 2,
            "feedback.category.added": 0,
            "feedback.root_cause.corrected": 20,
            "feedback.escalation.added": 4,
            "feedback.corrected": 40,
            "feedback.confirmed": 2,
            "feedback.added": 4,
        },
    }
    return bodies, expected


def record_through_api(bodies: list[dict], db_url: str, bundle) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    settings = Settings(
        _env_file=None, bundle_dir=str(bundle), poll_seconds=0, feedback_db_url=db_url
    )
    with TestClient(create_app(settings)) as client:
        for body in bodies:
            response = client.post("/v1/feedback", json=body)
            assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def ict_bundle(ict_path, ict_mapping, tracking_dir):
    """A bundle trained on the ICT records, whose model has the causes of their feedback."""
    from training.train import train

    result = train(
        ict_path, ict_mapping, model_name="ict-served", register=False, progress=False
    )
    return result.bundle_dir


@pytest.mark.slow
def test_train_feedback_on_ict_records(
    ict_path, ict_mapping, tracking_dir, ict_bundle, tmp_path
):
    """``triage train --feedback`` with 20 corrections recorded through the API logs
    the merge counts and trains on the corrected labels."""
    from click.testing import CliRunner
    from mlflow import MlflowClient

    from training.cli import main
    from training.train import time_split

    tickets = load_tickets(ict_path, ict_mapping).tickets
    bodies, expected = plan_feedback(tickets)
    db_url = f"sqlite:///{tmp_path / 'feedback.db'}"
    record_through_api(bodies, db_url, ict_bundle)

    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(ict_path),
            "--mapping",
            str(ict_mapping),
            "--model-name",
            ICT_MODEL,
            "--feedback",
            db_url,
            "--no-register",
        ],
    )
    assert result.exit_code == 0, result.output
    run_id = re.search(r"^run (\w+);", result.output, re.MULTILINE).group(1)

    client = MlflowClient()
    run = client.get_run(run_id)
    for name, value in expected["metrics"].items():
        assert run.data.metrics.get(name) == value, name
    assert run.data.params["feedback"] == db_url

    # The escalation rows labelled only by feedback on this model left evaluation.
    merged = tickets.copy()
    own = merged["ticket_id"].isin(expected["own_added"]["ticket_id"]).to_numpy()
    merged.loc[
        merged["ticket_id"].isin(expected["added"]["ticket_id"]), "escalated"
    ] = True
    labelled = merged["escalated"].notna().to_numpy()
    eval_rows = np.zeros(len(merged), dtype=bool)
    eval_rows[np.flatnonzero(labelled)[time_split(merged[labelled], 0.2)]] = True
    excluded = int((eval_rows & own).sum())
    assert excluded > 0
    assert run.data.metrics["feedback.escalation.excluded_from_evaluation"] == excluded

    artifacts = tmp_path / "artifacts"
    labels_csv = client.download_artifacts(
        run_id, "feedback/labels.csv", str(artifacts)
    )
    changes = pd.read_csv(labels_csv, dtype=str)
    corrected = changes[
        (changes["target"] == "category") & (changes["outcome"] == "corrected")
    ]
    wanted = {
        str(t): other_category(c)
        for t, c in zip(
            expected["corrected"]["ticket_id"], expected["corrected"]["category"]
        )
    }
    assert dict(zip(corrected["ticket_id"], corrected["feedback_label"])) == wanted

    # The rare cause occurs at most twice in the export, below min_count (8), so
    # it is a class of the trained root-cause model only through the corrections.
    manifest_path = client.download_artifacts(run_id, "manifest.json", str(artifacts))
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    labels = next(t["labels"] for t in manifest["targets"] if t["name"] == "root_cause")
    assert expected["rare_cause"] in labels
