"""What the page does, without its layout: conversations with models, streaming several at once,
stopping and regenerating them, speed per answer, votes. Per-user state (Side, Battle) lives in
gr.State (Gradio hands every event of a session the same object, so a Stop click reaches the
running stream through the flags on it); the shared parts live on the Arena object."""
from __future__ import annotations

import asyncio
import html
import re
import time
import uuid
from dataclasses import dataclass, field

from deploy.registry.templates import AUTO
from deploy.webui.votes import VoteLog, state_dict
from deploy.wire import routes
from deploy.wire.client import AsyncFleetClient, ModelUnavailable
from deploy.wire.frames import cached_tokens
from deploy.wire.generation import Sampling, chat_params, messages_of, worker_params
from deploy.wire.reasoning import split_whole
from deploy.wire.residency_calls import act

WAITING = "*… waiting for the first token*"
STOPPED = "■ *stopped*"
POLL = 0.2  # seconds between looks at the stop flags while no token arrives


def as_text(question: str) -> str:
    """The user's words as they typed them: the chat pane renders Markdown and HTML, so a question
    with `<img ...>` or `<script>` showed as a broken image or an empty bubble."""
    return html.escape(question, quote=False)


CODE = re.compile(r"(```.*?(?:```|$)|`[^`\n]+`)", re.S)


def safe_markdown(answer: str) -> str:
    """A model's answer as the pane shows it: its Markdown renders, but HTML it writes (often an
    echo of the question's) is shown as text; code spans and blocks are left alone, where the
    renderer already shows `<` as written."""
    parts = CODE.split(answer)
    return "".join(p if i % 2 else html.escape(p, quote=False) for i, p in enumerate(parts))


@dataclass
class GenSettings:
    """What the user chose; sent to the worker with the same keys the API server sends."""
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None
    system_prompt: str = ""


@dataclass
class Speed:
    """One answer's speed, measured where the user sees it: from send to first token, then decode."""
    ttft: float | None = None
    tokens: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int | None = None  # of the prompt, already in the worker's KV cache (llama.cpp says)
    final: bool = False  # the answer ended: its pane shows the line (a battle's only after the vote)
    earlier: int = 0  # tokens of the answer written before Continue (counted, not timed again)

    @property
    def tps(self) -> float | None:
        decode, new = self.seconds - (self.ttft or 0), self.tokens - self.earlier
        return (new - 1) / decode if new > 1 and decode > 0 else None

    def line(self) -> str:
        parts = [f"{self.ttft:.2f} s to first token" if self.ttft is not None else "no token"]
        if self.tps is not None:
            parts.append(f"{self.tps:.1f} tok/s")
        parts.append(f"{self.tokens} tokens")
        if self.cached_tokens:  # a follow-up: the conversation so far was not computed again
            parts.append(f"{self.cached_tokens} of {self.prompt_tokens} prompt tokens reused")
        return " · ".join(parts)


@dataclass
class Trace:
    """A thinking model's trace for one answer: its text, whether it ended, how long it took and how
    many tokens it used (counted from the answer's first token to its end)."""
    text: str = ""
    done: bool = False    # it stopped growing: the answer began, or the answer ended
    closed: bool = False  # the model ended its trace and began its answer
    seconds: float = 0.0
    tokens: int = 0

    def metadata(self, hidden: bool) -> dict:
        """Gradio's folded block for it: open with a spinner while it grows, folded once done."""
        if hidden:
            return {"title": "Thinking…", "status": "pending" if not self.done else "done"}
        meta = {"title": "Thinking", "status": "done" if self.done else "pending", "log": f"{self.tokens} tokens"}
        if self.done:
            meta["duration"] = round(self.seconds, 1)
        return meta


