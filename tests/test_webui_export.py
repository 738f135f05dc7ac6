"""Export and share: what a conversation file and a battle result say (real FastChat conversations)."""
import json

from fastchat.conversation import get_conv_template

from deploy.webui.arena import Battle, Side, Speed, render
from deploy.webui.export import as_json, as_markdown, share_text


def side(model: str, turns: list[tuple[str, str]], system: str = "") -> Side:
    conv = get_conv_template("qwen-7b-chat")
    if system:
        conv.set_system_message(system)
    s = Side(model=model, conv=conv)
    for q, a in turns:
        conv.append_message(conv.roles[0], q)
        conv.append_message(conv.roles[1], a)
        s.answers.append(a)
        s.speeds.append(Speed(ttft=0.5, tokens=21, seconds=1.5))
    return s


def test_json_export_holds_every_turn_with_its_speed_and_the_system_prompt():
    s = side("qwen", [("你好", "你好！"), ("1+1=?", "2")], system="Answer briefly.")
    doc = json.loads(as_json([s], ["qwen"], {"temperature": 0.7, "seed": 3}))
    conv = doc["conversations"][0]
    assert conv["model"] == "qwen" and conv["system"] == "Answer briefly."
    assert [(t["user"], t["assistant"]) for t in conv["turns"]] == [("你好", "你好！"), ("1+1=?", "2")]
    assert conv["turns"][1]["speed"] == {"ttft_s": 0.5, "tokens": 21, "tokens_per_s": 20.0, "prompt_tokens": 0,
                                         "cached_tokens": None}
    assert doc["settings"] == {"temperature": 0.7, "seed": 3}


def test_markdown_export_reads_as_a_transcript():
    md = as_markdown([side("a", [("Q1", "A1")]), side("b", [("Q1", "B1")])], ["Model A (a)", "Model B (b)"],
                     {"temperature": 0.0, "system_prompt": ""}, vote="A is better")
    assert "## Model A (a)" in md and "**User:** Q1" in md and "**Model B (b):** B1" in md
    assert "Vote: **A is better**" in md and "temperature 0.0" in md and "system_prompt" not in md


def test_the_speed_line_under_an_ended_answer_but_not_in_a_battle_before_its_vote():
    s = side("qwen", [("q", "an answer")])
    s.history = [["q", render(s, 0)]]
    assert render(s, 0) == "an answer"
    assert s.shown(hidden=False)[-1]["content"][0]["text"] == "an answer"  # still answering: no line yet
    s.speeds[0].final = True
    line = "an answer\n\n`0.50 s to first token · 20.0 tok/s · 21 tokens`"
    assert s.shown(hidden=False)[-1]["content"][0]["text"] == line
    assert s.shown(hidden=True)[-1]["content"][0]["text"] == "an answer"
    b = Battle(sides=[s, side("smollm", [("q", "y")])], titles=["Model A", "Model B"])
    assert "first token" not in str(b.panes()) and '"speed": null' in as_json(b.sides, ["A", "B"], {}, hidden=True)
    b.voted = True
    assert "first token" in str(b.panes())
    s.speeds[0] = Speed(final=True)  # no token came: no speed line
    assert s.shown(hidden=False)[-1]["content"][0]["text"] == "an answer"


def test_a_shared_battle_result_names_the_models_the_winner_and_the_question():
    b = Battle(sides=[side("qwen", [("q", "x")]), side("smollm", [("q", "y")])], question="明明和白白谁喜欢谁？")
    text = share_text(b, "rightvote")
    assert "qwen vs smollm: smollm won" in text and "Question: 明明和白白谁喜欢谁？" in text
    assert "qwen 20.0 tok/s" in text and "*" not in text  # plain text: it is pasted where Markdown is not read


def test_an_answer_exported_while_it_streams_or_cut_off_says_it_is_incomplete():
    s = side("qwen", [("q1", "a whole answer"), ("q2", "cut off")])
    s.cut = [False, True]
    s.conv.append_message(s.conv.roles[0], "q3")
    s.conv.append_message(s.conv.roles[1], None)  # still streaming
    s.answers.append("so far")
    turns = json.loads(as_json([s], ["qwen"], {}))["conversations"][0]["turns"]
    assert [(t["assistant"], t["incomplete"]) for t in turns] == [
        ("a whole answer", None), ("cut off", "cut off at the most new tokens"), ("so far", "still answering")]
    md = as_markdown([s], ["qwen"], {})
    assert "**qwen:** so far\n\n*(incomplete: still answering)*" in md


def test_html_a_model_writes_is_shown_as_text_but_code_and_markdown_stay():
    from deploy.webui.arena import safe_markdown

    assert safe_markdown('Here: <img src=x onerror="alert(1)"> **bold**') == \
        'Here: &lt;img src=x onerror="alert(1)"&gt; **bold**'
    code = "```html\n<b>hi</b>\n```\nand `a<b` then <i>x</i>"
    assert safe_markdown(code) == "```html\n<b>hi</b>\n```\nand `a<b` then &lt;i&gt;x&lt;/i&gt;"
    assert safe_markdown("```\nunfinished <b>") == "```\nunfinished <b>"  # a code block still streaming


def test_a_conversation_two_models_answered_credits_each_turn():
    s = side("qwen", [("q1", "a1"), ("q2", "a2")])
    s.turn_models = [("smol", "You are SmolLM."), ("qwen", "You are Qwen.")]
    md = as_markdown([s], ["qwen"], {})
    assert "## smol → qwen" in md and "**smol:** a1" in md and "**qwen:** a2" in md
    assert "*System (qwen):* You are Qwen." in md
    turns = json.loads(as_json([s], ["qwen"], {}))["conversations"][0]["turns"]
    assert [(t["model"], t["system"]) for t in turns] == [("smol", "You are SmolLM."), ("qwen", "You are Qwen.")]
    hidden = json.loads(as_json([s], ["Model A"], {"system_prompt": ""}, hidden=True))["conversations"][0]
    assert hidden["model"] is None and hidden["system"] == "" and {t["model"] for t in hidden["turns"]} == {None}
