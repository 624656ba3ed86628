"""``POST /v1/feedback``, ``GET /v1/feedback/stats`` and the scored-ticket log, on the
real app with the demo bundle and a SQLite store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from serving.feedback import FeedbackStore

TICKET = {
    "ticket_id": "T-100",
    "title": "ERP无法登录",
    "description": "ERP系统登录后报错，数据库连接超时，多个用户受影响",
    "department": "财务部",
    "channel": "电话",
    "system": "ERP系统",
}


def feedback(request_id: str = "fb-1", **overrides) -> dict:
    body = {
        "request_id": request_id,
        "ticket_id": "T-100",
        "model": {"name": "demo-test", "version": "1"},
        "score_request_id": "score-1",
        "suggested": {"category": "system", "root_cause": "crash", "escalation": False},
        "chosen": {"category": "system", "root_cause": "crash", "escalation": False},
        "operator_id": "op-7",
    }
    body.update(overrides)
    return body


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'feedback.db'}"


@pytest.fixture
def make_client(demo_bundle, settings_factory):
    """Start app clients on the demo bundle; each stops after the test."""
    from serving.app import create_app

    clients = []

    def make(**overrides) -> TestClient:
        settings = settings_factory(bundle_dir=str(demo_bundle), **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client, db_url) -> TestClient:
    return make_client(feedback_db_url=db_url)


def stored_rows(db_url: str) -> list[dict]:
    store = FeedbackStore(db_url)
    try:
        return store.feedback_rows()
    finally:
        store.close()


def errors_of(response) -> list[dict]:
    body = response.json()
    assert body["request_id"], body
    return body["errors"]


# Recording --------------------------------------------------------------------


def test_feedback_accepted_is_committed(client, db_url):
    response = client.post("/v1/feedback", json=feedback())

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] is True
    assert answer["duplicate"] is False
    assert answer["ticket_id"] == "T-100"
    rows = stored_rows(db_url)
    assert [r["id"] for r in rows] == [answer["feedback_id"]]
    assert rows[0]["operator_id"] == "op-7"
    assert rows[0]["score_request_id"] == "score-1"


def test_feedback_correction_not_accepted(client, db_url):
    body = feedback(chosen={"category": "human", "root_cause": "misoperation"})
    response = client.post("/v1/feedback", json=body)

    assert response.status_code == 200, response.text
    assert response.json()["accepted"] is False
    row = stored_rows(db_url)[0]
    assert row["suggested_category"] == "system"
    assert row["chosen_category"] == "human"
    assert row["chosen_root_cause"] == "misoperation"
    assert row["chosen_escalation"] is None


def test_feedback_repeat_is_idempotent(client, db_url):
    first = client.post("/v1/feedback", json=feedback())
    second = client.post("/v1/feedback", json=feedback())

    assert second.status_code == 200, second.text
    assert second.json()["duplicate"] is True
    assert second.json()["feedback_id"] == first.json()["feedback_id"]
    assert len(stored_rows(db_url)) == 1


def test_feedback_reused_request_id_conflicts(client, db_url):
    client.post("/v1/feedback", json=feedback())
    response = client.post("/v1/feedback", json=feedback(chosen={"category": "other"}))

    assert response.status_code == 409
    assert response.json()["detail"].startswith("The request id was already used")
    assert len(stored_rows(db_url)) == 1


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"chosen": {}}, "chosen", "chosen has no label"),
        (
            {"chosen": {"category": "network"}},
            "chosen.category",
            "'network' is not a category",
        ),
        (
            {"suggested": {"category": "sys"}},
            "suggested.category",
            "'sys' is not a category",
        ),
        (
            {"chosen": {"category": "system", "root_cause": "power_cut"}},
            "chosen.root_cause",
            "'power_cut' is not a root-cause code",
        ),
        (
            {"suggested": {"category": "system", "root_cause": "Crash"}},
            "suggested.root_cause",
            "'Crash' is not a root-cause code",
        ),
        ({"operator_id": ""}, "operator_id", "at least 1 character"),
        ({"request_id": "x" * 201}, "request_id", "at most 200 characters"),
        ({"request_id": "   "}, "request_id", "should match pattern"),
        (
            {"chosen": {"category": "human", "escalation": "yes"}},
            "chosen.escalation",
            "valid boolean",
        ),
        (
            {"chosen": {"category": "human", "priority": "高"}},
            "chosen.priority",
            "Extra inputs",
        ),
    ],
)
def test_feedback_rejects_invalid_body(client, db_url, change, field, message):
    response = client.post("/v1/feedback", json=feedback(**change))

    assert response.status_code == 422, response.text
    errors = errors_of(response)
    assert errors[0]["field"] == field
    assert message in errors[0]["message"]
    assert stored_rows(db_url) == []


def test_feedback_unknown_cause_lists_causes(client, db_url):
    body = feedback(chosen={"category": "human", "root_cause": "typo"})
    response = client.post("/v1/feedback", json=body)

    assert response.status_code == 422, response.text
    error = errors_of(response)[0]
    assert error["field"] == "chosen.root_cause"
    assert error["type"] == "enum"
    labels = client.get("/v1/labels").json()
    for cause in labels["root_causes"]:
        assert cause["code"] in error["message"]
    assert stored_rows(db_url) == []


def test_feedback_accepts_model_only_cause(client, db_url):
    """A cause label of the model that the taxonomy does not list, as an
    organisation's mapping produces, is a valid root cause."""
    entry = client.app.state.service.state.model.scorer.target("root_cause")
    entry.labels.append("数据库bug")
    body = feedback(chosen={"category": "system", "root_cause": "数据库bug"})
    response = client.post("/v1/feedback", json=body)

    assert response.status_code == 200, response.text
    assert stored_rows(db_url)[0]["chosen_root_cause"] == "数据库bug"


