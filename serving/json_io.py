"""Request bodies read straight from JSON bytes, and answers written straight to JSON.

FastAPI reads a body model by parsing the JSON into Python objects and then
validating those, and it validates an endpoint's return value against its
``response_model`` before writing it. For ``POST /v1/score`` both round trips
cost more than the rest of the framework's work on a request, so that route
reads its body with :func:`read_body` and answers with :func:`json_response`.
Both keep the outcome FastAPI would give:

- :func:`read_body` validates the bytes with pydantic's JSON parser. Only when
  that fails does it take FastAPI's path (``json.loads``, then validation of the
  Python objects), so error entries, their messages and the inputs accepted are
  the ones FastAPI returns. That path also accepts what only ``json.loads``
  reads, such as a UTF-8 byte order mark or an escaped lone surrogate, which
  validation then rejects by name.
- :class:`ResponseShape` copies an answer with the keys and defaults that the
  response model's JSON serialisation would write, without building the model
  instances. Its output is checked against the model's own serialisation in
  ``tests/serving/test_json_io.py``.

The route documents its body with :func:`json_body`, so the OpenAPI document is
the same as for a body parameter.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from .errors import (
    NOT_JSON,
    RECURSION_LIMIT_REASON,
    error_content,
    field_errors,
    invalid_request,
    request_id_of,
)

Model = TypeVar("Model", bound=BaseModel)

# Models read by read_body; their schemas are added to the OpenAPI components.
BODY_MODELS: dict[str, type[BaseModel]] = {}


def json_body(model: type[BaseModel], description: str | None = None) -> dict[str, Any]:
    """Return ``openapi_extra`` that documents a required JSON body of ``model``."""
    BODY_MODELS[model.__name__] = model
    body: dict[str, Any] = {
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
            }
        },
        "required": True,
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def add_body_schemas(schema: dict[str, Any]) -> None:
    """Add the schemas of the models in :data:`BODY_MODELS` to an OpenAPI document."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in BODY_MODELS.items():
        model_schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="validation"
        )
        # FastAPI writes its document without null values, so "default": null
        # goes, as it does from the schemas FastAPI generates itself.
        model_schema = jsonable_encoder(model_schema, exclude_none=True)
        for definition, value in model_schema.pop("$defs", {}).items():
            components.setdefault(definition, value)
        components.setdefault(name, model_schema)


