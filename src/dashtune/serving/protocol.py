"""Wire shapes between the API process and the serving process (loopback HTTP + JSON).

Both processes import this module, so it must not import torch. The API also uses
`ChatMessage` and `Sampling` to validate what callers send, before anything reaches
the serving process; `validated` turns pydantic's errors into 400 InvalidParameter.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dashtune.domain.errors import InvalidParameter

MAX_STOP_SEQUENCES = 16
TOKEN_HEADER = "X-Dashtune-Serving-Token"
TOKEN_ENV = "DASHTUNE_SERVING_TOKEN"  # how the supervisor hands the token to its child
StopReason = Literal["stop", "length"]


class LoadSpec(BaseModel):
    """Where a model's weights are: a HF model dir, plus a LoRA adapter dir on top of it."""

    base_path: str
    adapter_path: str | None = None
    builtin: bool = False  # base_path is dashtune-tiny: build it if it is missing


class LoadRequest(BaseModel):
    key: str  # "dep-{id}" for a deployment, "base:{model id}" for a catalog model
    spec: LoadSpec
    capacity: int = Field(ge=1)


class UnloadRequest(BaseModel):
    key: str


class ChatMessage(BaseModel):
    """One turn; OpenAI content parts (`[{"type": "text", "text": ...}]`) become one string."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("role", mode="before")
    @classmethod
    def _developer_is_system(cls, value: Any) -> Any:
        return "system" if value == "developer" else value

    @field_validator("content", mode="before")
    @classmethod
    def _join_parts(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, list):
            texts = []
            for part in value:
                if isinstance(part, dict) and part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif isinstance(part, dict) and "text" in part:  # DashScope [{"text": ...}]
                    texts.append(str(part["text"]))
                else:
                    raise ValueError("only text content parts are supported")
            return "".join(texts)
        return value


class Sampling(BaseModel):
    """Sampling parameters; None means the model's own generation_config default."""

    model_config = ConfigDict(extra="ignore")
    temperature: float | None = Field(default=None, ge=0, le=2)  # 0: greedy
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    repetition_penalty: float | None = Field(default=None, gt=0)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        return value

    @field_validator("stop")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop sequences must be non-empty strings")
        return value


class GenerateRequest(BaseModel):
    key: str
    messages: list[ChatMessage] = Field(min_length=1)
    sampling: Sampling = Field(default_factory=Sampling)
    stream: bool = False
    # Catalog base models load on first use: the request says how, and with how many slots.
    load: LoadSpec | None = None
    capacity: int = Field(default=1, ge=1)


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Completion(BaseModel):
    text: str
    finish_reason: StopReason
    usage: Usage


class ErrorBody(BaseModel):
    code: str
    message: str


class StreamLine(BaseModel):
    """One line of a streamed `/generate` answer (NDJSON): a text delta (with the usage so
    far), the end, or an error."""

    delta: str | None = None
    usage: Usage | None = None
    done: Completion | None = None
    error: ErrorBody | None = None


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any, where: str) -> M:
    """`model` built from caller data, or 400 InvalidParameter naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in (where, *first.get("loc", ())) if p != "")
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise InvalidParameter(f"Parameter {loc}: {msg}.") from None