@dataclass
class Side:
    """One pane's conversation: which model, its template, its history, and per-answer speed."""
    model: str | None = None
    conv: object = None
    conv_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    history: list = field(default_factory=list)  # [[user, bot], ...] for gr.Chatbot
    answers: list = field(default_factory=list)  # raw answer text per turn (history shows it with its speed)
    speeds: list = field(default_factory=list)   # Speed per turn
    traces: list = field(default_factory=list)   # Trace or None per turn: a thinking model's trace
    opened: bool = False  # the last prompt opened a trace (the model's own template did)
    turn_models: list = field(default_factory=list)  # (model, system prompt) per turn: who wrote each answer
    raw: list = field(default_factory=list)  # per turn, the text as the model wrote it (trace and answer)
    cut: list = field(default_factory=list)  # per turn, whether it stopped at the most new tokens
    continuing: str | None = None  # Continue: the text the model goes on from (its prompt ends with it)
    error: bool = False
    loading_since: float | None = None  # its model was not in memory when this answer was asked
    stop: bool = False  # set by a Stop click; the running stream ends this side's answer
    abandoned: bool = False  # New chat: the running stream must not write into the pane again
    replaced_by: "Side | None" = None  # ...and its last update shows this one instead (see app.py)

    @property
    def messages(self) -> list[dict]:
        return self.shown(hidden=False)

    def shown(self, hidden: bool) -> list[dict]:
        """The history as the pane (gr.Chatbot, messages format) shows it, each text as a text block
        (Gradio shows it as it is; a plain string loses its common indentation: unfenced code); a
        trace folded above its answer, and under each ended answer its speed line. `hidden`: a battle
        before the vote, where a model's thinking style would name it (the trace is only "Thinking…"),
        and so would its speed: a tokenizer's prompt count, a backend's missing cache figure, a
        model's pace (the line is left out)."""
        def say(role: str, text: str, meta: dict | None = None) -> dict:
            return {"role": role, "content": [{"type": "text", "text": text}], **({"metadata": meta} if meta else {})}
        out, turn = [], -1
        for user, bot in self.history:
            if user is not None:
                out.append(say("user", user))
                turn += 1
            trace = self.traces[turn] if 0 <= turn < len(self.traces) and user is not None else None
            if trace is not None:
                out.append(say("assistant", "" if hidden else safe_markdown(trace.text), trace.metadata(hidden)))
            if bot is not None:
                sp = self.speeds[turn] if 0 <= turn < len(self.speeds) and user is not None else None
                line = f"\n\n`{sp.line()}`" if sp and sp.final and sp.ttft is not None and not hidden else ""
                out.append(say("assistant", bot + line))
        return out

    def turn_at(self, index: int) -> int | None:
        """The turn whose question is message `index` of the pane (as `shown` lists them)."""
        at, turn = -1, -1
        for user, bot in self.history:
            if user is not None:
                turn, at = turn + 1, at + 1
                if at == index:
                    return turn
                at += self.traces[turn] is not None if turn < len(self.traces) else 0
            at += bot is not None
            if at >= index:
                return None
        return None

    def keep_turns(self, n: int) -> None:
        """Only the first n turns stay (an edited question is asked again from there)."""
        rows, seen = [], 0
        for row in self.history:
            if row[0] is not None:
                if seen == n:
                    break
                seen += 1
            rows.append(row)
        self.history = rows
        if self.conv is not None:
            del self.conv.messages[self.conv.offset + 2 * n:]
        for name in ("answers", "speeds", "traces", "turn_models", "raw", "cut"):
            del getattr(self, name)[n:]
        self.continuing, self.stop = None, False


@dataclass
class Battle:
    sides: list[Side] = field(default_factory=lambda: [Side(), Side()])
    voted: bool = False
    titles: list[str] | None = None  # each pane's heading to show now (a battle's names after the vote)
    abandoned: bool = False  # New round: the running stream must not write into the panes again
    replaced_by: "Battle | None" = None  # ...and its last update shows this one instead (see app.py)
    question: str = ""
    previous: "Battle | None" = None  # the round a change of the number of panes replaced (Undo)

    @property
    def hidden(self) -> bool:
        """An anonymous battle before its vote: nothing shown may tell its models apart."""
        return self.titles is not None and not self.voted

    def panes(self) -> list[list[dict]]:
        """Each side's conversation as its pane shows it now."""
        return [s.shown(self.hidden) for s in self.sides]


CUT_IN_TRACE = "*✂ no answer: it was still thinking when it reached the most new tokens (**Continue** goes on; or raise **Max new tokens**)*"
CUT = "*✂ cut off at the most new tokens*"  # the status line offers Continue for the last answer
CUT_STATUS = "An answer stopped at **Max new tokens**: **Continue** goes on from there."


