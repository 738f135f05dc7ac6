"""The worker's own parts, without a model: request mapping, frame coalescing, the concurrency
semaphore, and the fleet client's protocol helpers against FastChat's own."""
import asyncio
import json
import threading
import time

import pytest

from deploy.backends.llamacpp_worker import LlamaCppWorker, engine_request
from deploy.wire.frames import FrameDecoder
from deploy.wire.generation import Sampling, chat_params


def test_engine_request_maps_fastchat_params():
    body = engine_request({"prompt": "p", "max_new_tokens": 7, "temperature": 0.2, "top_p": 0.9, "top_k": -1,
                           "stop": "<|im_end|>"}, stream=True)
    assert body["top_k"] == 0  # FastChat's -1 (off) is llama.cpp's 0 (whole vocabulary)
    assert body["stop"] == ["<|im_end|>"]  # a string becomes a list
    assert (body["n_predict"], body["temperature"], body["top_p"], body["stream"]) == (7, 0.2, 0.9, True)
    assert body["cache_prompt"] is True and "seed" not in body
    assert engine_request({"prompt": "p", "top_k": 40, "stop": ["a", "", None]}, stream=False)["top_k"] == 40
    assert engine_request({"prompt": "p", "stop": ["a", "", None]}, stream=False)["stop"] == ["a"]
    seeded = engine_request({"prompt": "p", "seed": 5}, stream=True)
    assert seeded["seed"] == 5 and seeded["cache_prompt"] is False  # repeatable: no reused prompt cache
    assert "preserved_tokens" not in body
    special = engine_request({"prompt": "p", "stop": ["<|im_end|>"]}, True, ["<|user|>", "<|im_end|>"])
    assert special["stop"] == ["<|im_end|>", "<|user|>"]  # stop tokens' texts, once each
    assert special["preserved_tokens"] == ["<|user|>", "<|im_end|>"]  # rendered, so the stop strings see them


class FakeEngine:
    """Calls back like xllamacpp's handle_completions: one chunk per token, then the usage chunk."""

    def __init__(self, tokens: list[str], gap: float):
        self.tokens, self.gap = tokens, gap
        self.stopped_early = False

    def handle_completions(self, body, callback):
        for i, t in enumerate(self.tokens):
            time.sleep(self.gap)
            last = i == len(self.tokens) - 1
            if callback({"choices": [{"text": t, "finish_reason": "stop" if last else None}]}):
                self.stopped_early = True
                return
        callback({"choices": [{"text": "", "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": len(self.tokens),
                            "total_tokens": 3 + len(self.tokens)}})


def frames_from(engine: FakeEngine, interval: float, take: int | None = None) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    w = LlamaCppWorker.__new__(LlamaCppWorker)  # the streaming logic alone, no model
    w.engine, w.frame_interval, w.call_ct = engine, interval, 0
    w.template, w.engine_added = "qwen2.5", ""
    w._pool = ThreadPoolExecutor(2)

    async def collect():
        out = []
        gen = w.generate_stream_gate({"prompt": "p"})
        async for f in gen:
            out.append(json.loads(f[:-1]))
            if take and len(out) >= take:
                await gen.aclose()  # a client that went away
                await asyncio.sleep(0.05)  # the server's loop goes on
                break
        return out

    try:
        return asyncio.run(collect())
    finally:
        w._pool.shutdown(wait=True)


def test_frames_are_coalesced_but_first_text_and_end_go_at_once():
    tokens = [f"t{i} " for i in range(40)]
    every = frames_from(FakeEngine(tokens, 0.002), interval=0)
    coalesced = frames_from(FakeEngine(tokens, 0.002), interval=0.05)
    assert len(every) >= 40  # one frame per token
    assert 1 < len(coalesced) < len(every) // 3  # 40 tokens over ~80 ms in ~50 ms frames
    for frames in (every, coalesced):
        assert frames[0]["text"] == "t0 "  # the first text is not held back
        assert frames[-1]["text"] == "".join(tokens) and frames[-1]["finish_reason"] == "stop"
        assert frames[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 40, "total_tokens": 43}
        texts = [f["text"] for f in frames]
        assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # cumulative text


def test_a_client_that_goes_away_stops_the_engine():
    engine = FakeEngine([f"t{i} " for i in range(200)], 0.002)
    frames = frames_from(engine, interval=0, take=3)
    assert len(frames) == 3 and engine.stopped_early


def test_worker_app_serves_at_most_its_concurrency():
    """limit_worker_concurrency requests run at once; the rest wait for a slot, none is refused."""
    import uvicorn

    from deploy.wire.client import FleetClient
    from deploy.worker.app import create_worker_app
    from tests.harness import free_port

    class Slow:
        model_names, limit_worker_concurrency, context_len = ["slow"], 2, 128
        active = peak = 0

        def load(self):
            pass

        def unload(self):
            pass

        async def generate_stream_gate(self, params):
            Slow.active += 1
            Slow.peak = max(Slow.peak, Slow.active)
            await asyncio.sleep(0.3)
            Slow.active -= 1
            yield json.dumps({"text": params["prompt"], "error_code": 0, "finish_reason": "stop"}).encode() + b"\0"

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_worker_app(Slow()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        client, addr = FleetClient("http://unused"), f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(list(client.stream(addr, {"prompt": str(i)}))))
                   for i in range(5)]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        assert sorted(r[-1]["text"] for r in results) == ["0", "1", "2", "3", "4"]
        assert Slow.peak == 2
        assert time.monotonic() - t0 >= 0.85  # 5 requests, 2 at a time, 0.3 s each: three rounds
    finally:
        server.should_exit = True
        t.join(10)


