"""The API as today's clients speak it, with the real clients: the official `openai` client's
Responses API (streamed and not), the `anthropic` client's Messages API (streamed and not, with its
own error shape and x-api-key), rerank, embeddings from every llama.cpp model by default, and
FastChat's own tests/test_openai_api.py flow on every registered model; and no service of the
fleet answers a Host header that is not its own (DNS rebinding)."""
import json

import anthropic
import httpx
import pytest

from conftest import QWEN, QWEN_HF, SMALL, Stack, entry
from openai.types.responses.response import IncompleteDetails

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    # the 0.5B Qwen's entry says nothing about embeddings: llama.cpp serves them by default now
    models = [entry(SMALL), {k: v for k, v in entry(QWEN).items() if k != "embeddings"}, entry(QWEN_HF)]
    s = Stack(tmp_path_factory.mktemp("clients"), models)
    s.use_api_keys()
    try:
        s.start_fleet()
        s.wait_registered([SMALL, QWEN, QWEN_HF])
        s.start_webui()
        yield s
    finally:
        s.stop()


@pytest.fixture
def oai(fleet):
    return fleet.openai()


@pytest.fixture
def claude(fleet):
    return anthropic.Anthropic(base_url=fleet.api_base[: -len("/v1")], api_key=fleet.api_key, max_retries=0)


def test_responses_api_streamed_and_not(oai):
    r = oai.responses.create(model=SMALL, input="Say hi.", instructions="Answer in one short sentence.",
                             max_output_tokens=12, temperature=0)
    assert r.output_text.strip() and 0 < r.usage.output_tokens <= 12
    assert (r.status, r.incomplete_details) == (("incomplete", IncompleteDetails(reason="max_output_tokens"))
                                                if r.usage.output_tokens == 12 else ("completed", None))
    events = list(oai.responses.create(model=SMALL, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Say hi."}]}], max_output_tokens=12, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == ("response.incomplete" if events[-1].response.usage.output_tokens == 12 else "response.completed")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas.strip() and deltas == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))


def test_responses_api_refuses_what_it_cannot_do(oai):
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match="previous_response_id"):
        oai.responses.create(model=SMALL, input="hi", previous_response_id="resp_123")
    with pytest.raises(BadRequestError, match="take text only"):
        oai.responses.create(model=SMALL, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,AA"}]}])


def test_messages_api_streamed_and_not_with_its_own_errors(claude, fleet):
    m = claude.messages.create(model=SMALL, max_tokens=12, system="Be brief.",
                               messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}])
    assert m.type == "message" and m.content[0].text.strip() and m.stop_reason in ("end_turn", "max_tokens")
    assert 0 < m.usage.output_tokens <= 12 and m.usage.input_tokens > 0
    with claude.messages.stream(model=SMALL, max_tokens=12, messages=[{"role": "user", "content": "Say hi."}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == final.content[0].text and final.stop_reason in ("end_turn", "max_tokens")
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError, match="must start with a user message"):
        claude.messages.create(model=SMALL, max_tokens=8, messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=fleet.api_base[:-3], api_key="wrong-wrong-wrong-wrong", max_retries=0) \
            .messages.create(model=SMALL, max_tokens=8, messages=[{"role": "user", "content": "x"}])


def test_rerank_orders_documents_by_relevance(fleet):
    docs = ["Bananas are yellow and sweet.", "The weather is cold in winter.", "What is the capital city of France?"]
    for path in ("/v1/rerank", "/rerank"):
        r = httpx.post(fleet.api_base[:-3] + path, headers={"Authorization": f"Bearer {fleet.api_key}"}, timeout=60,
                       json={"model": QWEN, "query": "What is the capital city of France?", "documents": docs,
                             "top_n": 2, "return_documents": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["index"] for x in body["results"]][0] == 2  # the document equal to the query ranks first
        assert len(body["results"]) == 2 and body["results"][0]["document"]["text"] == docs[2]
        scores = [x["relevance_score"] for x in body["results"]]
        assert scores == sorted(scores, reverse=True) and body["usage"]["prompt_tokens"] > 0


def test_fastchats_own_openai_api_flow_on_every_model(oai):
    """FastChat's tests/test_openai_api.py, with today's client: completion with logprobs (where the
    model's backend has them, as FastChat's script skips them for models without), completion
    stream, chat, chat stream and embeddings, on every registered model."""
    names = [m.id for m in oai.models.list().data]
    assert set(names) == {SMALL, QWEN, QWEN_HF}
    for model in names:
        logprob = None if model == QWEN_HF else 1
        c = oai.completions.create(model=model, prompt="Once upon a time", logprobs=logprob, max_tokens=16,
                                   temperature=0)
        assert c.choices[0].text
        if logprob:
            assert len(c.choices[0].logprobs.token_logprobs) == c.usage.completion_tokens
        assert "".join(ch.choices[0].text for ch in oai.completions.create(
            model=model, prompt="Once upon a time", max_tokens=16, stream=True, temperature=0))
        msg = [{"role": "user", "content": "Hello! What is your name?"}]
        assert oai.chat.completions.create(model=model, messages=msg, temperature=0, max_tokens=16
                                           ).choices[0].message.content
        assert "".join(ch.choices[0].delta.content or "" for ch in oai.chat.completions.create(
            model=model, messages=msg, stream=True, temperature=0, max_tokens=16) if ch.choices)
        e = oai.embeddings.create(model=model, input="Hello world!")
        assert len(e.data[0].embedding) > 100


def test_token_check_names_an_unknown_model_with_a_404(fleet):
    r = httpx.post(fleet.api_base[:-3] + "/api/v1/token_check", headers={"Authorization": f"Bearer {fleet.api_key}"},
                   json={"prompts": [{"model": "no-such-model", "prompt": "hi", "max_tokens": 4}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(fleet.api_base[:-3] + "/api/v1/token_check", headers={"Authorization": f"Bearer {fleet.api_key}"},
                   json={"prompts": [{"model": SMALL, "prompt": "hi", "max_tokens": 4}]})
    assert r.status_code == 200 and r.json()["prompts"][0]["fits"] is True


def test_no_service_answers_a_host_name_that_is_not_its_own(fleet):
    """DNS rebinding: a web page's own name pointed at 127.0.0.1 reaches our ports, but every service
    refuses a Host header that is not one of ours, before routing (and before the keys)."""
    worker = fleet.worker_address(SMALL)
    services = {"API": fleet.api_base + "/models", "controller": fleet.controller + "/list_models",
                "worker": worker + "/worker_get_status", "web UI": fleet.webui_url + "/"}
    key = {"Authorization": f"Bearer {fleet.api_key}"}
    for what, url in services.items():
        method = "GET" if what in ("API", "web UI") else "POST"
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
            r = httpx.request(method, url, headers={**key, "Host": host}, timeout=10)
            assert r.status_code == 421 and "not this server" in r.text, (what, host, r.status_code)
        for host in ("127.0.0.1", "localhost"):
            r = httpx.request(method, url, headers={**key, "Host": f"{host}:1234"}, timeout=30)
            assert r.status_code == 200, (what, host, r.status_code, r.text[:200])
    assert json.loads(httpx.get(fleet.api_base + "/models", headers={"Host": "evil.example"}).text)["error"]["code"] \
        == "misdirected_request"
