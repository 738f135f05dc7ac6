"""The pieces behind a conversation kept in the browser, an edited question and a continued answer,
on real FastChat conversations: which turn a pane's message is, what an edit keeps, what the browser
stores and how it is read back, and an answer cut inside a code block."""
import asyncio

from fastchat.conversation import get_conv_template

from deploy.webui.arena import CUT, Side, Speed, Trace, closed_fence, render
from deploy.webui.saved import KEPT, SavedConversation, choices, find, forget, keep, load_all, restore, snapshot


def side(turns: list[tuple[str, str]], model: str = "qwen", traces: list | None = None) -> Side:
    s = Side(model=model, conv=get_conv_template("qwen-7b-chat"))
    for i, (q, a) in enumerate(turns):
        s.conv.append_message(s.conv.roles[0], q)
        s.conv.append_message(s.conv.roles[1], a)
        s.answers.append(a)
        s.raw.append(a)
        s.cut.append(False)
        s.speeds.append(Speed())
        s.traces.append(traces[i] if traces else None)
        s.turn_models.append((model, ""))
        s.history.append([q, a])
    return s


def test_a_panes_message_is_known_by_its_turn_through_traces_and_notes():
    s = side([("q1", "a1"), ("q2", "a2"), ("q3", "a3")], traces=[None, Trace(text="hmm", done=True), None])
    s.history.insert(2, [None, "*— another model takes over —*"])  # a model switch's note, no question
    shown = s.shown(hidden=False)
    users = [i for i, m in enumerate(shown) if m["role"] == "user"]
    assert [s.turn_at(i) for i in users] == [0, 1, 2]
    assert all(s.turn_at(i) is None for i in range(len(shown)) if i not in users)  # answers, traces, notes


def test_an_edit_keeps_the_turns_before_it_everywhere():
    s = side([("q1", "a1"), ("q2", "a2"), ("q3", "a3")])
    s.history.insert(2, [None, "note"])
    s.keep_turns(1)
    assert s.conv.messages == [[s.conv.roles[0], "q1"], [s.conv.roles[1], "a1"]]
    assert s.history == [["q1", "a1"]]
    assert (s.answers, s.raw, s.cut, len(s.speeds), len(s.traces), len(s.turn_models)) == (["a1"], ["a1"], [False], 1, 1, 1)


def test_the_browser_keeps_the_newest_first_one_copy_each_and_skips_what_it_cannot_read():
    a, b = snapshot([side([("first question", "x")])], "direct"), snapshot([side([("second", "y")])], "direct")
    store = keep(keep([], a), b)
    assert [c["id"] for c in store] == [b.id, a.id]
    again = snapshot([side([("first question", "x"), ("more", "z")])], "direct")
    again.id = a.id
    store = keep(store, again)  # the same conversation, one more turn: replaced, and now newest
    assert [c["id"] for c in store] == [a.id, b.id] and len(find(store, a.id).panes[0].turns) == 2
    assert [label for label, _ in choices(store, "direct")][0].endswith("first question (qwen; 2 turns)")
    assert choices(store, "named") == []
    assert len(load_all([*store, {"id": 1}, "junk", {"tab": "elsewhere"}])) == 2
    assert load_all({"not": "a list"}) == []
    assert [c["id"] for c in forget(store, a.id)] == [b.id]
    many = []
    for i in range(KEPT + 5):
        many = keep(many, snapshot([side([(f"q{i}", "a")])], "direct"))
    assert len(many) == KEPT and load_all(many)[0].title == f"q{KEPT + 4}"
    assert snapshot([Side()], "direct") is None  # nothing asked: nothing kept


class Client:
    """The one call restore makes: a fresh conversation in the model's template."""
    async def conversation(self, model):
        return get_conv_template("qwen-7b-chat")


def test_a_kept_conversation_opens_as_it_was_and_a_cut_answer_can_go_on():
    s = side([("q1", "a1"), ("q2", "half an answ")], traces=[Trace(text="thinking", done=True, closed=True), None])
    s.cut[-1] = True
    s.conv.set_system_message("Be brief.")
    kept = SavedConversation.model_validate(snapshot([s], "direct").model_dump())
    back = asyncio.run(restore(Client(), kept.panes[0], kept.id))
    assert back.conv.messages == s.conv.messages and back.conv.system_message == "Be brief."
    assert back.answers == ["a1", "half an answ"] and back.cut == [False, True]
    assert back.traces[0].text == "thinking" and back.traces[1] is None
    assert back.history[-1][1] == f"half an answ\n\n{CUT}"
    assert back.conv_id == s.conv_id


def test_an_answer_cut_inside_a_code_block_has_the_block_closed_before_the_marks():
    s = side([("code please", "```python\ndef f():\n    return")])
    s.cut[-1] = True
    assert render(s, 0) == f"```python\ndef f():\n    return\n```\n\n{CUT}"
    assert closed_fence("```a```") == "```a```" and closed_fence("plain") == "plain"