class BodyError(Exception):
    """A body that cannot be read as the model; ``response`` is the 415 or 422 to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def read_body(request: Request, model: type[Model]) -> Model:
    """Read the request body as ``model``, or raise :class:`BodyError`.

    A body sent without a JSON content type gets 415, as the handler in
    ``serving/errors.py`` answers FastAPI's error for it. An invalid body gets
    422 with one entry per invalid field. A body nested more deeply than the
    JSON parser accepts gets 422 with one entry that names the limit.
    """
    if not _sent_json(request):
        content = error_content(NOT_JSON, request_id_of(request))
        raise BodyError(JSONResponse(status_code=415, content=content))
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if _nests_too_deeply(errors):
            # No field of a request model takes values nested this deeply, so the
            # body is invalid whatever json.loads would make of it.
            raise BodyError(
                invalid_request(request_id_of(request), field_errors(errors))
            ) from None
    value, errors = _read_as_fastapi(body, model)
    if errors:
        raise BodyError(invalid_request(request_id_of(request), field_errors(errors)))
    return value


def _read_as_fastapi(
    body: bytes, model: type[Model]
) -> tuple[Model | None, list[dict[str, Any]]]:
    """Parse and validate ``body`` as FastAPI 0.165 does for a body parameter.

    The error locations start with ``body``, as FastAPI's do, and the JSON
    syntax error carries the character offset in its location. Nesting too
    deep for ``json.loads``, for which FastAPI returns 400, is a JSON error
    here, as it is for pydantic's parser.
    """
    if not body:
        return None, [{"type": "missing", "loc": ("body",), "msg": "Field required"}]
    try:
        value = json.loads(body)
    except RecursionError:
        error = {
            "type": "json_invalid",
            "loc": ("body",),
            "msg": "JSON decode error",
            "ctx": {"error": RECURSION_LIMIT_REASON},
        }
        return None, [error]
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "ctx": {"error": exc.msg},
        }
        return None, [error]
    try:
        return model.model_validate(value, from_attributes=True), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        return None, [{**e, "loc": ("body", *e["loc"])} for e in errors]


def _nests_too_deeply(errors: list[Any]) -> bool:
    return any(
        e["type"] == "json_invalid"
        and e.get("ctx", {}).get("error", "").startswith(RECURSION_LIMIT_REASON)
        for e in errors
    )


def _sent_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


# Answers ------------------------------------------------------------------------

Convert = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


class ResponseShape:
    """Copier of answers into the JSON shape of a response model, without validation.

    For each field of the model, in declaration order, the copy has the
    answer's value or the field's default, and nested models, lists and
    optional values of them are copied the same way. Keys the model does not
    declare are left out, as the model's serialisation leaves them out. A
    missing required field raises ``KeyError``, which the service answers with
    a 500, as it answers a failed response validation. Other values are
    copied as they are, so they must be what JSON serialisation writes them as
    (the scorer converts numpy values to Python ones).
    """

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self._convert = _model_converter(model, {})

    def __call__(self, answer: dict[str, Any]) -> dict[str, Any]:
        return self._convert(answer)


def _model_converter(
    model: type[BaseModel], seen: dict[type[BaseModel], Convert]
) -> Convert:
    if model in seen:
        return seen[model]
    fields: list[tuple[str, bool, Callable[[], Any], Convert]] = []

    def convert(answer: dict[str, Any]) -> dict[str, Any]:
        copy = {}
        for name, required, default, converter in fields:
            if name in answer:
                value = answer[name]
                copy[name] = None if value is None else converter(value)
            elif required:
                raise KeyError(f"{model.__name__}.{name} is missing from the answer")
            else:
                copy[name] = default()
        return copy

    seen[model] = convert
    for name, field in model.model_fields.items():
        key = field.serialization_alias or field.alias or name
        converter = _converter(field.annotation, seen)
        if field.is_required():
            fields.append((key, True, _no_default, converter))
        elif field.default_factory is not None:
            fields.append((key, False, field.default_factory, converter))
        else:
            fields.append((key, False, _constant(field.default, converter), converter))
    return convert


def _no_default() -> Any:
    raise AssertionError("required fields have no default")


def _constant(value: Any, converter: Convert) -> Callable[[], Any]:
    written = None if value is None else converter(value)
    return lambda: written


def _converter(annotation: Any, seen: dict[type[BaseModel], Convert]) -> Convert:
    """Return how to copy a value of ``annotation``; values without models stay as they are."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_converter(annotation, seen)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in arguments if a is not type(None)]
        if len(models) == 1:
            return _converter(models[0], seen)
        if any(_has_model(a) for a in models):
            raise TypeError(f"unions of several models are not supported: {annotation}")
        return _identity
    if origin is list and arguments:
        item = _converter(arguments[0], seen)
        if item is _identity:
            return _identity
        return lambda values: [None if v is None else item(v) for v in values]
    if origin is dict and len(arguments) == 2:
        value_converter = _converter(arguments[1], seen)
        if value_converter is _identity:
            return _identity
        return lambda values: {
            k: None if v is None else value_converter(v) for k, v in values.items()
        }
    if _has_model(annotation):
        raise TypeError(f"response annotation not supported: {annotation}")
    return _identity


def _has_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_has_model(a) for a in typing.get_args(annotation))


def _default(value: Any) -> Any:
    """Write numpy scalars as the Python numbers they hold, for orjson."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_response(content: Any, status_code: int = 200) -> Response:
    """Return a JSON response of ``content`` written by orjson.

    orjson writes NaN and infinities as ``null``, as pydantic's serialisation of
    a response model does, and keeps non-ASCII text as UTF-8.
    """
    return Response(
        orjson.dumps(content, default=_default),
        status_code=status_code,
        media_type="application/json",
    )


__all__ = [
    "BODY_MODELS",
    "BodyError",
    "ResponseShape",
    "add_body_schemas",
    "json_body",
    "json_response",
    "read_body",
]
