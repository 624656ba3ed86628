"""Scoring answers written without response validation, and bodies read from bytes."""

from __future__ import annotations

import json

import pytest

from serving.json_io import ResponseShape, json_response
from serving.schemas import ScoreRequest, ScoreResponse
from serving.scoring import SCORE_RESPONSE, finish_answer

TICKET = {
    "ticket_id": "J-1",
    "created_at": "2025-03-12T10:30:00",
    "title": "ERP无法登录",
    "description": "ERP系统登录后报错，数据库连接超时，多个用户受影响",
    "department": "财务部",
    "channel": "电话",
    "system": "ERP系统",
}

INCLUDES = [[], ["reasons"], ["similar"], ["similar", "reasons"]]


def scored_answer(app, include: list[str]) -> dict:
    """Score TICKET with the app's model and finish the answer as the route does."""
    model = app.state.service.state.model
    record = ScoreRequest.model_validate(TICKET).as_record()
    [answer] = model.scorer.score([record], include=include)
    return finish_answer(answer, record, model, "request-1")


@pytest.mark.parametrize("include", INCLUDES)
def test_shape_matches_model_serialisation(open_app, open_client, include):
    answer = scored_answer(open_app, include)
    expected = ScoreResponse.model_validate(answer).model_dump(mode="json")

    written = json.loads(json_response(SCORE_RESPONSE(answer)).body)

    assert written == expected
    assert list(written) == list(expected)


def test_bundle_has_similar_index(open_app, open_client):
    # The include cases above test the similar-ticket parts only with an index.
    answer = scored_answer(open_app, ["similar"])
    assert answer["similar"], "the demo bundle returned no similar tickets"
    assert any(cause.get("evidence") for cause in answer["root_causes"])


@pytest.mark.parametrize("include", INCLUDES)
def test_score_response_conforms_to_schema(open_client, include):
    response = open_client.post("/v1/score", json={**TICKET, "include": include})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()

    validated = ScoreResponse.model_validate(body).model_dump(mode="json")
    assert body == validated
    assert "probabilities" not in body  # the scorer's extra key is not in the schema


def test_shape_fills_defaults_and_drops_unknown_keys():
    answer = {
        "request_id": "r",
        "needs_review": False,
        "model": {"name": "m", "unknown": 1},
        "root_causes": [{"code": "c", "name": "n", "probability": 0.5}],
        "probabilities": {"c": 0.5},
    }
    shaped = SCORE_RESPONSE(answer)

    assert "probabilities" not in shaped
    assert shaped["model"] == {
        "name": "m",
        "version": None,
        "alias": None,
        "trained_at": None,
    }
    assert shaped["similar"] is None
    assert shaped["alternatives"] == []
    assert shaped["root_causes"][0]["evidence"] == []
    assert shaped["root_causes"][0]["score"] is None
    assert shaped == ScoreResponse.model_validate(answer).model_dump(mode="json")


def test_shape_rejects_missing_required_field():
    with pytest.raises(KeyError, match="needs_review"):
        SCORE_RESPONSE({"request_id": "r", "model": {"name": "m"}})


def test_shape_rejects_union_of_models():
    from pydantic import BaseModel

    class First(BaseModel):
        a: int

    class Second(BaseModel):
        b: int

    class Either(BaseModel):
        part: First | Second

    with pytest.raises(TypeError, match="unions of several models"):
        ResponseShape(Either)


def test_json_response_writes_numpy_and_nan():
    import numpy as np

    response = json_response({"p": np.float64(0.5), "n": np.int64(2), "x": float("nan")})

    assert json.loads(response.body) == {"p": 0.5, "n": 2, "x": None}


def test_score_body_with_byte_order_mark_is_read(open_client):
    # json.loads accepts a UTF-8 byte order mark, so FastAPI's body parsing did.
    body = b"\xef\xbb\xbf" + json.dumps(TICKET, ensure_ascii=False).encode()
    response = open_client.post(
        "/v1/score", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["ticket_id"] == "J-1"


def test_score_body_content_type_with_charset_utf8(open_client):
    response = open_client.post(
        "/v1/score",
        content=json.dumps(TICKET).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text


def test_score_body_not_json_media_type_is_415(open_client):
    response = open_client.post(
        "/v1/score",
        content=json.dumps(TICKET).encode(),
        headers={"Content-Type": "application/xml"},
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_score_rejects_null_fields_like_fastapi(open_client):
    response = open_client.post(
        "/v1/score", json={"description": "网络中断", "extra": None, "include": None}
    )
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"extra", "include"}


def test_openapi_score_body_matches_generated_schemas(open_client):
    schema = open_client.get("/openapi.json").json()
    body = schema["paths"]["/v1/score"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ScoreRequest"
    }
    schemas = schema["components"]["schemas"]
    score_request = schemas["ScoreRequest"]["properties"]
    # FastAPI itself generated TicketIn's schema, from the batch request.
    ticket_in = schemas["TicketIn"]["properties"]
    assert {k: v for k, v in score_request.items() if k != "include"} == ticket_in
    assert score_request["include"]["items"]["enum"] == ["similar", "reasons"]
    assert "default" not in score_request["ticket_id"]
