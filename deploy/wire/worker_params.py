"""The worker protocol's generation request, checked by every worker before it tokenises or
allocates. A worker's routes can be reached directly on loopback, not only through the API, so
the same strict JSON and the same ranges (deploy/wire/fields.py) hold here: a bad field is a 400
that names it, never a 500 from inside an engine, nor a generation longer than the context.

FastChat's clients send more keys than these (best_of, use_beam_search, ...): they pass through.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from deploy.wire.errors import ClientError
from deploy.wire.fields import (Boolean, MaxTokens, Penalty, RepetitionPenalty, Seed, Temperature, Text,
                                TokenId, TopK, TopLogprobs, TopP, client_error)
from deploy.wire.strict_json import parse_object, type_name

# What each feature-bound field needs of the worker's backend (deploy/backends: features).
FEATURE_OF = {"logprobs": "logprobs", "json_schema": "json", "grammar": "grammar"}


def _stop(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return v
    raise ValueError(f"must be a string or an array of strings, not {type_name(v)}")


PromptParts = list[tuple[Literal["template", "message"], Text]]


class Prompt(BaseModel):
    """A prompt, and (from our API server and web UI) its parts: the template's text apart from the
    messages' (deploy/wire/prompt.py), which must join into the prompt."""
    model_config = ConfigDict(extra="allow")

    prompt: Text
    prompt_parts: PromptParts | None = None

    @model_validator(mode="after")
    def _parts_make_the_prompt(self):
        if self.prompt_parts is not None and "".join(t for _, t in self.prompt_parts) != self.prompt:
            raise ValueError("'prompt_parts' do not join into 'prompt'. Fix: send the parts of this prompt, or "
                             "leave them out")
        return self


class GenerateParams(Prompt):
    """What /worker_generate_stream and /worker_generate take (FastChat's gen_params)."""
    max_new_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: RepetitionPenalty | None = None
    seed: Seed | None = None
    logprobs: TopLogprobs | None = None
    stop: Annotated[str | list[str] | None, BeforeValidator(_stop)] = None
    stop_token_ids: list[TokenId] | None = None
    json_schema: dict | None = None
    grammar: Text | None = None  # llama.cpp's GBNF
    reasoning_budget: Annotated[int, Field(ge=0, le=1 << 24)] | None = None  # a trace's most tokens
    echo: Boolean | None = None
    ignore_eos: Boolean | None = None
    images: list | None = None

    @field_validator("max_new_tokens")
    @classmethod
    def _within_context(cls, v, info: ValidationInfo):
        limit = (info.context or {}).get("context_len")
        if v is not None and limit and v > limit:
            raise ValueError(f"is {v}, more than this model's context of {limit} tokens")
        return v

    @field_validator("images")
    @classmethod
    def _no_images(cls, v):
        if v:
            raise ValueError("this worker's model takes no images")
        return v


class ChatMessage(BaseModel):
    """A message of a conversation for a template the model ships: its role and its text (an
    assistant's earlier reasoning, where the client handed it back)."""
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: Text
    reasoning_content: Text | None = None


class RenderParams(BaseModel):
    """/worker_render: a conversation, and the variables its template takes (enable_thinking, ...)."""
    model_config = ConfigDict(extra="allow")
    messages: list[ChatMessage] = Field(min_length=1)
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)


class CountParams(Prompt):
    """/count_token: a prompt to count."""


class EmbedParams(BaseModel):
    """/worker_get_embeddings: texts to embed."""
    model_config = ConfigDict(extra="allow")
    input: str | list[Text] = Field(min_length=1)
    encoding_format: Text | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, v):
        if isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
            return v
        raise ValueError("must be a string or a non-empty array of strings")


def checked(model: type[BaseModel], raw: bytes, context_len: int = 0, features: frozenset[str] = frozenset()) -> dict:
    """The request as a dict (what workers read), after `model`'s checks; a ClientError otherwise.
    `features`: what this worker's backend can do; a field that needs more is refused, naming it."""
    try:
        body = model.model_validate(parse_object(raw), context={"context_len": context_len})
    except ValidationError as e:
        raise client_error(e) from None
    params = body.model_dump(exclude_unset=True)
    for name, feature in FEATURE_OF.items():
        if params.get(name) is not None and feature not in features:
            raise ClientError(400, f"this model does not support '{name}' ({feature}). Fix: leave it out, or ask "
                                   f"a model whose /fleet_info lists '{feature}' among its features.", param=name)
    return params
