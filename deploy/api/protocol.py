"""The OpenAI API's request bodies as pydantic models that validate themselves: every field a route
reads is type- and range-checked (the ranges are deploy/wire/fields.py's, shared with the workers'
own check), what real clients send is normalised (text parts joined, `developer` read as
`system`, `max_completion_tokens` as `max_tokens`), and what no model here can do is refused,
never silently dropped. A request becomes worker parameters through `sampling()`, and says which
worker features it needs (`needs`). The first problem is a 400 naming the field (the route's
validation error handler, deploy/api/app.py). Unknown fields are ignored, as OpenAI's clients
send fields of newer API versions, and named in the log (as vLLM does), so a user can see what no
route here read.
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from deploy.api.conversation import AsksChat, Thinking, effort
from deploy.api.tool_fields import MAX_TOOLS, ArgumentsSchema, CallId, Description, ToolName
from deploy.api.tool_format import Tool, ToolCall
from deploy.wire.fields import (MAX_STOP, Boolean, Integer, MaxTokens, Penalty, RepetitionPenalty, Seed, Temperature,
                                Text, TopK, TopLogprobs, TopP)
from deploy.wire.generation import Sampling
from deploy.wire.strict_json import type_name

log = logging.getLogger(__name__)

MAX_N = 4               # choices per request: each one is a full generation on a CPU
MAX_PROMPTS = 16        # prompts per /v1/completions request
MAX_EMBED_INPUTS = 256
MAX_GRAMMAR = 65536     # characters of a GBNF grammar
MAX_COMPLETION_LOGPROBS = 5  # as OpenAI
IMAGE_PARTS = {"image_url", "input_image", "image"}


def unsupported(what: str, fix: str, code: str = "unsupported_parameter") -> PydanticCustomError:
    return PydanticCustomError(code, "{what} is not supported by this deployment. {fix}", {"what": what, "fix": fix})


def refused(what: str, fix: str, given=bool) -> BeforeValidator:
    """A field no model here can honour: refused with a 400 when `given(value)`, never silently dropped."""
    def check(v: Any) -> None:
        if given(v):
            raise unsupported(what, fix)
        return None
    return BeforeValidator(check)


def _stop(v: Any) -> Any:
    if v is None:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise PydanticCustomError("stop_type", "must be a string or an array of strings")
    if len(items) > MAX_STOP:
        raise PydanticCustomError("stop_count", "has {n} sequences; at most {max} are allowed",
                                  {"n": len(items), "max": MAX_STOP})
    return [s for s in items if s]


def _non_empty_messages(v: Any) -> Any:
    if not isinstance(v, list) or not v:
        raise PydanticCustomError("messages", "must be a non-empty array of {role, content} objects")
    return v


def joined_text(v: Any, text_kinds: tuple[str, ...], refused: dict[str, str], fix: str) -> Any:
    """Content given as a string, or as parts/blocks whose text ones (`text_kinds`) are joined; a
    part of a kind in `refused` is refused with its reason and `fix`, any other kind as malformed."""
    if isinstance(v, str):
        return v
    if not isinstance(v, list):
        raise PydanticCustomError("content", "must be a string or an array of content parts")
    texts = []
    for part in v:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in refused:
            raise PydanticCustomError("unsupported_content", "holds a '{kind}' part: {why}. Fix: {fix}",
                                      {"kind": kind, "why": refused[kind], "fix": fix})
        if kind not in text_kinds or not isinstance(part.get("text"), str):
            raise PydanticCustomError("content", "parts must be objects with a type of {kinds} and a text string",
                                      {"kinds": " or ".join(text_kinds)})
        texts.append(part["text"])
    return "\n".join(texts)


ModelName = Annotated[Text, Field(min_length=1, max_length=256)]
Messages = BeforeValidator(_non_empty_messages)
Stop = Annotated[list[str], BeforeValidator(_stop)]


@functools.cache
def _field_names(model: type) -> frozenset[str]:
    """The names a request part reads: its fields, their aliases and what its before-validators read
    (once per class: every part of every request is checked against them)."""
    return frozenset(n for name, f in model.model_fields.items() for n in (name, f.alias) if n) | model.READ_BEFORE


class StrictModel(BaseModel):
    """A part of a request: fields no route reads are ignored and named in the log, one line per
    part that had any (vLLM's way), so a client's setting that has no effect here is said."""
    model_config = ConfigDict(extra="ignore")
    READ_BEFORE: ClassVar[frozenset[str]] = frozenset()  # other names a before-validator reads

    @model_validator(mode="wrap")
    @classmethod
    def _say_ignored(cls, data: Any, handler):
        made = handler(data)
        if isinstance(data, dict):
            known = _field_names(cls)
            ignored = sorted(str(k) for k in data if k not in known)
            if ignored:
                log.warning("ignored in %s: %s (nothing here reads them)", cls.__name__,
                            ", ".join(repr(k[:64]) for k in ignored[:20]) + (" ..." if len(ignored) > 20 else ""))
        return made


class StreamOptions(StrictModel):
    include_usage: Boolean = False


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _kind(cls, v):
        if v not in ("text", "json_object", "json_schema"):
            raise PydanticCustomError("format_type", "must be 'text', 'json_object' or 'json_schema'")
        return v

    @model_validator(mode="after")
    def _schema(self):
        if self.type == "json_schema" and (not isinstance(self.json_schema, dict)
                                           or not isinstance(self.json_schema.get("schema", {}), dict)):
            raise PydanticCustomError("json_schema", "'response_format.json_schema' must be an object with a "
                                                     "'schema' object")
        return self

    def schema_for_worker(self) -> dict | None:
        """The JSON schema the answer must match (the engine builds a grammar from it), or None."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema":
            return self.json_schema.get("schema") or {}
        return None


class GenerationRequest(StrictModel):
    """What chat and completions share."""
    READ_BEFORE = frozenset({"max_completion_tokens"})

    model: ModelName
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    n: Annotated[Integer, Field(ge=1, le=MAX_N)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: RepetitionPenalty | None = None
    seed: Seed | None = None
    stop: Stop = Field(default_factory=list)
    user: Annotated[Text, Field(max_length=256)] | None = None
    stream: Boolean | None = None
    stream_options: StreamOptions | None = None
    logit_bias: Annotated[Any, refused("'logit_bias'", "Fix: leave it out.")] = None
    response_format: ResponseFormat | None = None
    grammar: Annotated[Text, Field(min_length=1, max_length=MAX_GRAMMAR)] | None = None  # llama.cpp's GBNF (its extension)

    @model_validator(mode="before")
    @classmethod
    def _newer_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_completion_tokens" in data:  # the newer name (o1 and later clients)
            data = dict(data)
            data.setdefault("max_tokens", data.pop("max_completion_tokens"))
        return data

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError("stream_options", "'stream_options' is only allowed when 'stream' is true")
        return self

    @model_validator(mode="after")
    def _one_constraint(self):
        if self.grammar is not None and self.response_format and self.response_format.schema_for_worker() is not None:
            raise PydanticCustomError("grammar", "'grammar' and a JSON 'response_format' cannot go together: each "
                                      "constrains the whole answer. Fix: send one of them")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def choices(self) -> int:
        return self.n or 1

    def logprobs_wanted(self) -> int | None:
        return None

    @property
    def needs(self) -> set[str]:
        """Worker features this request cannot be answered without (deploy.backends.FEATURES)."""
        out = set()
        if self.response_format and self.response_format.schema_for_worker() is not None:
            out.add("json")
        if self.grammar is not None:
            out.add("grammar")
        if self.logprobs_wanted() is not None:
            out.add("logprobs")
        return out

    def sampling(self, default_max_tokens: int | None = None) -> Sampling:
        return sampling(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                        presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                        repetition_penalty=self.repetition_penalty,
                        max_new_tokens=self.max_tokens if self.max_tokens is not None else default_max_tokens,
                        stop=list(self.stop), seed=self.seed, logprobs=self.logprobs_wanted(),
                        json_schema=self.response_format.schema_for_worker() if self.response_format else None,
                        grammar=self.grammar)


def sampling(**given) -> Sampling:
    """Generation settings from what a request gave; what it left out (None) takes FastChat's defaults."""
    return Sampling(**{k: v for k, v in given.items() if v is not None})


# ---- chat -----------------------------------------------------------------------------------------

class ContentPart(StrictModel):
    type: str
    text: Any = None
    refusal: Any = None

    @field_validator("type", mode="before")
    @classmethod
    def _kind(cls, v):
        if v in IMAGE_PARTS:
            raise PydanticCustomError("images_not_supported", "is an image, and the models of this deployment take "
                                                              "no images. Fix: send text parts only")
        if not isinstance(v, str):
            raise PydanticCustomError("part_type", "must be an object with a 'type' (text)")
        if v not in ("text", "refusal"):
            raise PydanticCustomError("unsupported_content", "is a '{kind}' part; only text parts are supported",
                                      {"kind": v})
        return v

    @model_validator(mode="after")
    def _text(self):
        if not isinstance(getattr(self, self.type), str):
            raise PydanticCustomError("part_text", "'{kind}' must be a string", {"kind": self.type})
        return self

    @property
    def content(self) -> str:
        return getattr(self, self.type)


_PARTS = TypeAdapter(list[ContentPart])


def _content(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if not isinstance(v, list):
        raise PydanticCustomError("content_type", "must be a string or an array of content parts, not {kind}",
                                  {"kind": type_name(v)})
    return "\n".join(p.content for p in _PARTS.validate_python(v))


# ---- tools (request fields: deploy/api/tool_fields.py; the format: deploy/api/tool_format.py) ------

class FunctionSpec(StrictModel):
    name: ToolName
    description: Description = ""
    parameters: ArgumentsSchema = None
    strict: Boolean | None = None  # every call matches the schema anyway (a grammar holds the model to it)


class ChatTool(StrictModel):
    type: Literal["function"]
    function: FunctionSpec

    @field_validator("type", mode="before")
    @classmethod
    def _kind(cls, v):
        if v != "function":
            raise PydanticCustomError("tool_type", "must be 'function': the only kind of tool a model here can call")
        return v


class NamedFunction(StrictModel):
    name: ToolName


class NamedToolChoice(StrictModel):
    type: Literal["function"]
    function: NamedFunction


class FunctionCall(StrictModel):
    name: ToolName
    arguments: Text

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, v):
        try:
            args = json.loads(v)
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise PydanticCustomError("arguments", "must be a JSON object, as a string")
        return v

    def call(self, call_id: str) -> ToolCall:
        return ToolCall(self.name, json.loads(self.arguments), call_id)


class ChatToolCall(StrictModel):
    id: CallId
    type: Literal["function"] = "function"
    function: FunctionCall

    def call(self) -> ToolCall:
        return self.function.call(self.id)


class ChatMessage(StrictModel):
    role: str
    content: Annotated[str | None, BeforeValidator(_content)] = None
    name: Any = None
    tool_calls: Annotated[list[ChatToolCall], Field(min_length=1)] | None = None
    tool_call_id: CallId | None = None
    reasoning_content: Text | None = None  # an earlier answer's trace, handed back (vLLM's name)
    reasoning: Text | None = None          # the same, by its newer name

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError("message_type", "must be an object with 'role' and 'content'")
        if data.get("role") == "function" or data.get("function_call"):
            raise unsupported("function calls (the older 'functions' API)", "Fix: send 'tools', assistant "
                                                                            "'tool_calls' and 'tool' messages.")
        if data.get("content") is None and data.get("role") != "assistant":
            raise ValidationError.from_exception_data("ChatMessage", [{"type": "missing", "loc": ("content",),
                                                                       "input": data}])
        return data

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, v):
        if v not in ("system", "developer", "user", "assistant", "tool"):
            raise PydanticCustomError("role", "must be 'system', 'developer', 'user', 'assistant' or 'tool', not {v}",
                                      {"v": repr(v)})
        return "system" if v == "developer" else v  # developer is the newer name for system

    @model_validator(mode="after")
    def _tool_fields(self):
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise PydanticCustomError("tool_call_id", "a 'tool' message needs 'tool_call_id' (the id of the call it "
                                                      "answers), and only a tool message has one")
        if self.tool_calls is not None and self.role != "assistant":
            raise PydanticCustomError("tool_calls", "only an assistant message has 'tool_calls'")
        return self


class ChatCompletionRequest(GenerationRequest, AsksChat):
    messages: Annotated[list[ChatMessage], Messages]
    logprobs: Boolean | None = None
    top_logprobs: TopLogprobs | None = None
    tools: Annotated[list[ChatTool], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: Boolean | None = None
    functions: Annotated[Any, refused("'functions' (the older function-calling API)",
                                      "Fix: send them as 'tools'.")] = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # variables of the model's own template (enable_thinking)
    reasoning_budget_tokens: Annotated[Integer, Field(ge=-1)] | None = None  # llama.cpp's: a trace's most tokens, -1 none

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _choice(cls, v):
        if isinstance(v, str) and v not in ("auto", "none", "required"):
            raise PydanticCustomError("tool_choice", "must be 'auto', 'none', 'required' or {\"type\": \"function\", "
                                                     "\"function\": {\"name\": ...}}")
        return v

    @model_validator(mode="after")
    def _chat_rules(self):
        if not any(m.role == "user" for m in self.messages):
            raise PydanticCustomError("messages", "'messages' has no user message. Fix: add {\"role\": \"user\", "
                                                  "\"content\": ...}")
        if self.top_logprobs and not self.logprobs:
            raise PydanticCustomError("top_logprobs", "'top_logprobs' needs 'logprobs': true")
        if self.tools and self.response_format is not None and self.response_format.type != "text":
            raise PydanticCustomError("response_format", "'response_format' and 'tools' cannot go together: an answer "
                                                         "is either a tool call or JSON of your format")
        if self.tools and self.grammar is not None and self.tool_choice != "none":
            raise PydanticCustomError("grammar", "'grammar' and 'tools' cannot go together: the tools' calls are held "
                                                 "to a grammar of their own. Fix: send one of them")
        if self.tools and self.logprobs:
            raise unsupported("'logprobs' with 'tools'", "Fix: leave out one of them.")
        return self

    def logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    # ---- what AsksChat reads
    def system_texts(self) -> list[str]:
        return [m.content for m in self.messages if m.role == "system"]

    def turns(self) -> list[dict]:
        out = []
        for m in self.messages:
            if m.role == "tool":
                out.append({"role": "tool", "call_id": m.tool_call_id, "content": m.content})
            elif m.tool_calls:
                out.append({"role": "assistant", "content": m.content, "tool_calls": [c.call() for c in m.tool_calls]})
            elif m.role != "system":
                out.append({"role": m.role, "content": m.content or ""})
                if m.role == "assistant" and (m.reasoning_content or m.reasoning):
                    out[-1]["reasoning_content"] = m.reasoning_content or m.reasoning
        return out

    def thinking(self) -> Thinking:
        """reasoning_effort ("none" turns thinking off, the rest bound the trace), llama.cpp's
        reasoning_budget_tokens (wins over the effort's budget), and the template's own variables
        (chat_template_kwargs: enable_thinking wins over the effort)."""
        t = effort(self.reasoning_effort)
        if self.reasoning_budget_tokens is not None:
            t.budget = None if self.reasoning_budget_tokens < 0 else self.reasoning_budget_tokens
            t.budget_set = True
        kwargs = dict(self.chat_template_kwargs or {})
        if isinstance(kwargs.get("enable_thinking"), bool):
            t.enabled = kwargs.pop("enable_thinking")
        t.template_kwargs.update(kwargs)
        return t

    def tool_list(self) -> list[Tool] | None:
        return [Tool(t.function.name, t.function.description, t.function.parameters) for t in self.tools or ()] or None

    def tool_choice_given(self):
        return self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice

    def parallel_calls(self) -> bool | None:
        return self.parallel_tool_calls


# ---- completions and embeddings -------------------------------------------------------------------

def _texts(limit: int):
    def check(v: Any) -> Any:
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not items:
            raise PydanticCustomError("texts", "must be a string or a non-empty array of strings")
        if any(isinstance(x, (int, list)) and not isinstance(x, bool) for x in items):
            raise unsupported("text given as token ids", "Each model has its own tokenizer. Fix: send it as text.")
        if not all(isinstance(x, str) for x in items):
            raise PydanticCustomError("texts", "must be a string or an array of strings")
        if len(items) > limit:
            raise PydanticCustomError("texts", "has {n} items; at most {max} are allowed per request",
                                      {"n": len(items), "max": limit})
        return items
    return BeforeValidator(check)


class CompletionRequest(GenerationRequest):
    prompt: Annotated[list[str], _texts(MAX_PROMPTS)]
    echo: Boolean | None = None
    best_of: Annotated[Integer, Field(ge=1, le=1)] | None = None
    logprobs: Annotated[Integer, Field(ge=0, le=MAX_COMPLETION_LOGPROBS)] | None = None
    suffix: Annotated[Any, refused("'suffix' (fill in the middle)", "Fix: leave it out.")] = None

    def logprobs_wanted(self) -> int | None:
        return self.logprobs

    def sampling(self, default_max_tokens: int | None = 16) -> Sampling:  # FastChat's (and OpenAI's) default
        s = super().sampling(default_max_tokens)
        s.echo = bool(self.echo)
        return s


class EmbeddingsRequest(StrictModel):
    model: ModelName
    input: Annotated[list[str], _texts(MAX_EMBED_INPUTS)]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[Any, refused("'dimensions'", "Embeddings have the model's own size. Fix: leave it out.",
                                       given=lambda v: v is not None)] = None
    user: Annotated[Text, Field(max_length=256)] | None = None

    @field_validator("encoding_format", mode="before")
    @classmethod
    def _format(cls, v):
        if v is not None and v not in ("float", "base64"):
            raise PydanticCustomError("encoding_format", "must be 'float' or 'base64'")
        return v

    @property
    def needs(self) -> set[str]:
        return {"embeddings"}


class TokenCheckItem(StrictModel):
    model: ModelName
    prompt: Text
    max_tokens: MaxTokens = 1


class TokenCheckRequest(StrictModel):
    """FastChat's /api/v1/token_check."""
    prompts: list[TokenCheckItem] = Field(min_length=1, max_length=MAX_PROMPTS)

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompts(cls, v):
        if not isinstance(v, list) or not v or len(v) > MAX_PROMPTS:
            raise PydanticCustomError("prompts", f"must be an array of 1 to {MAX_PROMPTS} objects with model, prompt "
                                                 f"and max_tokens")
        return v
