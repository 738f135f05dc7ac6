"""One chat turn, whichever API asks for it (chat completions, Responses, Anthropic Messages).

Each API's request model says what it holds through `AsksChat` (its system texts, its turns, its
tools and tool choice, its sampling); the rules they share are checked here once: tools named
uniquely, results that answer earlier calls, tool fields only with tools. `ChatAsk` is the turn
itself, and `prepare` the one way it becomes a worker request: the worker that serves the model
and can do what the turn needs (a 400 naming what it cannot), its template, the tools told in it,
and the answer held to what the context leaves after the counted prompt. What a request carries
that we skip (a hosted tool, a field no engine here has) is said in the API server's log.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from deploy.api.tool_fields import named_results, tool_use
from deploy.api.tool_format import Choice, Tool, ToolUse
from deploy.api.workers import Workers
from deploy.wire.generation import Sampling, chat_params, conversation_from_messages

log = logging.getLogger("deploy.api.conversation")


@dataclass
class ChatAsk:
    """A conversation to answer: system texts (joined into the template's one system prompt), the
    turns (user and assistant text, assistant tool calls, tool results named after their calls),
    the tools and how they may be used, the sampling, and the worker features it needs."""
    model: str
    system: list[str]
    turns: list[dict]
    sampling: Sampling
    tools: ToolUse | None = None
    needs: frozenset[str] = frozenset()
    skipped: list[str] = field(default_factory=list)

    def messages(self) -> list[dict]:
        """One system message first (the templates hold one: several are joined), then the turns."""
        return ([{"role": "system", "content": "\n\n".join(self.system)}] if self.system else []) + self.turns


@dataclass
class Prepared:
    """A worker request for a ChatAsk: where it goes, what it says, and its prompt's size."""
    addr: str
    params: dict
    prompt_tokens: int


async def prepare(workers: Workers, ask: ChatAsk, fit: bool = True) -> Prepared:
    """The worker request for `ask`, in the model's own template, its answer held to what the
    context leaves (with `fit`: a 400 when nothing is)."""
    for what in ask.skipped:
        log.warning("%s: skipped %s", ask.model, what)
    addr = await workers.route(ask.model, set(ask.needs) | ({"tools"} if ask.tools else set()))
    template = await workers.template(addr, ask.model)
    sampling = ask.sampling
    messages = ask.messages()
    if ask.tools:
        messages = ask.tools.conversation(messages, template)
        sampling.json_schema = ask.tools.schema()
    params = chat_params(ask.model, conversation_from_messages(template, messages), sampling)
    params["messages"] = messages  # for an upstream reached through its own chat route (backend = "openai")
    tokens, context = await workers.count_tokens(addr, ask.model, params["prompt"], params["prompt_parts"])
    if fit:
        params["max_new_tokens"] = Workers.room(tokens, context, params["max_new_tokens"])
    return Prepared(addr, params, tokens)


class AsksChat(BaseModel):
    """A request model that asks for one chat turn. Subclasses say what they hold (the methods
    below); the rules every API shares are checked here, and `ask()` gives the turn."""

    model_config = ConfigDict(extra="ignore")
    _tool_use: ToolUse | None = PrivateAttr(default=None)

    def system_texts(self) -> list[str]:
        return []

    def turns(self) -> list[dict]:
        """{"role": "user"|"assistant", "content": str}, {"role": "assistant", "content": str | None,
        "tool_calls": [ToolCall]} and {"role": "tool", "call_id": str, "content": str}, in order."""
        raise NotImplementedError

    def tool_list(self) -> list[Tool] | None:
        return None

    def tool_choice_given(self) -> Choice | None:
        """'auto', 'none', 'required' or a tool's name, if the request chose; else None."""
        return None

    def parallel_calls(self) -> bool | None:
        return None

    def sampling(self) -> Sampling:
        raise NotImplementedError

    @property
    def needs(self) -> set[str]:
        """Worker features the turn cannot be answered without (deploy.backends.FEATURES)."""
        return set()

    def skipped(self) -> list[str]:
        """What the request carries that no model here runs, said in the log (see prepare)."""
        return []

    @model_validator(mode="after")
    def _tools_and_results(self):
        tools, turns = self.tool_list(), self.turns()
        if tools:
            self._tool_use = tool_use(tools, self.tool_choice_given() or "auto", self.parallel_calls())
            named_results(turns)
        elif self.tool_choice_given() not in (None, "auto", "none") or any(
                t["role"] == "tool" or t.get("tool_calls") for t in turns):
            raise PydanticCustomError("tools", "the request chooses a tool or holds tool calls or results, but has no "
                                               "'tools'. Fix: send the tools the conversation uses")
        return self

    def tool_use(self) -> ToolUse | None:
        return self._tool_use

    def ask(self) -> ChatAsk:
        turns = self.turns()
        if self._tool_use:
            turns = named_results(turns)
        return ChatAsk(self.model, [s for s in self.system_texts() if s], turns, self.sampling(), self._tool_use,
                       frozenset(self.needs), self.skipped())
