"""A model asked with its trace on or off (`--thinking`): how a run names it and what a request sends."""
from __future__ import annotations

# A model asked with thinking on or off (--thinking): its label in the run, "NAME [thinking on]",
# and what the request sends for it (the model's template variable, and a budget of 0 for "off").
THINKING = {"on": {"chat_template_kwargs": {"enable_thinking": True}}, "off": {"reasoning_effort": "none"}}


def labelled(model: str, thinking: str | None) -> str:
    return f"{model} [thinking {thinking}]" if thinking else model


def served(label: str) -> tuple[str, str | None]:
    """(the registered model, "on"/"off"/None) of a run's model label."""
    for mode in THINKING:
        suffix = f" [thinking {mode}]"
        if label.endswith(suffix):
            return label.removesuffix(suffix), mode
    return label, None