def test_frame_decoder_reassembles_frames_split_anywhere():
    frames = [{"text": "北京", "error_code": 0}, {"text": "北京是", "error_code": 0, "finish_reason": "stop"}]
    raw = b"".join(json.dumps(f, ensure_ascii=False).encode() + b"\0" for f in frames)
    for cut in range(1, len(raw)):
        d = FrameDecoder()
        assert d.feed(raw[:cut]) + d.feed(raw[cut:]) == frames
        assert d.leftover == b""


@pytest.mark.parametrize("stop", [None, "END", ["END", "<|im_end|>"]])
def test_worker_params_are_what_fastchats_api_server_sends(monkeypatch, stop):
    """Our API, the web UI and the benchmark build worker requests with chat_params; FastChat's API
    server builds them with get_gen_params. Same conversation, same settings: the same request, with
    the prompt's parts besides (which join into the same prompt)."""
    from fastchat.conversation import get_conv_template
    from fastchat.serve import openai_api_server as upstream

    from deploy.registry import templates  # noqa: F401  (registers qwen2.5)

    async def get_conv(model_name, worker_addr):
        from fastapi.encoders import jsonable_encoder

        return jsonable_encoder(get_conv_template("qwen2.5"))  # what the worker's route sends

    monkeypatch.setattr(upstream, "get_conv", get_conv)
    api = asyncio.run(upstream.get_gen_params(
        "m", "http://w", [{"role": "system", "content": "简短回答。"}, {"role": "user", "content": "你好"},
                          {"role": "assistant", "content": "你好！"}, {"role": "user", "content": "北京在哪？"}],
        temperature=0.3, top_p=0.8, top_k=-1, presence_penalty=0.0, frequency_penalty=0.0, max_tokens=64,
        echo=False, stop=stop))

    conv = get_conv_template("qwen2.5")
    conv.set_system_message("简短回答。")
    for role, text in ((0, "你好"), (1, "你好！"), (0, "北京在哪？"), (1, None)):
        conv.append_message(conv.roles[role], text)
    stops = [stop] if isinstance(stop, str) else stop or []
    ours = chat_params("m", conv, Sampling(temperature=0.3, top_p=0.8, max_new_tokens=64, stop=stops))
    parts = ours.pop("prompt_parts")
    assert "".join(t for _, t in parts) == ours["prompt"]
    assert [t for k, t in parts if k == "message"] == ["简短回答。", "你好", "你好！", "北京在哪？"]
    assert {**ours, "stop": set(ours["stop"])} == {**api, "stop": set(api["stop"])}
    assert chat_params("m", conv, Sampling(seed=3))["seed"] == 3


def test_flash_attention_setting():
    """auto leaves it to llama.cpp; on and off set it (bench/llamacpp_batching.py measures both)."""
    from deploy.backends import parse_registry

    def entry(**over):
        m = {"name": "m", "path": "/x.gguf", "backend": "llama.cpp", "port": 21002, "cores": [0],
             "memory_budget": "2GiB", "chat_template": "qwen2.5", **over}
        return parse_registry({"models": [m]}).models[0]
    assert entry().options.flash_attention_on is None
    assert entry(flash_attention="on").options.flash_attention_on is True
    assert entry(flash_attention="off").options.flash_attention_on is False


def test_load_settings_reach_the_engine():
    """repack = false asks the engine for no repacked copy (llama.cpp's --no-repack); no load runs a
    warm-up pass (it did not make the first request faster: bench/llamacpp_memory.py); keep_conversations
    gives the engine a private folder for its slots' files, and false none (bench/on_demand.py and
    bench/slot_restore.py measure them)."""
    from conftest import QWEN, entry
    from deploy.backends import parse_registry

    def params(**over):
        worker = LlamaCppWorker(parse_registry({"models": [entry(QWEN, **over)]}).models[0], "http://127.0.0.1:1",
                                "http://127.0.0.1:2")
        try:
            return worker.engine_params()
        finally:
            asyncio.run(worker.close())  # its slots' folder, if it made one

    default, unpacked, forgetful = params(), params(mmap=True, repack=False), params(keep_conversations=False)
    assert (default.no_extra_bufts, unpacked.no_extra_bufts) == (False, True)
    assert default.warmup is False and unpacked.warmup is False
    assert default.endpoint_slots and default.slot_save_path.endswith("/")
    assert (forgetful.endpoint_slots, forgetful.slot_save_path) == (False, "")


@pytest.mark.parametrize("ids", [["x"], [-1], [True], [1.5]])
def test_stop_token_ids_must_be_token_ids(ids):
    """The llama.cpp worker asks its engine for each id's text; only ids from 0 get there."""
    from deploy.wire.errors import ClientError
    from deploy.wire.worker_params import GenerateParams, checked

    with pytest.raises(ClientError, match="stop_token_ids"):
        checked(GenerateParams, json.dumps({"prompt": "p", "stop_token_ids": ids}).encode(), 512)
    assert checked(GenerateParams, json.dumps({"prompt": "p", "stop_token_ids": [0, 64795]}).encode(),
                   512)["stop_token_ids"] == [0, 64795]
