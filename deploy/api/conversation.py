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
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from deploy.api.tool_fields import named_results, tool_use
from deploy.api.tool_format import Choice, Tool, ToolUse
from deploy.api.workers import Workers
from deploy.registry.templates import AUTO
from deploy.wire.generation import (Sampling, chat_params, conversation_from_dict, conversation_from_messages,
                                    worker_params)

log = logging.getLogger("deploy.api.conversation")


@dataclass
class Thinking:
    """What a request asks of a thinking model's trace: whether it may think (the template variable
    enable_thinking, where its template has one), the most tokens it may think for (then it is made to
    close its trace and answer), and other variables for the model's own template."""
    enabled: bool | None = None       # None: the template's default
    budget: int | None = None         # None: unlimited
    template_kwargs: dict = field(default_factory=dict)
    budget_set: bool = False          # the request set the budget (an effort, budget tokens), if only to unlimited

    def kwargs(self) -> dict:
        return {**self.template_kwargs, **({"enable_thinking": self.enabled} if self.enabled is not None else {})}

    def defaulted(self, default: dict | None) -> "Thinking":
        """What the request left unsaid, from its entry's default (the fields thinking and
        reasoning_budget): off means the template's switch off and, where the request set no
        budget, a budget of 0 for a template without a switch."""
        if not default:
            return self
        enabled = self.enabled if self.enabled is not None else default.get("enabled")
        budget, budget_set = self.budget, self.budget_set
        if not budget_set and default.get("budget") is not None:
            budget, budget_set = default["budget"], True
        if enabled is False and not budget_set:
            budget, budget_set = 0, True
        return replace(self, enabled=enabled, budget=budget, budget_set=budget_set)


# Reasoning effort (OpenAI's words) as a thinking budget, in tokens: on a CPU a trace of a few thousand
# tokens takes minutes, so anything short of "high" is bounded. "none" turns thinking off.
EFFORT_BUDGETS = {"minimal": 128, "low": 512, "medium": 2048, "high": None, "xhigh": None}


def effort(value: str | None) -> Thinking:
    """OpenAI's reasoning_effort (chat) or reasoning.effort (Responses) as Thinking: the effort also
    reaches the model's template as reasoning_effort, as llama.cpp passes it (gpt-oss reads it)."""
    if value is None:
        return Thinking()
    if value == "none":  # a template without a switch (DeepSeek-R1's opens the trace) gets a budget of 0
        return Thinking(enabled=False, budget=0, budget_set=True)
    return Thinking(enabled=True, budget=EFFORT_BUDGETS.get(value), template_kwargs={"reasoning_effort": value},
                    budget_set=True)


@dataclass
class ChatAsk:
    """A conversation to answer: system texts (joined into the template's one system prompt), the
    turns (user and assistant text, assistant tool calls, tool results named after their calls),
    the tools and how they may be used, the sampling, what it asks of a thinking model's trace, and
    the worker features it needs."""
    model: str
    system: list[str]
    turns: list[dict]
    sampling: Sampling
    tools: ToolUse | None = None
    needs: frozenset[str] = frozenset()
    skipped: list[str] = field(default_factory=list)
    thinking: Thinking = field(default_factory=Thinking)

    def messages(self) -> list[dict]:
        """One system message first (the templates hold one: several are joined), then the turns."""
        return ([{"role": "system", "content": "\n\n".join(self.system)}] if self.system else []) + self.turns


@dataclass
class Prepared:
    """A worker request for a ChatAsk: where it goes, what it says, its prompt's size, and whether
    the prompt leaves the model inside a trace (its answer is reasoning until </think>)."""
    addr: str
    params: dict
    prompt_tokens: int
    opens_thinking: bool = False


async def prepare(workers: Workers, ask: ChatAsk, fit: bool = True) -> Prepared:
    """The worker request for `ask`, in the model's own template, its answer held to what the
    context leaves (with `fit`: a 400 when nothing is)."""
    for what in ask.skipped:
        log.warning("%s: skipped %s", ask.model, what)
    addr = await workers.route(ask.model, set(ask.needs) | ({"tools"} if ask.tools else set()))
    template = await workers.template(addr, ask.model)
    ask.thinking = ask.thinking.defaulted(template.get("thinking"))
    sampling = ask.sampling
    messages = ask.messages()
    if ask.tools:
        messages = ask.tools.conversation(messages, template)
        sampling.json_schema = ask.tools.schema()
    opened = False
    if template["name"] == AUTO:  # the model's own template, rendered by its worker
        rendered = await workers.render(addr, ask.model, shipped_messages(messages), ask.thinking.kwargs())
        params = {**worker_params(ask.model, rendered["prompt"], conversation_from_dict(template), sampling),
                  "prompt_parts": rendered["prompt_parts"]}
        opened = rendered["opens_thinking"]
    else:
        params = chat_params(ask.model, conversation_from_messages(template, messages), sampling)
    if ask.thinking.budget is not None:
        params["reasoning_budget"] = ask.thinking.budget
    params["messages"] = messages  # for an upstream reached through its own chat route (backend = "openai")
    tokens, context = await workers.count_tokens(addr, ask.model, params["prompt"], params["prompt_parts"])
    if fit:
        params["max_new_tokens"] = Workers.room(tokens, context, params["max_new_tokens"])
    return Prepared(addr, params, tokens, opened)


def shipped_messages(messages: list[dict]) -> list[dict]:
    """Messages as a model's own template takes them: role, text, and an earlier turn's reasoning
    where the client handed it back (the template decides whether to show it; most drop it)."""
    out = []
    for m in messages:
        shipped = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("reasoning_content"):
            shipped["reasoning_content"] = m["reasoning_content"]
        out.append(shipped)
    return out


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

    def thinking(self) -> Thinking:
        """What the request asks of a thinking model's trace (its API's own fields)."""
        return Thinking()

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
                       frozenset(self.needs), self.skipped(), self.thinking())