def render(side: Side, i: int, stopped: bool = False) -> str:
    """Turn i's bubble as it ended: the answer (its speed line is added where it is shown: see
    Side.shown); an answer that never began because the trace used every token allowed says so
    (Stop says its own)."""
    trace = side.traces[i] if i < len(side.traces) else None
    in_trace = trace is not None and not trace.closed and not stopped
    answer = closed_fence(safe_markdown(side.answers[i]))
    if not answer:
        return CUT_IN_TRACE if in_trace else ""
    return answer + (f"\n\n{CUT}" if i < len(side.cut) and side.cut[i] and not stopped else "")


def closed_fence(text: str) -> str:
    """An answer that stopped inside a code block gets the block closed, so what the pane adds
    under it (the cut mark, Stop's mark, the speed line) is not shown as code."""
    return text + "\n```" if text.count("```") % 2 else text


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
            rows.append([m, i.get("backend", "?"), precision(i) or "?",
                         ",".join(map(str, i.get("cores", []))) or "?", _gib(i.get("memory_budget")),
                         i.get("context_length", "?"), i.get("chat_template", "?"), i.get("source") or "–"])
        return rows

    async def residency(self, model: str) -> dict:
        """{"state": loaded / asleep / loading, "pinned": bool, ...}: the model's worker, asked now
        (not cached); {} when no worker serves it."""
        try:
            return await self.client.worker_info(await self.client.worker_address(model))
        except ModelUnavailable:
            return {}

    async def state(self, model: str) -> str | None:
        """loaded / asleep / loading: whether the model is in memory now."""
        return (await self.residency(model)).get("state")

    async def describe(self, model: str | None) -> str:
        """One line about a model, shown under its picker: whether it is in memory, what it is and
        where it runs."""
        return (await self.picker_state(model))[0]

    async def picker_state(self, model: str | None) -> tuple[str, str]:
        """What a picker shows of its model, from one look at its worker: the line under it
        (describe) and the pin button's text (what a click does: Pin, or Unpin when pinned)."""
        if not model:
            return "", "Pin"
        i = await self.info(model)
        if not i:
            return f"*{model}: no details (not one of this fleet's workers)*", "Pin"
        size = f"{i['model_bytes'] / 1024**3:.1f} GB" if i.get("model_bytes") else None
        now = await self.residency(model)
        bits = [now.get("state"), "pinned" if now.get("pinned") else None, i.get("backend"), precision(i), size,
                f"cores {','.join(map(str, i.get('cores', [])))}", f"budget {_gib(i.get('memory_budget'))}",
                f"ctx {i.get('context_length')}", f"from {i['source']}" if i.get("source") else None]
        line = " · ".join(html.escape(str(b)) for b in bits if b)
        # the whole line on hover, where the pane cuts it
        return f'<small title="{line}">{line}</small>', "Unpin" if now.get("pinned") else "Pin"

    async def load(self, model: str | None) -> str:
        """Load the picked model now (its line says so, or why not: the pool's reason)."""
        return (await self._residency(model, "load"))[0]

    async def unload(self, model: str | None) -> str:
        """Unload the picked model now, unless it is answering or pinned (its line says why not)."""
        return (await self._residency(model, "unload"))[0]

    async def toggle_pin(self, model: str | None) -> tuple[str, str]:
        """Pin the picked model (kept in memory, never unloaded), or unpin it if it is pinned; its
        line and the button's new text."""
        pinned = bool(model) and bool((await self.residency(model)).get("pinned"))
        return await self._residency(model, "unpin" if pinned else "pin")

    async def _residency(self, model: str | None, action: str) -> tuple[str, str]:
        """`action` asked of the model's workers; then its picker_state, with why not if refused."""
        if not model:
            return "<small>Pick a model first.</small>", "Pin"
        try:
            outcome = await act(self.client, model, action)
        except ModelUnavailable:
            return f"<small>{html.escape(model)} is not served now.</small>", "Pin"
        line, pin = await self.picker_state(model)
        if outcome.ok:
            return line, pin
        done = {"load": "loaded", "unload": "unloaded", "pin": "pinned", "unpin": "unpinned"}[action]
        return line + f"<br><small>Not {done}: {html.escape('; '.join(outcome.reasons))}</small>", pin

    async def quick_first(self, models: list[str]) -> list[str]:
        """The order default picks come from: models whose workers batch concurrent requests (the
        'batching' feature) first; the others answer one request at a time, at a few tokens/s on a
        CPU, so a new visitor's first comparison is not a long wait on the slowest model."""
        slow = {m for m in models if "batching" not in ((await self.info(m)).get("features") or ())}
        return [m for m in models if m not in slow] + [m for m in models if m in slow]

    async def _switch(self, side: Side, model: str) -> None:
        """A new model for a conversation that already has turns: it gets them all (its own
        template), so a follow-up after switching keeps the context."""
        old = side.conv
        side.conv = await self.client.conversation(model)
        for role_index, (_, msg) in enumerate(old.messages[old.offset:]):
            if msg is not None:
                side.conv.append_message(side.conv.roles[role_index % 2], msg)
        side.history.append([None, f"*— {html.escape(model)} takes over; it sees the conversation so far —*"])

    async def begin_turn(self, side: Side, model: str, text: str, label: str, system: str = "") -> bool:
        """Add the user's message to the side's conversation (started, or carried over to a new
        model), or put the reason the model cannot answer into its pane."""
        side.stop = False
        if side.error:  # a failed pane starts over
            side.conv, side.history, side.answers, side.speeds, side.error = None, [], [], [], False
        try:
            if side.conv is None:
                side.conv, side.conv_id = await self.client.conversation(model), uuid.uuid4().hex
            elif side.model != model:
                await self._switch(side, model)
        except ModelUnavailable as e:
            side.model = model
            side.history = side.history + [[as_text(text), f"Error: {label} failed: {helpful(str(e), model, label)}"]]
            side.error = True
            return False
        side.model = model
        if system.strip():
            side.conv.set_system_message(system.strip())
        side.conv.append_message(side.conv.roles[0], text)
        side.conv.append_message(side.conv.roles[1], None)
        side.turn_models.append((model, side.conv.system_message))
        side.history.append([as_text(text), WAITING])
        side.answers.append("")
        side.speeds.append(Speed())
        side.traces.append(None)
        side.raw.append("")
        side.cut.append(False)
        side.continuing = None
        return True

    def retract(self, side: Side) -> bool:
        """Take back the last answer so it can be asked again (Regenerate)."""
        if side.conv is None or side.error or not side.answers or len(side.conv.messages) < 2:
            return False
        side.stop = False
        side.conv.messages[-1][1] = None
        side.answers[-1], side.speeds[-1] = "", Speed()
        side.traces[-1], side.raw[-1], side.cut[-1], side.continuing = None, "", False, None
        side.history[-1][1] = WAITING
        return True

    def extend(self, side: Side) -> bool:
        """Continue the last answer, cut off at the most new tokens: the model is asked again with
        its answer so far at the end of the prompt, and goes on from there."""
        if side.conv is None or side.error or not side.cut or not side.cut[-1] or not side.raw[-1]:
            return False
        side.stop, side.continuing, side.cut[-1] = False, side.raw[-1], False
        if side.traces[-1] is not None and not side.traces[-1].closed:  # cut while thinking: the trace goes on
            side.traces[-1].done = False
        side.conv.messages[-1][1] = None
        side.speeds[-1] = Speed(earlier=side.speeds[-1].tokens)
        side.history[-1][1] = render(side, len(side.answers) - 1) + "\n\n*… continuing*"
        return True

    async def _stream_one(self, i: int, side: Side, settings: GenSettings, q: asyncio.Queue) -> None:
        """Put (i, text, error, done, speed) on the queue for every frame of one side's answer."""
        before = side.continuing or ""
        text, speed, t0 = before, Speed(earlier=side.speeds[-1].earlier if before else 0), time.perf_counter()
        if await self.state(side.model) in ("asleep", "loading"):  # the pane says so until the first token
            side.loading_since = time.monotonic()
        try:
            addr = await self.client.worker_address(side.model)
            params = await self.request(addr, side, Sampling(
                temperature=settings.temperature, top_p=settings.top_p, max_new_tokens=settings.max_new_tokens,
                seed=settings.seed))
            finished = None
            async for frame in self.client.stream(addr, params):
                if frame.get("error_code", 0) != 0:
                    await q.put((i, text, frame.get("text", "worker error"), True, speed))
                    return
                new = frame["text"].replace("\ufffd", "")
                text = before + new
                if new and speed.ttft is None:
                    speed.ttft = time.perf_counter() - t0
                usage = frame.get("usage") or {}
                speed.tokens = speed.earlier + int(usage.get("completion_tokens") or speed.tokens - speed.earlier)
                speed.prompt_tokens = int(usage.get("prompt_tokens") or speed.prompt_tokens)
                cached = cached_tokens(usage)
                speed.cached_tokens = speed.cached_tokens if cached is None else cached
                speed.seconds = time.perf_counter() - t0
                finished = frame.get("finish_reason") or finished
                await q.put((i, text, None, False, speed))
            err = None if finished else "the answer was cut off: the worker closed the stream without finishing"
            side.cut[-1] = finished == "length"
            await q.put((i, text, err, True, speed))
        except ModelUnavailable as e:
            await q.put((i, text, str(e), True, speed))
        except Exception as e:  # connection refused or reset, bad frames: an honest error in this pane
            await q.put((i, text, f"the worker stopped answering ({type(e).__name__})", True, speed))

    async def request(self, addr: str, side: Side, sampling: Sampling) -> dict:
        """The worker request for a side's conversation: in the model's own template (rendered by its
        worker, chat_template = "auto"), or in the FastChat template its entry names."""
        side.opened = False
        if side.conv.name != AUTO:
            params = chat_params(side.model, side.conv, sampling)
        else:
            rendered = await self.client.worker_post(addr, routes.WORKER_RENDER, {
                "model": side.model, "messages": messages_of(side.conv), "chat_template_kwargs": {}}, timeout=900)
            side.opened = rendered["opens_thinking"]
            params = {**worker_params(side.model, rendered["prompt"], side.conv, sampling),
                      "prompt_parts": rendered["prompt_parts"]}
        if side.continuing:  # the answer so far ends the prompt, as the model's own text
            params["prompt"] += side.continuing
            params["prompt_parts"] = [*params["prompt_parts"], ["message", side.continuing]]
        return params

    def _answered(self, side: Side, text: str, speed: Speed) -> None:
        """A frame's text as the side's trace (a thinking model's, folded) and answer."""
        reasoning, answer = split_whole(text, side.opened)
        side.answers[-1], side.raw[-1] = answer, text
        if reasoning is not None:
            trace = side.traces[-1] or Trace()
            if not trace.done:
                trace.text, trace.tokens = reasoning, speed.tokens
                trace.seconds = speed.seconds - (speed.ttft or 0) if speed.ttft else 0.0
                trace.done = trace.closed = bool(answer)  # the answer began: the trace ended
            side.traces[-1] = trace

    async def stream_sides(self, sides: list[Side], settings: GenSettings, labels: list[str]):
        """Advance every side's stream at once; yield after each update. A failing side shows an
        honest error in its own pane and the others go on; a side whose Stop was clicked keeps
        what it has so far (and the conversation keeps it as context)."""
        q: asyncio.Queue = asyncio.Queue()
        tasks = {i: asyncio.create_task(self._stream_one(i, s, settings, q)) for i, s in enumerate(sides)
                 if s.conv is not None and s.history and (s.history[-1][1] == WAITING or s.continuing)}
        live = set(tasks)
        try:
            while live:
                for i in [i for i in live if sides[i].stop]:
                    tasks[i].cancel()
                    live.discard(i)
                    self._finish(sides[i], sides[i].answers[-1], stopped=True)
                    yield
                if not live:
                    break
                try:
                    i, text, error, done, speed = await asyncio.wait_for(q.get(), POLL)
                except asyncio.TimeoutError:
                    if any([_show_loading(sides[i], labels[i]) for i in live]):
                        yield
                    continue
                if i not in live:
                    continue
                side = sides[i]
                side.loading_since = None
                side.speeds[-1] = speed
                self._answered(side, text, speed)
                answer = side.answers[-1]
                if error:
                    side.error, side.continuing = True, None
                    side.history[-1][1] = ((safe_markdown(answer) + "\n\n" if answer else "")
                                           + f"Error: {labels[i]} failed: {helpful(error, side.model, labels[i])}")
                    live.discard(i)
                elif done:
                    if side.traces[-1] is not None:
                        side.traces[-1].done = True
                    self._finish(side, answer)
                    live.discard(i)
                else:
                    side.history[-1][1] = safe_markdown(answer) or ("" if side.traces[-1] else WAITING)
                yield
        finally:
            for t in tasks.values():
                t.cancel()

    @staticmethod
    def _finish(side: Side, text: str, stopped: bool = False) -> None:
        side.continuing = None
        side.conv.update_last_message(text)
        side.speeds[-1].final = True
        side.history[-1][1] = render(side, len(side.answers) - 1, stopped) + (f"\n\n{STOPPED}" if stopped else "")

    def vote_best(self, battle: Battle, best: int | str, ip: str) -> int:
        """Best of N panes (names shown), as pairwise outcomes in FastChat's format: `best` (a
        pane's index) beat each other pane; or "tievote" / "bothbad_vote" for every pair. Returns
        how many were recorded."""
        sides, n = battle.sides, len(battle.sides)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        if isinstance(best, int):
            pairs = [(i, j) for i, j in pairs if best in (i, j)]
        for i, j in pairs:
            kind = best if isinstance(best, str) else ("leftvote" if best == i else "rightvote")
            states = [state_dict(s.conv, s.conv_id, s.model) for s in (sides[i], sides[j])]
            self.votes.record(kind, [sides[i].model, sides[j].model], states, ip, anony=False, best_of=n)
        battle.voted = True
        return len(pairs)

    def vote(self, battle: Battle, vote_type: str, anony: bool, ip: str) -> None:
        states = [state_dict(s.conv, s.conv_id, s.model) for s in battle.sides]
        self.votes.record(vote_type, [s.model for s in battle.sides], states, ip, anony)
        battle.voted = True
        self.votes.warm()  # the leaderboard's intervals, computed before the tab is opened


