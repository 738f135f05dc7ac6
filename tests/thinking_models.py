"""Thinking models for the tests, made here from what ships offline: a default GGUF (real weights,
real tokenizer) whose only change is its chat template, set to a 2025 model's as published
(tests/chat_templates/), by gguf's own `gguf-new-metadata --chat-template-file`. The model is the
same; its prompts are the other model's, so the whole path of a model's own template and of a
thinking model's trace runs for real. A grammar (llama.cpp's GBNF) makes the tiny model write a
whole trace and answer where a test needs one.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

TEMPLATES = Path(__file__).with_name("chat_templates")
QWEN3 = TEMPLATES / "qwen3.jinja"
R1_DISTILL = TEMPLATES / "deepseek-r1-distill-qwen.jinja"


def with_template(gguf: Path, template: Path, dest_dir: Path) -> Path:
    """A copy of `gguf` whose tokenizer.chat_template is `template`'s text, made once per template
    and source (by name and content) in `dest_dir`."""
    key = hashlib.sha256(template.read_bytes() + str(gguf.resolve()).encode()).hexdigest()[:12]
    out = dest_dir / f"{gguf.stem}-{template.stem}-{key}.gguf"
    if out.exists():
        return out
    dest_dir.mkdir(parents=True, exist_ok=True)
    tool = Path(sys.executable).with_name("gguf-new-metadata")
    part = out.with_suffix(".part")
    subprocess.run([str(tool), "--chat-template-file", str(template), "--force", str(gguf), str(part)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.replace(part, out)
    return out


def trace_grammar(trace: str, answer: str) -> str:
    """A GBNF grammar whose only sentence is `trace`, the end of a trace, and `answer`: for a
    template that opened `<think>` itself (DeepSeek-R1's distills)."""
    return f"root ::= {gbnf_literal(trace)} {gbnf_literal(chr(10) + '</think>' + chr(10) * 2)} {gbnf_literal(answer)}"


def gbnf_literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
