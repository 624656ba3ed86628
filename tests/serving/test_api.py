"""The scoring contract and input rules, against the real app on the demo bundle."""

from __future__ import annotations

import gzip
import json
import logging
import math

import pytest
from fastapi.testclient import TestClient

TICKET = {
    "ticket_id": "T-1",
    "created_at": "2025-03-12T10:30:00",
    "title": "ERP无法登录",
    "description": "ERP系统登录后报错，数据库连接超时，多个用户受影响",
    "department": "财务部",
    "channel": "电话",
    "system": "ERP系统",
}


def errors_of(response) -> list[dict]:
    body = response.json()
    assert body["request_id"], body
    return body["errors"]


# Contract ---------------------------------------------------------------------


def test_score_answer_has_contract_fields(open_client, demo_trained):
    response = open_client.post("/v1/score", json=TICKET)
    assert response.status_code == 200, response.text
    answer = response.json()

    assert answer["ticket_id"] == "T-1"
    assert answer["request_id"] == response.headers["x-request-id"]
    category = answer["category"]
    assert category["code"] in {"system", "human", "third_party", "other"}
    assert category["name"] and category["name"] != category["code"]
    alternatives = answer["alternatives"]
    assert len(alternatives) == 3
    assert {a["code"] for a in alternatives} | {category["code"]} == {
        "system",
        "human",
        "third_party",
        "other",
    }
    total = category["probability"] + sum(a["probability"] for a in alternatives)
    assert math.isclose(total, 1.0, abs_tol=1e-4)
    assert all(a["probability"] <= category["probability"] for a in alternatives)

    causes = answer["root_causes"]
    assert len(causes) == 3
    assert [c["probability"] for c in causes] == sorted(
        (c["probability"] for c in causes), reverse=True
    )
    assert all(c["name"] for c in causes)
    assert any(c["measures"] for c in causes)

    escalation = answer["escalation"]
    assert 0.0 <= escalation["probability"] <= 1.0
    assert escalation["flag"] == (escalation["probability"] >= escalation["threshold"])
    assert isinstance(answer["needs_review"], bool)
    assert set(answer["targets"]) >= {"category", "root_cause", "escalation"}

    model = answer["model"]
    assert model["name"] == demo_trained.model_name
    assert model["trained_at"]


def test_score_keeps_caller_request_id(open_client):
    response = open_client.post(
        "/v1/score", json=TICKET, headers={"X-Request-ID": "dispatch-42"}
    )
    assert response.status_code == 200
    assert response.json()["request_id"] == "dispatch-42"
    assert response.headers["x-request-id"] == "dispatch-42"


def test_score_replaces_unsafe_request_id(open_client):
    response = open_client.post(
        "/v1/score", json=TICKET, headers={"X-Request-ID": "a b\tc"}
    )
    assert response.status_code == 200
    assert response.json()["request_id"] != "a b\tc"
    assert len(response.json()["request_id"]) == 32


def test_score_accepts_unknown_metadata(open_client):
    ticket = {
        "description": "打印机卡纸无法打印",
        "department": "从未见过的部门",
        "channel": "信鸽",
        "system": "新上线系统X",
        "extra": {"deployment": "云上", "site": None},
    }
    response = open_client.post("/v1/score", json=ticket)
    assert response.status_code == 200, response.text
    assert response.json()["category"]["code"]


def test_score_title_alone_is_enough(open_client):
    response = open_client.post("/v1/score", json={"title": "邮件系统无法发送"})
    assert response.status_code == 200, response.text


