"""What the page does, without its layout: conversations with models, streaming several at once,
votes. Per-user state (Side, Battle) lives in gr.State; the shared parts on the Arena object."""
from __future__ import annotations

import asyncio
import html
import time
import uuid
from dataclasses import dataclass, field

from deploy.fleet_client import AsyncFleetClient, ModelUnavailable, gen_params
from deploy.webui.votes import VoteLog, state_dict



def as_text(question: str) -> str:
    """The user's words as they typed them: the chat pane renders Markdown and HTML, so a question
    with `<img ...>` or `<script>` showed as a broken image or an empty bubble."""
    return html.escape(question, quote=False)

@dataclass
class GenSettings:
    """What the user chose; sent to the worker with the same keys the API server sends."""
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None


@dataclass
class Side:
    """One pane's conversation: which model, its template, its history."""
    model: str | None = None
    conv: object = None
    conv_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    history: list = field(default_factory=list)  # [[user, bot], ...] for gr.Chatbot
    error: bool = False


@dataclass
class Battle:
    sides: list[Side] = field(default_factory=lambda: [Side(), Side()])
    voted: bool = False


class Arena:
    def __init__(self, client: AsyncFleetClient, votes: VoteLog, info_ttl: float = 30):
        self.client = client
        self.votes = votes
        self.info_ttl = info_ttl
        self._info: dict[str, tuple[float, dict]] = {}

    async def info(self, model: str) -> dict:
        """Backend, cores, budget... from the worker's /fleet_info, cached for `info_ttl` seconds."""
        now = time.monotonic()
        cached = self._info.get(model)
        if cached and now - cached[0] < self.info_ttl:
            return cached[1]
        try:
            info = await self.client.worker_info(await self.client.worker_address(model))
        except ModelUnavailable:
            info = {}
        self._info[model] = (now, info)
        return info

    async def models_table(self, models: list[str]) -> list[list]:
        rows = []
        for m in models:
            i = await self.info(m)
            budget = f"{i['memory_budget'] / 1024**3:.1f} GiB" if i.get("memory_budget") else "?"
            rows.append([m, i.get("backend", "?"), ",".join(map(str, i.get("cores", []))) or "?", budget,
                         i.get("context_length", "?"), i.get("chat_template", "?")])
        return rows

    async def quick_first(self, models: list[str]) -> list[str]:
        """The order default picks come from: models on backends that batch (llama.cpp) before the
        transformers ones, which answer one request at a time at a few tokens/s on a CPU, so a new
        visitor's first comparison is not a long wait on the slowest model."""
        slow = {m for m in models if (await self.info(m)).get("backend") == "transformers"}
        return [m for m in models if m not in slow] + [m for m in models if m in slow]

    async def begin_turn(self, side: Side, model: str, text: str, label: str) -> bool:
        """Add the user's message to the side's conversation (a new one if the model changed), or
        put the reason the model cannot answer into its pane."""
        if side.model != model or side.conv is None or side.error:
            side.model, side.conv, side.history, side.conv_id, side.error = model, None, [], uuid.uuid4().hex, False
        try:
            if side.conv is None:
                side.conv = await self.client.conversation(model)
        except ModelUnavailable as e:
            side.history = side.history + [[as_text(text), f"Error: {label} failed: {e}"]]
            side.error = True
            return False
        side.conv.append_message(side.conv.roles[0], text)
        side.conv.append_message(side.conv.roles[1], None)
        side.history.append([as_text(text), ""])
        return True

    async def _stream_one(self, i: int, side: Side, settings: GenSettings, q: asyncio.Queue) -> None:
        """Put (i, text, error, done) on the queue for every frame of one side's answer."""
        text = ""
        try:
            params = gen_params(side.model, side.conv, temperature=settings.temperature, top_p=settings.top_p,
                                max_new_tokens=settings.max_new_tokens, seed=settings.seed)
            addr = await self.client.worker_address(side.model)
            finished = False
            async for frame in self.client.stream(addr, params):
                if frame.get("error_code", 0) != 0:
                    await q.put((i, text, frame.get("text", "worker error"), True))
                    return
                text = frame["text"].replace("\ufffd", "")
                finished = finished or bool(frame.get("finish_reason"))
                await q.put((i, text, None, False))
            err = None if finished else "the answer was cut off: the worker closed the stream without finishing"
            await q.put((i, text, err, True))
        except ModelUnavailable as e:
            await q.put((i, text, str(e), True))
        except Exception as e:  # connection refused or reset, bad frames: an honest error in this pane
            await q.put((i, text, f"the worker stopped answering ({type(e).__name__})", True))

    async def stream_sides(self, sides: list[Side], settings: GenSettings, labels: list[str]):
        """Advance every side's stream at once; yield after each update. A failing side shows an
        honest error in its own pane and the others go on."""
        q: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.create_task(self._stream_one(i, s, settings, q)) for i, s in enumerate(sides)
                 if s.conv is not None and s.history and s.history[-1][1] == ""]
        live = len(tasks)
        try:
            while live:
                i, text, error, done = await q.get()
                side = sides[i]
                shown = text
                if error:
                    side.error = True
                    shown = (text + "\n\n" if text else "") + f"Error: {labels[i]} failed: {error}"
                side.history[-1][1] = shown or "…"
                if done:
                    live -= 1
                    if not error:
                        side.conv.update_last_message(text)
                yield
        finally:
            for t in tasks:
                t.cancel()

    def vote(self, battle: Battle, vote_type: str, anony: bool, ip: str) -> None:
        states = [state_dict(s.conv, s.conv_id, s.model) for s in battle.sides]
        self.votes.record(vote_type, [s.model for s in battle.sides], states, ip, anony)
        battle.voted = True
