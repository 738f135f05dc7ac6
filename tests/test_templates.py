"""Chat templates: the configured one is what the model sees, in the right format."""
from fastchat.conversation import get_conv_template

from deploy.wire.generation import conversation_from_dict
from deploy.registry import templates  # noqa: F401  (registers ours with FastChat)

conversation_for = get_conv_template


def prompt(name: str, user: str = "你好") -> str:
    c = conversation_for(name)
    c.append_message(c.roles[0], user)
    c.append_message(c.roles[1], None)
    return c.get_prompt()


def test_qwen25_chatml_with_its_own_system_prompt():
    assert prompt("qwen2.5") == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                                 "assistant.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_chatml_with_its_own_system_prompt():
    p = prompt("smollm2")
    assert p.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n")
    assert p.endswith("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    assert "### Human" not in p  # FastChat's one_shot fallback


def test_seed_model_templates():
    assert prompt("qwen-7b-chat").startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert prompt("chatglm3") == "<|user|>\n你好<|assistant|>"
    assert prompt("deepseek-chat") == "<｜begin▁of▁sentence｜>User: 你好\n\nAssistant:"


def test_round_trip_through_worker_json():
    """The worker sends its Conversation as FastAPI encodes it; the web UI rebuilds the same prompt."""
    import json

    from fastapi.encoders import jsonable_encoder

    c = conversation_for("smollm2")
    c.sep_style = int(c.sep_style)  # as BaseModelWorker stores it
    d = json.loads(json.dumps(jsonable_encoder({"conv": c})))["conv"]
    assert conversation_from_dict(d).get_prompt() == conversation_for("smollm2").get_prompt()