def test_batch_keeps_order_with_bad_item_in_middle(open_client, same_scores):
    tickets = [
        {"ticket_id": "B-0", "description": "核心交换机端口频繁up/down"},
        {"ticket_id": "B-1", "description": "用户误删了共享目录里的文件"},
        {"ticket_id": "B-2", "description": 42},
        {"ticket_id": "B-3", "description": "供应商接口返回500，订单无法同步"},
        {"ticket_id": "B-4", "description": "机房停电导致服务中断"},
    ]
    response = open_client.post("/v1/score/batch", json={"tickets": tickets})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scored"] == 4
    assert body["invalid"] == 1
    items = body["items"]
    assert [item["index"] for item in items] == [0, 1, 2, 3, 4]
    assert [item["status"] for item in items] == [
        "scored",
        "scored",
        "invalid",
        "scored",
        "scored",
    ]
    assert items[2]["answer"] is None
    assert items[2]["errors"] == [
        {
            "field": "tickets.2.description",
            "message": "Input should be a valid string",
            "type": "string_type",
        }
    ]
    for index in (0, 1, 3, 4):
        answer = items[index]["answer"]
        assert answer["ticket_id"] == f"B-{index}"
        single = open_client.post("/v1/score", json=tickets[index]).json()
        same_scores(answer, single)


def test_batch_calls_scorer_once(open_app, open_client):
    scorer = open_app.state.service.state.model.scorer
    calls = []
    original = scorer.score

    def counting_score(tickets, **options):
        calls.append(len(tickets))
        return original(tickets, **options)

    scorer.score = counting_score
    try:
        tickets = [{"description": f"服务器{i}号磁盘告警"} for i in range(20)]
        tickets[7] = {"description": ""}
        response = open_client.post("/v1/score/batch", json={"tickets": tickets})
    finally:
        del scorer.score
    assert response.status_code == 200, response.text
    assert calls == [19]
    assert response.json()["items"][7]["errors"][0]["field"] == "tickets.7.description"