def test_feedback_accepts_cause_of_other_category(client, db_url):
    """The model ranks categories and causes independently, so an accepted
    suggestion can pair a category with a cause filed under another one."""
    labels = {"category": "system", "root_cause": "misoperation"}
    response = client.post(
        "/v1/feedback", json=feedback(suggested=labels, chosen=labels)
    )

    assert response.status_code == 200, response.text
    assert response.json()["accepted"] is True


def test_feedback_without_model_checks_causes(db_url, tracking_dir, settings_factory):
    from serving.app import create_app

    settings = settings_factory(
        model_uri="models:/no-such-model@champion", feedback_db_url=db_url
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 503
        shipped = client.post("/v1/feedback", json=feedback("a"))
        unknown = client.post(
            "/v1/feedback",
            json=feedback("b", chosen={"category": "system", "root_cause": "数据库bug"}),
        )

    assert shipped.status_code == 200, shipped.text
    assert unknown.status_code == 503, unknown.text
    assert unknown.headers["retry-after"] == "5"
    assert "chosen.root_cause '数据库bug'" in unknown.json()["detail"]
    assert [row["request_id"] for row in stored_rows(db_url)] == ["a"]


def test_known_root_causes_merge_sources():
    from types import SimpleNamespace

    from features.taxonomy import load_taxonomy
    from serving.feedback_api import known_root_causes

    taxonomy = load_taxonomy()
    target = SimpleNamespace(labels=["crash", "其他"])
    index = SimpleNamespace(table=SimpleNamespace(root_cause_labels=["其他", "接口超时"]))
    scorer = SimpleNamespace(
        taxonomy=taxonomy, target=lambda name: target, similar=index
    )
    codes = known_root_causes(SimpleNamespace(scorer=scorer))

    shipped = [cause.code for cause in taxonomy.causes()]
    assert codes == shipped + ["其他", "接口超时"]
    assert known_root_causes(None) == shipped


def test_feedback_missing_field_rejected(client):
    body = feedback()
    del body["ticket_id"]
    response = client.post("/v1/feedback", json=body)

    assert response.status_code == 422
    assert errors_of(response)[0]["field"] == "ticket_id"


def test_feedback_unavailable_store_returns_503(make_client, tmp_path):
    """A store that cannot be opened (here a path under a regular file) leaves
    scoring up and makes the feedback endpoints return 503."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    client = make_client(feedback_db_url=f"sqlite:///{blocker / 'feedback.db'}")

    assert client.post("/v1/score", json=TICKET).status_code == 200
    response = client.post("/v1/feedback", json=feedback())
    assert response.status_code == 503
    assert response.json()["detail"].startswith("The feedback store is unavailable")
    assert client.get("/v1/feedback/stats").status_code == 503


def test_feedback_needs_key_when_keys_set(make_client, db_url, keys):
    client = make_client(feedback_db_url=db_url, api_keys=[keys.client])

    assert client.post("/v1/feedback", json=feedback()).status_code == 401
    assert client.get("/v1/feedback/stats").status_code == 401
    headers = {"Authorization": f"Bearer {keys.client}"}
    response = client.post("/v1/feedback", json=feedback(), headers=headers)
    assert response.status_code == 200, response.text
    stats = client.get("/v1/feedback/stats", headers={"X-API-Key": keys.client})
    assert stats.json()["total"] == 1


# Stats ------------------------------------------------------------------------


def test_stats_report_acceptance_per_category(client):
    client.post("/v1/feedback", json=feedback("a"))
    client.post("/v1/feedback", json=feedback("b", chosen={"category": "human"}))
    client.post(
        "/v1/feedback",
        json=feedback(
            "c", suggested={"category": "human"}, chosen={"category": "human"}
        ),
    )

    response = client.get("/v1/feedback/stats")
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["total"] == 3
    assert stats["accepted"] == 2
    assert stats["acceptance_rate"] == pytest.approx(2 / 3)
    by_category = {g["category"]: g for g in stats["by_category"]}
    assert by_category["system"]["acceptance_rate"] == pytest.approx(0.5)
    assert by_category["system"]["name"] == "系统故障"
    assert by_category["human"]["total"] == 1


def test_stats_period_and_version_filters(client):
    client.post("/v1/feedback", json=feedback("a"))
    client.post(
        "/v1/feedback", json=feedback("b", model={"name": "demo-test", "version": "2"})
    )

    version_2 = client.get("/v1/feedback/stats", params={"model_version": "2"}).json()
    assert version_2["total"] == 1
    assert version_2["model_version"] == "2"
    past = client.get(
        "/v1/feedback/stats",
        params={"since": "2020-01-01T00:00:00Z", "until": "2020-02-01T00:00:00+08:00"},
    ).json()
    assert past["total"] == 0
    assert past["acceptance_rate"] is None
    assert past["until"] == "2020-01-31T16:00:00Z"


def test_stats_reject_empty_period(client):
    response = client.get(
        "/v1/feedback/stats",
        params={"since": "2024-02-01T00:00:00", "until": "2024-01-01"},
    )

    assert response.status_code == 422
    error = errors_of(response)[0]
    assert error["field"] == "since"
    assert "must be before until" in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("since", "0001-01-01T00:00:00+14:00"), ("until", "9999-12-31T23:59:59-14:00")],
)
def test_stats_reject_time_out_of_range(client, field, value):
    response = client.get("/v1/feedback/stats", params={field: value})

    assert response.status_code == 422
    error = errors_of(response)[0]
    assert error["field"] == field
    assert "out of range" in error["message"]


# Scored-ticket log ------------------------------------------------------------


def scored_rows(client: TestClient, db_url: str) -> list[dict]:
    assert client.app.state.feedback.scored_log.flush(timeout=30)
    store = FeedbackStore(db_url)
    try:
        return store.scored_rows()
    finally:
        store.close()


def test_scoring_logs_scored_ticket(client, db_url):
    response = client.post("/v1/score", json=TICKET)
    assert response.status_code == 200, response.text
    answer = response.json()

    rows = scored_rows(client, db_url)
    assert len(rows) == 1
    row = rows[0]
    assert row["request_id"] == answer["request_id"]
    assert row["ticket_id"] == "T-100"
    assert row["model_name"] == answer["model"]["name"]
    assert row["model_version"] == answer["model"]["version"]
    assert row["category"] == answer["category"]["code"]
    assert row["root_cause"] == answer["root_causes"][0]["code"]
    assert row["escalation_probability"] == pytest.approx(
        answer["escalation"]["probability"]
    )
    assert row["latency_ms"] > 0
    assert row["answer"]["category"]["code"] == answer["category"]["code"]
    assert row["description"] is None
    assert row["title"] is None


def test_logged_answer_drops_taxonomy_text(client, db_url):
    answer = client.post("/v1/score", json=TICKET).json()

    logged = scored_rows(client, db_url)[0]["answer"]
    assert logged["category"] == {
        "code": answer["category"]["code"],
        "probability": pytest.approx(answer["category"]["probability"]),
    }
    assert [c["code"] for c in logged["root_causes"]] == [
        c["code"] for c in answer["root_causes"]
    ]
    assert all("measures" not in c and "name" not in c for c in logged["root_causes"])
    assert logged["targets"].keys() == answer["targets"].keys()


def test_batch_scoring_logs_each_scored_ticket(client, db_url):
    tickets = [dict(TICKET, ticket_id=f"B-{i}") for i in range(3)]
    tickets.insert(1, {"description": 5})
    response = client.post("/v1/score/batch", json={"tickets": tickets})
    assert response.status_code == 200, response.text
    items = response.json()["items"]

    rows = scored_rows(client, db_url)
    assert sorted(r["ticket_id"] for r in rows) == ["B-0", "B-1", "B-2"]
    by_ticket = {r["ticket_id"]: r for r in rows}
    for item in items:
        if item["status"] != "scored":
            continue
        answer = item["answer"]
        row = by_ticket[answer["ticket_id"]]
        assert row["request_id"] == answer["request_id"]
        assert row["category"] == answer["category"]["code"]


def test_scoring_logs_text_when_allowed(make_client, db_url):
    client = make_client(feedback_db_url=db_url, store_ticket_text=True)
    client.post("/v1/score", json=TICKET)

    row = scored_rows(client, db_url)[0]
    assert row["description"] == TICKET["description"]
    assert row["title"] == TICKET["title"]


def test_scoring_log_off_writes_nothing(make_client, db_url):
    client = make_client(feedback_db_url=db_url, log_scored_tickets=False)
    assert client.post("/v1/score", json=TICKET).status_code == 200

    assert client.app.state.feedback.scored_log is None
    store = FeedbackStore(db_url)
    try:
        assert store.scored_rows() == []
    finally:
        store.close()
