"""The prompt ids each seed model's own chat code builds, printed as JSON: the reference the seed
tests hold our workers to. Run with a Python whose transformers runs the models' remote code:

    python tests/seed_reference.py < request.json > ids.json

request: {"folder": ..., "family": "chatglm3" | "qwen" | "deepseek", "chats": [{"system": str | null,
"history": [[user, assistant], ...], "query": str}, ...], "raw": [str, ...]}. Each chat's ids are
what the model's `chat()` feeds it: ChatGLM3's `tokenizer.build_chat_input(query, history)`,
Qwen-7B-Chat's `make_context(tokenizer, query, history, system)` (qwen_generation_utils), and
DeepSeek-LLM-Chat's chat template (`apply_chat_template`, which renders the text and tokenises it);
with DeepSeek's rendered text besides. Each raw prompt's ids are `tokenizer(prompt).input_ids`.
"""
import json
import sys


def main() -> None:
    req = json.load(sys.stdin)
    from transformers import AutoTokenizer

    folder, family = req["folder"], req["family"]
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    out = {"chats": [], "texts": [], "raw": [tok(p).input_ids for p in req.get("raw", [])]}
    for chat in req["chats"]:
        system, history, query = chat["system"], chat["history"], chat["query"]
        text = None
        if family == "chatglm3":
            hist = ([{"role": "system", "content": system}] if system else []) + [
                m for q, a in history for m in ({"role": "user", "content": q},
                                                {"role": "assistant", "metadata": "", "content": a})]
            ids = tok.build_chat_input(query, history=hist, role="user")["input_ids"][0].tolist()
        elif family == "qwen":
            sys.path.insert(0, folder)
            from qwen_generation_utils import make_context

            _, ids = make_context(tok, query, history=[tuple(h) for h in history],
                                  system=system or "You are a helpful assistant.", chat_format="chatml")
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
            messages.append({"role": "user", "content": query})
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids  # a dict from 5.0
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        out["chats"].append(list(ids))
        out["texts"].append(text)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