def test_batch_item_that_is_not_an_object(open_client):
    response = open_client.post(
        "/v1/score/batch",
        json={"tickets": ["网络故障", {"description": "网络故障"}, None]},
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["invalid", "scored", "invalid"]
    assert items[0]["errors"][0]["field"] == "tickets.0"
    assert items[2]["errors"][0]["field"] == "tickets.2"


def test_batch_rejects_1001_tickets(open_client):
    tickets = [{"description": "网络中断"}] * 1001
    response = open_client.post("/v1/score/batch", json={"tickets": tickets})
    assert response.status_code == 422
    [error] = errors_of(response)
    assert error["field"] == "tickets"
    assert "1001 tickets" in error["message"]
    assert "limit is 1000" in error["message"]


def test_batch_accepts_1000_tickets(open_client):
    tickets = [
        {"ticket_id": str(i), "description": f"第{i}台服务器宕机"} for i in range(1000)
    ]
    response = open_client.post("/v1/score/batch", json={"tickets": tickets})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert len(items) == 1000
    assert [item["answer"]["ticket_id"] for item in items] == [
        str(i) for i in range(1000)
    ]


def test_batch_rejects_empty_list(open_client):
    response = open_client.post("/v1/score/batch", json={"tickets": []})
    assert response.status_code == 422
    assert errors_of(response)[0]["field"] == "tickets"


def test_openapi_documents_versioned_routes(open_client):
    response = open_client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    for path in ("/v1/score", "/v1/score/batch", "/v1/model", "/v1/admin/reload"):
        assert path in schema["paths"], path
    score = schema["paths"]["/v1/score"]["post"]
    assert score["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "422" in score["responses"]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    docs = open_client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_model_info_lists_labels_and_metrics(open_client, demo_trained):
    response = open_client.get("/v1/model")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["name"] == demo_trained.model_name
    assert sorted(info["labels"]["category"]) == [
        "human",
        "other",
        "system",
        "third_party",
    ]
    assert info["labels"]["escalation"] == [False, True]
    assert 0.0 < info["thresholds"]["escalation"] < 1.0
    assert info["metrics"]["category"]["macro_f1"] > 0
    assert info["feature_fields"]["text_fields"] == ["title", "description"]
    assert "department" in info["feature_fields"]["categorical"]
    assert {t["name"] for t in info["targets"]} >= {
        "category",
        "root_cause",
        "escalation",
    }


def test_probes_report_loaded_model(open_client, demo_trained):
    assert open_client.get("/healthz").json() == {"status": "ok"}
    ready = open_client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["self_test"] == "passed"
    assert body["model"]["name"] == demo_trained.model_name
    assert body["auth"] == "open"


def test_metrics_count_requests_and_categories(open_client):
    answer = open_client.post("/v1/score", json=TICKET).json()
    open_client.post("/v1/score", json={"description": 1})
    text = open_client.get("/metrics").text
    assert (
        'triage_http_requests_total{method="POST",route="/v1/score",status="200"}'
        in text
    )
    assert (
        'triage_http_requests_total{method="POST",route="/v1/score",status="422"}'
        in text
    )
    assert (
        'triage_http_request_duration_seconds_bucket{le="0.5",method="POST",'
        'route="/v1/score",status="200"}' in text
    )
    assert f'triage_scores_total{{category="{answer["category"]["code"]}"}}' in text
    assert (
        f'triage_model_info{{alias="",name="{answer["model"]["name"]}",version=""}} 1.0'
        in text
    )
    assert "triage_scoring_duration_seconds_count" in text


def test_unknown_path_is_json_404(open_client):
    response = open_client.get("/v2/score")
    assert response.status_code == 404
    assert response.json()["detail"] == "No endpoint has this path."


def test_wrong_method_is_json_405(open_client):
    response = open_client.get("/v1/score")
    assert response.status_code == 405
    assert response.json()["detail"] == "The endpoint does not accept this HTTP method."


# Input rules -------------------------------------------------------------------


def test_score_rejects_description_over_limit(settings_factory, demo_bundle):
    from serving.app import create_app

    app = create_app(
        settings_factory(bundle_dir=str(demo_bundle), max_description_chars=50)
    )
    with TestClient(app) as client:
        fits = client.post("/v1/score", json={"description": "网" * 50})
        over = client.post("/v1/score", json={"description": "网" * 51})
        batch = client.post(
            "/v1/score/batch",
            json={"tickets": [{"description": "网" * 51}, {"description": "网"}]},
        )
    assert fits.status_code == 200
    assert over.status_code == 422
    [error] = errors_of(over)
    assert error["field"] == "description"
    assert error["message"].startswith("description has 51 characters; the limit is 50")
    items = batch.json()["items"]
    assert items[0]["errors"][0]["field"] == "tickets.0.description"
    assert "the limit is 50" in items[0]["errors"][0]["message"]
    assert items[1]["status"] == "scored"


def test_score_rejects_gbk_body(open_client):
    body = json.dumps({"description": "服务器宕机"}, ensure_ascii=False).encode("gbk")
    response = open_client.post(
        "/v1/score", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid UTF-8" in response.json()["detail"]
    assert response.json()["request_id"]


def test_score_rejects_declared_gbk_charset(open_client):
    response = open_client.post(
        "/v1/score",
        content=json.dumps({"description": "宕机"}).encode(),
        headers={"Content-Type": "application/json; charset=gbk"},
    )
    assert response.status_code == 415
    assert "'gbk'" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded"]
)
def test_score_rejects_non_json_content_type(open_client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = open_client.post(
        "/v1/score", content=b'{"description": "x"}', headers=headers
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


@pytest.mark.parametrize("field", ["description", "title", "ticket_id", "department"])
def test_score_rejects_lone_surrogate(open_client, field):
    ticket = {"description": "网络中断"}
    body = json.dumps({**ticket, field: "abc"}).replace("abc", "ab\\ud800c").encode()
    response = open_client.post(
        "/v1/score", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    [error] = errors_of(response)
    assert error["field"] == field
    assert error["type"] == "string_surrogate"
    assert "U+D800 at character 2" in error["message"]


def test_score_rejects_surrogate_in_extra(open_client):
    body = b'{"description": "x", "extra": {"deployment": "\\udfff"}}'
    response = open_client.post(
        "/v1/score", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert errors_of(response)[0]["field"] == "extra.deployment"


def test_score_rejects_utf8_encoded_surrogate(open_client):
    # CESU-style bytes ED A0 80: Python's json.loads would accept them.
    body = b'{"description": "\xed\xa0\x80"}'
    response = open_client.post(
        "/v1/score", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid UTF-8" in response.json()["detail"]


@pytest.mark.parametrize(
    ("ticket", "field", "error_type"),
    [
        ({"description": 5}, "description", "string_type"),
        ({"description": ["a"]}, "description", "string_type"),
        (
            {"description": "x", "created_at": "yesterday"},
            "created_at",
            "datetime_from_date_parsing",
        ),
        ({"description": "x", "department": {"a": 1}}, "department", "string_type"),
        (
            {"description": "x", "extra": {"bad key": "v"}},
            "extra.bad key.[key]",
            "string_pattern_mismatch",
        ),
        ({"description": "x", "extra": {"system": "v"}}, "extra", "extra_field_clash"),
        ({"description": "x", "priority": "high"}, "priority", "extra_forbidden"),
        ({"description": "x", "include": ["everything"]}, "include.0", "literal_error"),
        ({"description": "  ", "title": ""}, "description", "ticket_text_missing"),
        ({}, "description", "ticket_text_missing"),
        ({"description": "x", "title": "t" * 1001}, "title", "string_too_long"),
    ],
)
def test_score_names_invalid_field(open_client, ticket, field, error_type):
    response = open_client.post("/v1/score", json=ticket)
    assert response.status_code == 422, response.text
    errors = errors_of(response)
    assert any(e["field"] == field and e["type"] == error_type for e in errors), errors
    assert response.json()["detail"].startswith("The request is invalid")


@pytest.mark.parametrize(
    "body", [b"", b"null", b"[]", b'"text"', b"{", b'{"description": "x",}']
)
def test_score_rejects_malformed_json(open_client, body):
    response = open_client.post(
        "/v1/score", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert errors_of(response)[0]["field"] == "body"


def test_invalid_json_message_gives_position(open_client):
    response = open_client.post(
        "/v1/score",
        content=b'{"description": "x"',
        headers={"Content-Type": "application/json"},
    )
    [error] = errors_of(response)
    assert (
        error["message"]
        == "the body is not valid JSON: Expecting ',' delimiter at character 19"
    )


JSON_PATHS = ["/v1/score", "/v1/score/batch", "/v1/feedback"]


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize("depth", [300, 990])
@pytest.mark.parametrize("prefix", ["", "\ufeff"], ids=["plain", "bom"])
def test_deep_nesting_is_json_error(open_client, path, depth, prefix):
    # 300 levels stop pydantic's parser, 990 also Python's json.loads. Only
    # json.loads reads a byte order mark, and it reads 300 levels, so then the
    # error names the field.
    body = '{"description": "x", "extra": ' + "[" * depth + "]" * depth + "}"
    response = open_client.post(
        path,
        content=(prefix + body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text[:500]
    errors = errors_of(response)
    if (path == "/v1/score" and not prefix) or depth == 990:
        [error] = errors
        assert error["field"] == "body"
        assert error["type"] == "json_invalid"
        assert "nest too deeply" in error["message"]
        assert "the limit is 200 levels" in error["message"]


def test_error_list_is_capped(open_client):
    ticket = {"description": "x", **{f"field_{i}": 1 for i in range(1000)}}
    single = open_client.post("/v1/score", json=ticket)
    batch = open_client.post("/v1/score/batch", json={"tickets": [ticket]})
    extra_fields = {f"field_{i}": 1 for i in range(150)}
    whole_batch = open_client.post(
        "/v1/score/batch", json={"tickets": [{"description": "x"}], **extra_fields}
    )

    assert single.status_code == 422
    errors = errors_of(single)
    assert len(errors) == 101
    assert all(e["type"] == "extra_forbidden" for e in errors[:100])
    assert errors[-1]["type"] == "too_many_errors"
    assert errors[-1]["field"] == "body"
    assert errors[-1]["message"].startswith("900 more errors are not listed")
    item_errors = batch.json()["items"][0]["errors"]
    assert len(item_errors) == 101
    assert item_errors[-1]["field"] == "tickets.0"
    assert item_errors[-1]["message"].startswith("900 more errors are not listed")
    assert whole_batch.status_code == 422
    assert len(errors_of(whole_batch)) == 101
    assert errors_of(whole_batch)[-1]["message"].startswith("50 more errors")


def test_error_limit_applies_once():
    from serving.errors import MAX_ERROR_ENTRIES, field_errors, limit_entries

    errors = [
        {"type": "missing", "loc": (f"f{i}",), "msg": "Field required"}
        for i in range(250)
    ]
    entries = field_errors(errors)

    assert len(entries) == MAX_ERROR_ENTRIES + 1
    assert limit_entries(entries) == entries
    assert len(limit_entries(entries * 2)) == MAX_ERROR_ENTRIES + 1


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize("coding", ["gzip", "br", "identity, gzip"])
def test_encoded_body_is_rejected(open_client, path, coding):
    body = json.dumps({"description": "网络中断"}).encode()
    content = gzip.compress(body) if "gzip" in coding else body
    response = open_client.post(
        path,
        content=content,
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )
    assert response.status_code == 415, response.text
    assert "accepts only unencoded bodies" in response.json()["detail"]
    assert response.json()["request_id"]
    assert response.headers["accept-encoding"] == "identity"


def test_identity_encoding_is_accepted(open_client):
    response = open_client.post(
        "/v1/score",
        content=json.dumps({"description": "网络中断"}).encode(),
        headers={"Content-Type": "application/json", "Content-Encoding": "identity"},
    )
    assert response.status_code == 200, response.text


def test_score_rejects_oversized_body(settings_factory, demo_bundle):
    from serving.app import create_app

    app = create_app(settings_factory(bundle_dir=str(demo_bundle), max_body_bytes=4096))
    body = json.dumps({"description": "x" * 5000}).encode()
    with TestClient(app) as client:
        response = client.post(
            "/v1/score", content=body, headers={"Content-Type": "application/json"}
        )
        streamed = client.post(
            "/v1/score",
            content=iter([body[:3000], body[3000:]]),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert (
        response.json()["detail"]
        == "The request body is larger than the limit of 4096 bytes."
    )
    assert streamed.status_code == 413


def test_errors_never_echo_body_in_logs_or_answers(open_client, caplog):
    marker = "机密工单内容XYZ"
    bodies = [
        json.dumps({"description": marker, "priority": marker}).encode(),
        json.dumps({"description": [marker]}).encode(),
        json.dumps({"description": marker, "created_at": marker}).encode(),
        ('{"description": "' + marker + '"').encode(),
        json.dumps({"description": marker}, ensure_ascii=False).encode("gbk"),
        json.dumps({"tickets": [{"description": 1, "title": marker}]}).encode(),
    ]
    with caplog.at_level(logging.DEBUG):
        for body in bodies:
            for path in ("/v1/score", "/v1/score/batch"):
                response = open_client.post(
                    path, content=body, headers={"Content-Type": "application/json"}
                )
                # A batch with an invalid item is answered 200 with that item's errors.
                assert (
                    400 <= response.status_code < 500 or response.json()["invalid"] == 1
                )
                assert marker not in response.text
    assert marker not in caplog.text


def test_scorer_crash_is_json_500_without_details(open_app, open_client, caplog):
    scorer = open_app.state.service.state.model.scorer

    def crash(tickets, **options):
        raise RuntimeError("simulated ONNX failure")

    scorer.score = crash
    try:
        with caplog.at_level(logging.ERROR):
            response = open_client.post("/v1/score", json={"description": "网络中断"})
    finally:
        del scorer.score
    assert response.status_code == 500
    body = response.json()
    assert body["detail"].startswith("The service failed to handle the request")
    assert body["request_id"] == response.headers["x-request-id"]
    assert "simulated" not in response.text
    assert body["request_id"] in caplog.text
    assert "网络中断" not in caplog.text
