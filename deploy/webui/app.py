"""This deployment's web page: a side-by-side arena, an anonymous battle, direct chat and a
leaderboard, on FastChat's controller and workers. Built by a factory; per-user state lives in
gr.State, shared state on the `Arena` object, nothing on module globals.

Nothing is loaded from outside the machine: no third-party branding, images, scripts or web
fonts (Gradio's default theme would fetch Google Fonts; ours names local fonts only).
"""
from __future__ import annotations

import queue
import random
import threading
import uuid
from dataclasses import dataclass, field

import gradio as gr

from deploy.webui.fleet_client import FleetClient, ModelUnavailable
from deploy.webui.votes import VoteLog, state_dict

TITLE = "fastchat-fleet · model arena"
CSS = """
footer {display: none !important}
#pane_a .message, #pane_b .message {font-size: 15px}
.model-table table {font-size: 13px}
"""
THEME_FONTS = ["Noto Sans CJK SC", "Noto Sans", "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei", "sans-serif"]


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
    def __init__(self, client: FleetClient, votes: VoteLog, max_new_tokens: int = 512):
        self.client = client
        self.votes = votes
        self.max_new_tokens = max_new_tokens

    # ---- models -------------------------------------------------------------------------
    def models_table(self, models: list[str] | None = None) -> list[list]:
        rows = []
        for m in self.client.list_models() if models is None else models:
            i = self.client.info(m)
            budget = f"{i['memory_budget'] / 1024**3:.1f} GiB" if i.get("memory_budget") else "?"
            rows.append([m, i.get("backend", "?"), ",".join(map(str, i.get("cores", []))) or "?", budget,
                         i.get("context_length", "?"), i.get("chat_template", "?")])
        return rows

    # ---- chatting ------------------------------------------------------------------------
    def start_turn(self, side: Side, model: str, text: str) -> None:
        if side.model != model or side.conv is None or side.error:
            side.model, side.conv, side.history, side.conv_id, side.error = model, None, [], uuid.uuid4().hex, False
        if side.conv is None:
            side.conv = self.client.conversation(model)
        side.conv.append_message(side.conv.roles[0], text)
        side.conv.append_message(side.conv.roles[1], None)
        side.history.append([text, ""])

    def begin_turn(self, side: Side, model: str, text: str, label: str) -> bool:
        """start_turn, or put the reason the model cannot answer into its pane."""
        try:
            self.start_turn(side, model, text)
            return True
        except ModelUnavailable as e:
            side.history = side.history + [[text, f"Error: {label} failed: {e}"]]
            side.error, side.conv = True, None
            return False

    def stream_sides(self, sides: list[Side], temperature: float, labels: list[str], max_new_tokens: int | None = None):
        """Advance every side's stream at once; yield after each update. A failing side shows an
        honest error in its own pane and the others go on."""
        q: queue.Queue = queue.Queue()

        def run(i: int, side: Side):
            for upd in self.client.stream(side.model, side.conv, temperature=temperature,
                                          max_new_tokens=int(max_new_tokens or self.max_new_tokens)):
                q.put((i, upd))
            q.put((i, None))

        live = 0
        for i, side in enumerate(sides):
            if side.conv is not None and side.history and side.history[-1][1] == "":
                threading.Thread(target=run, args=(i, side), daemon=True).start()
                live += 1
        while live:
            i, upd = q.get()
            if upd is None:
                live -= 1
                continue
            side = sides[i]
            shown = upd.text
            if upd.error:
                side.error = True
                shown = (upd.text + "\n\n" if upd.text else "") + f"Error: {labels[i]} failed: {upd.error}"
            side.history[-1][1] = shown or "…"
            if upd.done and not upd.error:
                side.conv.update_last_message(upd.text)
            yield

    # ---- votes -------------------------------------------------------------------------------
    def vote(self, battle: Battle, vote_type: str, anony: bool, request: gr.Request | None) -> None:
        states = [state_dict(s.conv, s.conv_id, s.model) for s in battle.sides]
        ip = request.client.host if request and request.client else ""
        self.votes.record(vote_type, [s.model for s in battle.sides], states, ip, anony)
        battle.voted = True


