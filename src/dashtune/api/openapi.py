"""`/openapi.json` as the server really behaves: the request bodies the routes read
themselves (JSON and multipart), the bearer key, and the error envelopes with the
statuses they come with (400, never FastAPI's 422), so a schema fuzzer reaches the bodies.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from dashtune.api.openai_errors import is_openai_path
from dashtune.domain import hyperparams
from dashtune.domain.training import TrainingType


class ErrorEnvelope(BaseModel):
    """Every error on the native API."""

    request_id: str
    code: str
    message: str


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class OpenAIError(BaseModel):
    """Every error on `/compatible-mode/v1`."""

    error: OpenAIErrorDetail
    request_id: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class CreateJobBody(BaseModel):
    """§3.1. `hyper_parameters` keys are in docs/api.md; unknown keys are 400."""

    model_config = ConfigDict(extra="allow")
    model: str
    training_file_ids: list[str] = Field(min_length=1)
    validation_file_ids: list[str] | None = None
    training_type: TrainingType | None = None
    hyper_parameters: dict[str, Any] | None = None
    finetuned_output_suffix: str | None = Field(default=None, max_length=64)
    model_name: str | None = None
    job_name: str | None = Field(default=None, max_length=200)


class CreateWebhookBody(BaseModel):
    url: str
    event_types: list[str] | None = None


class OpenAIFineTuningBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


class CreateDeploymentBody(BaseModel):
    model_name: str
    capacity: int = Field(ge=1, le=1024)
    suffix: str | None = None


class ScaleBody(BaseModel):
    capacity: int = Field(ge=1, le=1024)


class GenerationInput(BaseModel):
    messages: list[Message] | None = None
    prompt: str | None = None


class GenerationBody(BaseModel):
    model: str
    input: GenerationInput
    parameters: dict[str, Any] | None = None


class ChatCompletionBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


UPLOAD_BODY = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "descriptions": {"type": "array", "items": {"type": "string"}},
        "purpose": {"type": "string", "enum": ["fine-tune"]},
    },
}

OPENAI_UPLOAD_BODY = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": ["fine-tune"]},
    },
}
MULTIPART_BODIES = {
    ("post", "/api/v1/files"): UPLOAD_BODY,
    ("post", "/compatible-mode/v1/files"): OPENAI_UPLOAD_BODY,
}

JSON_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/api/v1/fine-tunes"): CreateJobBody,
    ("post", "/api/v1/fine-tunes/estimate"): CreateJobBody,
    ("post", "/api/v1/webhooks"): CreateWebhookBody,
    ("post", "/compatible-mode/v1/fine_tuning/jobs"): OpenAIFineTuningBody,
    ("post", "/api/v1/deployments"): CreateDeploymentBody,
    ("put", "/api/v1/deployments/{deployed_model}/scale"): ScaleBody,
    ("post", "/api/v1/services/aigc/text-generation/generation"): GenerationBody,
    ("post", "/compatible-mode/v1/chat/completions"): ChatCompletionBody,
}

ERRORS = {
    "400": "Invalid parameter (the message names it)",
    "401": "Missing, unknown or revoked API key",
    "403": "Workspace not allowed for this key",
    "404": "Unknown object or route",
    "405": "Method not allowed",
    "409": "Name already taken",
    "413": "Body or upload over its limit",
    "415": "Wrong Content-Type",
    "429": "Quota or capacity exhausted",
    "500": "Internal error (quote the request_id)",
    "503": "Serving not available yet (retry)",
    "507": "The server's disk is full (nothing stored)",
}


def _hyper_parameters_schema() -> dict[str, Any]:
    kinds = {int: {"type": "integer"}, float: {"type": "number"}}
    props: dict[str, Any] = {}
    for key, p in hyperparams.SCHEMA.items():
        if p.kind is list:
            props[key] = {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
            }
        elif p.kind is str:
            props[key] = {"type": "string", "enum": list(p.choices or ())}
        elif p.kind is bool:
            flag: dict[str, Any] = {"type": "boolean"}
            props[key] = (
                {"oneOf": [flag, {"type": "string", "enum": ["auto"]}]}
                if p.default == "auto"
                else flag
            )
        else:
            props[key] = dict(kinds[p.kind])
    return {"type": "object", "properties": props, "additionalProperties": False}


def build_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, corrected to what the routes read and answer."""
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: list[type[BaseModel]] = [ErrorEnvelope, OpenAIError, *JSON_BODIES.values()]
    for model in models:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas[model.__name__] = body
    schemas["CreateJobBody"]["properties"]["hyper_parameters"] = _hyper_parameters_schema()
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            _correct(path, method, op)
    return schema


WORKSPACE_HEADER: dict[str, Any] = {
    "name": "X-DashScope-WorkSpace",
    "in": "header",
    "required": False,
    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "X-Dashscope-Workspace"},
}


def _correct(path: str, method: str, op: dict[str, Any]) -> None:
    model = JSON_BODIES.get((method, path))
    if model is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    form = MULTIPART_BODIES.get((method, path))
    if form is not None:
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": form}}}
    if path != "/health":
        op["security"] = [{"bearer": []}]
        # api/auth.py reads it off the request rather than declaring it (the same schema
        # FastAPI wrote for the `Header` parameter it was).
        op.setdefault("parameters", []).append(WORKSPACE_HEADER)
    envelope = "OpenAIError" if is_openai_path(path) else "ErrorEnvelope"
    responses = op.setdefault("responses", {})
    responses.pop("422", None)
    for status, why in ERRORS.items():
        responses[status] = {
            "description": why,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{envelope}"}}
            },
        }


def install_openapi(app: FastAPI) -> None:
    """Serve the corrected schema at /openapi.json (built once, on first request)."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cache:
            cache.update(build_schema(app))
        return cache

    app.openapi = openapi  # type: ignore[method-assign]
