"""Targets declared in a mapping train, export and serve without code changes."""

import textwrap

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.inputs import feature_frame
from models.scorer import Scorer
from serving.app import create_app
from serving.settings import Settings
from training.train import train

FIELDS = """
[fields]
ticket_id = "ticket_id"
created_at = "created_at"
title = "title"
description = "description"
department = "department"
channel = "channel"
system = "system"
closed_at = "closed_at"
handling_hours = "handling_hours"
closure_notes = "closure_notes"

[targets.category]
kind = "multiclass"
column = "category"

[targets.root_cause]
kind = "multiclass"
column = "root_cause"

[targets.escalation]
kind = "binary"
column = "escalated"
field = "escalated"

[targets.escalation.values]
"true" = true
"false" = false
"""

CALLBACK = """
[targets.callback]
kind = "binary"
column = "需要回访"
stage = "closure"

[targets.callback.values]
"是" = true
"否" = false
"""


@pytest.fixture(scope="module")
def custom_export(demo_csv, tmp_path_factory):
    folder = tmp_path_factory.mktemp("custom")
    tickets = pd.read_csv(demo_csv).head(700)
    rng = np.random.default_rng(3)
    # Call-backs follow escalations and the phone channel, with some noise.
    likely = tickets["escalated"].astype(bool) | (tickets["channel"] == "电话")
    noisy = rng.random(len(tickets)) < 0.1
    tickets["需要回访"] = np.where(likely ^ noisy, "是", "否")
    data = folder / "tickets.csv"
    tickets.to_csv(data, index=False)
    return folder, data


def write_mapping(folder, text, name):
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_new_binary_target_trains_and_serves(custom_export, tracking_dir):
    folder, data = custom_export
    mapping = write_mapping(folder, 'name = "custom"\n' + FIELDS + CALLBACK, "custom.toml")
    result = train(data, mapping, model_name="custom-target", progress=False)
    assert "callback" in result.metrics
    assert result.parity["callback"] <= 1e-4
    assert result.metrics["callback"]["roc_auc"] > 0.7

    scorer = Scorer(result.bundle_dir)
    tickets = pd.read_csv(data).head(20)
    tickets["created_at"] = pd.to_datetime(tickets["created_at"])
    expected = result.models["callback"].predict_scores(feature_frame(tickets, result.spec))
    actual = scorer.predict(tickets.to_dict("records"))["callback"]
    assert np.abs(actual - expected).max() <= 1e-4

    app = create_app(Settings(bundle_dir=str(result.bundle_dir)))
    with TestClient(app) as client:
        response = client.post("/v1/score", json={"description": "客户来电投诉，系统无法登录"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer["targets"]) == {"category", "root_cause", "escalation", "callback"}
        callback = answer["targets"]["callback"]
        assert 0.0 <= callback["probability"] <= 1.0
        assert isinstance(callback["flag"], bool)
        model = client.get("/v1/model").json()
        intake = [t["name"] for t in model["targets"] if t["mode"] == "intake"]
        assert intake == ["category", "root_cause", "escalation", "callback"]
        closure = [t["name"] for t in model["targets"] if t["mode"] == "closure"]
        assert closure == ["category_closure"]


def test_bundle_with_original_three_targets_serves(custom_export, tracking_dir):
    folder, data = custom_export
    mapping = write_mapping(folder, 'name = "three"\n' + FIELDS, "three.toml")
    result = train(data, mapping, model_name="three-targets", progress=False, register=False)
    app = create_app(Settings(bundle_dir=str(result.bundle_dir)))
    with TestClient(app) as client:
        answer = client.post("/v1/score", json={"description": "数据库宕机"}).json()
    assert set(answer["targets"]) == {"category", "root_cause", "escalation"}
    assert len(answer["root_causes"]) == 3
    total = answer["category"]["probability"] + sum(
        a["probability"] for a in answer["alternatives"]
    )
    assert abs(total - 1.0) < 1e-4


def test_demo_answer_lists_routing_priority_and_hours(demo_bundle):
    scorer = Scorer(demo_bundle)
    answer = scorer.score(
        [{"description": "ERP系统全部用户无法登录，应用服务器宕机", "system": "ERP"}]
    )[0]
    routing = answer["targets"]["handling_group"]["top"]
    assert len(routing) == 3
    assert routing[0]["probability"] >= routing[1]["probability"] >= routing[2]["probability"]
    hours = answer["targets"]["handling_hours"]
    assert hours["value"] > 0
    assert hours["limit_hours"] in (8.0, 24.0, 72.0)
    assert 0.0 <= hours["breach_probability"] <= 1.0
    given = scorer.score([{"description": "ERP宕机", "priority": "低"}])[0]
    assert given["targets"]["handling_hours"]["limit_hours"] == 72.0