def create_webui(client: FleetClient, votes: VoteLog, refresh_seconds: float = 5.0,
                 max_new_tokens: int = 512) -> gr.Blocks:
    arena = Arena(client, votes, max_new_tokens)
    theme = gr.themes.Default(font=THEME_FONTS, font_mono=["Noto Sans Mono CJK SC", "DejaVu Sans Mono", "monospace"])

    VOTES = (("leftvote", "A is better"), ("rightvote", "B is better"), ("tievote", "Tie"), ("bothbad_vote", "Both are bad"))

    def vote_row(prefix: str) -> list:
        return [gr.Button(t, interactive=False, elem_id=f"{prefix}_{k}") for k, t in VOTES]

    def play_round(battle: Battle, models: list[str], text: str, temp: float, labels: list[str],
                   max_new_tokens: int | None = None):
        """Both sides answer at once; yields (battle, history A, history B, input, status, *vote buttons)."""
        for side, model, label in zip(battle.sides, models, labels):
            arena.begin_turn(side, model, text, label)
        yield battle, battle.sides[0].history, battle.sides[1].history, "", "", *[gr.update(interactive=False)] * 4
        for _ in arena.stream_sides(battle.sides, temp, labels, max_new_tokens):
            yield battle, battle.sides[0].history, battle.sides[1].history, "", "", *[gr.update()] * 4
        ok = not any(s.error for s in battle.sides)
        yield (battle, battle.sides[0].history, battle.sides[1].history, "",
               "Which answer is better?" if ok else "One model failed; votes need two answers.",
               *[gr.update(interactive=ok)] * 4)

    def vote_handler(kind: str, anony: bool):
        def fn(battle: Battle, request: gr.Request):
            if battle.voted or any(s.conv is None for s in battle.sides):
                return battle, "Nothing to vote on.", *[gr.update(interactive=False)] * 4
            arena.vote(battle, kind, anony, request)
            msg = f"Vote recorded: {vote_label(kind)}."
            if anony:
                msg += f" Model A was **{battle.sides[0].model}**, Model B was **{battle.sides[1].model}**."
            else:
                msg += " Thanks!"
            return battle, msg, *[gr.update(interactive=False)] * 4
        return fn

    def new_round():
        return Battle(), [], [], "", *[gr.update(interactive=False)] * 4

    def choices_update(models, current, index):
        """Keep the user's pick while its model is registered; else the index-th model."""
        value = current if current in models else (models[min(index, len(models) - 1)] if models else None)
        return gr.update(choices=models, value=value)

    def refresh_models(a, b, d):
        models = client.list_models()
        return (arena.models_table(models), choices_update(models, a, 0), choices_update(models, b, 1),
                choices_update(models, d, 0))

    with gr.Blocks(title=TITLE, theme=theme, css=CSS, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nChat with the models this machine serves, two at a time, and vote for the "
                    "better answer. Each model runs in its own FastChat worker, pinned to its own CPU cores "
                    "and memory budget; votes feed the leaderboard.")
        models_df = gr.Dataframe(headers=["model", "backend", "cores", "memory budget", "context", "template"],
                                 value=arena.models_table, interactive=False, elem_classes="model-table",
                                 label="Models registered now")
        with gr.Tabs():
            # ---------------- side by side (named) ----------------
            with gr.Tab("Side by side", id="named"):
                named = gr.State(Battle)
                with gr.Row():
                    sel_a = gr.Dropdown(label="Model A", choices=client.list_models(), elem_id="named_model_a")
                    sel_b = gr.Dropdown(label="Model B", choices=client.list_models(), elem_id="named_model_b")
                with gr.Row():
                    bot_a = gr.Chatbot(label="Model A", elem_id="pane_a", height=420)
                    bot_b = gr.Chatbot(label="Model B", elem_id="pane_b", height=420)
                with gr.Row():
                    msg = gr.Textbox(placeholder="输入问题，两个模型同时回答 / ask both models", show_label=False,
                                     scale=8, elem_id="named_input")
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="named_send")
                with gr.Row():
                    vote_btns = vote_row("named")
                    clear = gr.Button("New round", elem_id="named_clear")
                with gr.Row():
                    temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.1, label="Temperature")
                    max_tokens = gr.Slider(16, 4096, value=max_new_tokens, step=16, label="Max new tokens",
                                           elem_id="named_max_tokens")
                named_status = gr.Markdown(elem_id="named_status")

                def named_send(battle: Battle, a, b, text, temp, max_new):
                    if not text or not text.strip():
                        yield battle, gr.update(), gr.update(), gr.update(), "Type a question first.", *[gr.update()] * 4
                        return
                    if not a or not b:
                        yield battle, gr.update(), gr.update(), gr.update(), "Pick two models.", *[gr.update()] * 4
                        return
                    if battle.voted:
                        battle = Battle()
                    yield from play_round(battle, [a, b], text, temp, [a, b], max_new)

                send_outputs = [named, bot_a, bot_b, msg, named_status, *vote_btns]
                send_inputs = [named, sel_a, sel_b, msg, temperature, max_tokens]
                send.click(named_send, send_inputs, send_outputs)
                msg.submit(named_send, send_inputs, send_outputs)

                for btn, (kind, _) in zip(vote_btns, VOTES):
                    btn.click(vote_handler(kind, anony=False), [named], [named, named_status, *vote_btns])
                clear.click(new_round, None, [named, bot_a, bot_b, named_status, *vote_btns])

            # ---------------- anonymous battle ----------------
            with gr.Tab("Battle (anonymous)", id="anony"):
                anony = gr.State(Battle)
                gr.Markdown("Two models drawn at random from those registered now answer your question; "
                            "their names are revealed after you vote.")
                with gr.Row():
                    abot_a = gr.Chatbot(label="Model A", elem_id="anony_pane_a", height=420)
                    abot_b = gr.Chatbot(label="Model B", elem_id="anony_pane_b", height=420)
                with gr.Row():
                    amsg = gr.Textbox(placeholder="输入问题 / ask", show_label=False, scale=8, elem_id="anony_input")
                    asend = gr.Button("Send", variant="primary", scale=1, elem_id="anony_send")
                with gr.Row():
                    avote_btns = vote_row("anony")
                    aclear = gr.Button("New battle", elem_id="anony_clear")
                anony_status = gr.Markdown(elem_id="anony_status")

                def anony_send(battle: Battle, text):
                    if not text or not text.strip():
                        yield battle, gr.update(), gr.update(), gr.update(), "Type a question first.", *[gr.update()] * 4
                        return
                    if battle.voted or battle.sides[0].model is None:
                        models = client.list_models()
                        if len(models) < 2:
                            yield battle, gr.update(), gr.update(), gr.update(), \
                                "A battle needs two registered models.", *[gr.update()] * 4
                            return
                        battle = Battle()
                        for side, m in zip(battle.sides, random.sample(models, 2)):
                            side.model = m
                    yield from play_round(battle, [s.model for s in battle.sides], text, 0.7, ["Model A", "Model B"])

                a_outputs = [anony, abot_a, abot_b, amsg, anony_status, *avote_btns]
                asend.click(anony_send, [anony, amsg], a_outputs)
                amsg.submit(anony_send, [anony, amsg], a_outputs)

                for btn, (kind, _) in zip(avote_btns, VOTES):
                    btn.click(vote_handler(kind, anony=True), [anony], [anony, anony_status, *avote_btns])
                aclear.click(new_round, None, [anony, abot_a, abot_b, anony_status, *avote_btns])

            # ---------------- direct chat ----------------
            with gr.Tab("Direct chat", id="direct"):
                single = gr.State(Side)
                dsel = gr.Dropdown(label="Model", choices=client.list_models(), elem_id="direct_model")
                dbot = gr.Chatbot(label="Chat", elem_id="direct_pane", height=460)
                with gr.Row():
                    dmsg = gr.Textbox(placeholder="输入问题 / ask", show_label=False, scale=8, elem_id="direct_input")
                    dsend = gr.Button("Send", variant="primary", scale=1, elem_id="direct_send")
                dclear = gr.Button("Clear")

                def direct_send(side: Side, model, text):
                    if not text or not text.strip() or not model:
                        yield side, gr.update(), gr.update()
                        return
                    ok = arena.begin_turn(side, model, text, model)
                    yield side, side.history, ""
                    if not ok:
                        return
                    for _ in arena.stream_sides([side], 0.7, [model]):
                        yield side, side.history, ""

                dsend.click(direct_send, [single, dsel, dmsg], [single, dbot, dmsg])
                dmsg.submit(direct_send, [single, dsel, dmsg], [single, dbot, dmsg])
                dclear.click(lambda: (Side(), []), None, [single, dbot])

            # ---------------- leaderboard ----------------
            with gr.Tab("Leaderboard", id="leaderboard") as lb_tab:
                lb_note = gr.Markdown(elem_id="leaderboard_note")
                lb_table = gr.Dataframe(headers=["model", "rating (BT)", "95% CI", "Elo (online)", "battles", "wins"],
                                        interactive=False, elem_id="leaderboard_table", label="Ratings")
                lb_pairs = gr.Dataframe(interactive=False, elem_id="leaderboard_pairs",
                                        label="Pairwise: share of battles the row model won against the column model")
                lb_refresh = gr.Button("Refresh", elem_id="leaderboard_refresh")

                def leaderboard():
                    lb = votes.leaderboard()
                    if not lb.ratings:
                        return "No votes yet: vote in *Side by side* or *Battle*.", [], []
                    rows = [[r["model"], r["rating"], f"{r['ci_low']} – {r['ci_high']}", r["elo"], r["battles"],
                             r["wins"]] for r in lb.ratings]
                    note = (f"{lb.n_votes} vote(s). Bradley–Terry ratings (FastChat's monitor code) with 95% "
                            f"bootstrap intervals; ties count half.")
                    return note, rows, gr.update(value=lb.pairwise[1:], headers=lb.pairwise[0])

                lb_refresh.click(leaderboard, None, [lb_note, lb_table, lb_pairs])
                lb_tab.select(leaderboard, None, [lb_note, lb_table, lb_pairs])

        # live model list: registered-later models appear, gone ones disappear
        timer = gr.Timer(refresh_seconds)
        timer.tick(refresh_models, [sel_a, sel_b, dsel], [models_df, sel_a, sel_b, dsel])
        demo.load(refresh_models, [sel_a, sel_b, dsel], [models_df, sel_a, sel_b, dsel])
        demo.load(leaderboard, None, [lb_note, lb_table, lb_pairs])
    return demo


def vote_label(kind: str) -> str:
    return {"leftvote": "A is better", "rightvote": "B is better", "tievote": "tie",
            "bothbad_vote": "both are bad"}[kind]