OVERFLOW = re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)"
                      r"|maximum context length is (\d+) tokens\. However, your messages resulted in (\d+) tokens")


def helpful(error: str, model: str | None, label: str) -> str:
    """An error as a user of the page can act on it: what went wrong and what they can do. The
    engine's own words ("try increasing it") speak to the operator, who is not at the page; in a
    battle the error names the pane's label, never the model behind it."""
    m = OVERFLOW.search(error)
    if m:
        used, ctx = (m[1], m[2]) if m[1] else (m[4], m[3])
        error = (f"the conversation is too long for it: {used} tokens, and it reads at most {ctx}. Shorten your "
                 f"message, or start over (New chat, New round) so the earlier turns are left out.")
    elif "stopped answering" in error or "cut off" in error:
        error += ". Its worker may have restarted: ask again in a moment, or pick another model."
    return error.replace(model, label) if model and label != model else error


def _show_loading(side: Side, label: str) -> bool:
    """While a side's model loads, its pane says so with the time waited; True when that changed."""
    if side.loading_since is None:
        return False
    line = f"*… loading {html.escape(label)} into memory ({time.monotonic() - side.loading_since:.0f} s)*"
    if side.history[-1][1] == line:
        return False
    side.history[-1][1] = line
    return True


def precision(info: dict) -> str | None:
    """How the model's numbers are held: a GGUF's quantisation, or the dtype a transformers worker
    computes in, with the stored one where they differ (bf16 weights computed in float32 on a CPU
    without bf16 arithmetic)."""
    if info.get("quantisation"):
        return info["quantisation"]
    dtype, stored = info.get("dtype"), info.get("weights_dtype")
    if dtype and stored and stored != dtype:
        return f"{dtype} (weights stored as {stored}, computed in {dtype})"
    return dtype


def _gib(n) -> str:
    return f"{n / 1024**3:.1f} GiB" if n else "?"
